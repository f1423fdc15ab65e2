"""The proxy's nginx config, rendered from the routes (pure: no engine, no files)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID

from firstboot.containers.spec import RouteSpec
from firstboot.core.config.scalars import size_bytes
from firstboot.core.render import render

TEMPLATE = "nginx/arkbox.conf.j2"

# Mozilla's intermediate cipher list (TLS 1.2 suites; TLS 1.3 suites are not configurable).
INTERMEDIATE_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-CHACHA20-POLY1305",
))

# Where the proxy container sees things (its recipe's mount points).
CONF_DIR = "/etc/nginx/conf.d"
TLS_DIR = "/etc/nginx/tls"
ACME_ROOT = "/var/www/acme"
# The status page's server listens on a unix socket in this directory (mounted from the
# host): no port, so nothing but the proxy can reach it and the firewall needs no rule.
STATUS_PAGE_SOCKET_DIR = "/run/arkbox-status-page"
STATUS_PAGE_SOCKET = "http.sock"
# Where the proxy answers Outlook's autodiscover requests it has read: the container's own
# loopback, never published (only 80 and 443 are).
AUTODISCOVER_ANSWER = "127.0.0.1:8025"
AUTODISCOVER_LOGIN = "arkbox_autodiscover_login"  # nginx variable: <LoginName>...</LoginName>

_PLAIN = re.compile(r"^[A-Za-z0-9._~/%+-]+$")


@dataclass(frozen=True)
class Location:
    service: str
    path: str
    port: int
    max_body_size: str  # in nginx's units

    @property
    def path_token(self) -> str:
        return nginx_quote(self.path)

    @property
    def variable(self) -> str:
        """A per-service nginx variable name (service names may hold dashes)."""
        return self.service.replace("-", "_")


@dataclass(frozen=True)
class Site:
    hostname: str
    locations: tuple[Location, ...]


@dataclass(frozen=True)
class StatusPageSite:
    """The appliance's own host name: the status page, from its server's unix socket."""

    hostname: str

    @property
    def upstream(self) -> str:
        return f"http://unix:{STATUS_PAGE_SOCKET_DIR}/{STATUS_PAGE_SOCKET}:"


@dataclass(frozen=True)
class MtaStsSite:
    """mta-sts.DOMAIN: serves the mail server's MTA-STS policy (RFC 8461), nothing else."""

    hostname: str
    policy: str

    @property
    def policy_token(self) -> str:
        """The policy as one double-quoted nginx string."""
        return nginx_text(self.policy)


@dataclass(frozen=True)
class AutoconfigSite:
    """autoconfig.DOMAIN: Thunderbird's autoconfig file of the mail domain, nothing else;
    also at /.well-known/autoconfig/ of DOMAIN itself where the proxy serves DOMAIN."""

    hostname: str
    domain: str
    path: str
    well_known_path: str
    config_xml: str

    @property
    def config_token(self) -> str:
        return nginx_text(self.config_xml)


@dataclass(frozen=True)
class AutodiscoverSites:
    """autodiscover.DOMAIN of each mail domain: Outlook's autodiscover answer, the same for
    each. `answer_parts` is the answer cut where a <LoginName> goes: nginx puts there the
    address the request named, when it matches `address_pattern` (else nothing)."""

    hostnames: tuple[str, ...]
    path: str
    answer_parts: tuple[str, ...]
    address_pattern: str

    @property
    def location_regex(self) -> str:
        """The path, in any case (clients differ: /Autodiscover/Autodiscover.xml)."""
        return nginx_regex(f"^{re.escape(self.path)}$")

    @property
    def answer_token(self) -> str:
        login = "${" + AUTODISCOVER_LOGIN + "}"
        return login.join(nginx_text(part)[1:-1] for part in self.answer_parts).join('""')

    @property
    def request_regex(self) -> str:
        """The map's regex that picks the address out of the request's body."""
        return nginx_regex(rf"~<EMailAddress>\s*(?<arkbox_address>{self.address_pattern})"
                           r"\s*</EMailAddress>")

    @property
    def header_regex(self) -> str:
        """The map's regex that lets only an address through, whole."""
        return nginx_regex(rf"~^(?<arkbox_login>{self.address_pattern})$")


@dataclass(frozen=True)
class MailSites:
    """What the proxy serves for the mail server (firstboot/mail/proxy_sites.py)."""

    mta_sts: tuple[MtaStsSite, ...] = ()
    autoconfig: tuple[AutoconfigSite, ...] = ()
    autodiscover: AutodiscoverSites | None = None

    @property
    def well_known(self) -> dict[str, AutoconfigSite]:
        """Mail domain -> its autoconfig site, for the servers of other names."""
        return {site.domain.lower(): site for site in self.autoconfig}


def sites_from_routes(routes: Iterable[tuple[str, RouteSpec]]) -> list[Site]:
    """(service, route) pairs -> one site per host name, longest path first.

    nginx picks the longest matching prefix anyway; the order only makes the file
    read the way it matches.
    """
    by_host: dict[str, list[Location]] = {}
    for service, route in routes:
        by_host.setdefault(route.hostname, []).append(
            Location(service, route.path, route.port, nginx_size(route.max_body_size)))
    return [
        Site(host, tuple(sorted(locations, key=lambda loc: (-len(loc.path), loc.path))))
        for host, locations in sorted(by_host.items())
    ]


def render_proxy_config(sites: Iterable[Site], *, ocsp_stapling: bool,
                        mail: MailSites | None = None,
                        status_page: StatusPageSite | None = None) -> str:
    return render(
        TEMPLATE,
        sites=list(sites),
        mail=mail or MailSites(),
        autodiscover_answer=AUTODISCOVER_ANSWER,
        autodiscover_login=AUTODISCOVER_LOGIN,
        status_page=status_page,
        ciphers=INTERMEDIATE_CIPHERS,
        ocsp_stapling=ocsp_stapling,
        acme_root=ACME_ROOT,
        certificate=f"{TLS_DIR}/fullchain.pem",
        private_key=f"{TLS_DIR}/privkey.pem",
    )


def names_ocsp_responder(certificate_pem: bytes) -> bool:
    """True when the leaf certificate names an OCSP responder (stapling can work)."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    try:
        access = certificate.extensions.get_extension_for_class(
            x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return False
    return any(d.access_method == AuthorityInformationAccessOID.OCSP for d in access)


def nginx_size(size: str) -> str:
    """A config size ("32M", "1T") in nginx's units, which stop at g."""
    value = size_bytes(size)
    for unit, factor in (("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def nginx_text(value: str) -> str:
    """Text as one double-quoted nginx string (nginx turns \\n into a newline). It must hold
    no `$`: nginx would read a variable there, and a string has no way to escape one."""
    if "$" in value:
        raise ValueError(f"nginx cannot serve a '$' in a string: {value[:60]!r}")
    return _quoted(value)


def nginx_regex(pattern: str) -> str:
    """A regular expression as one double-quoted nginx token (a `$` is the regex's own)."""
    return _quoted(pattern)


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def nginx_quote(value: str) -> str:
    """A value as one nginx token: bare when safe, else double-quoted and escaped."""
    if _PLAIN.match(value):
        return value
    # nginx does not expand variables in a location's path: only \\ and " need escaping.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
