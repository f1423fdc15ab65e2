"""`arkbox-installer check mail`: is this box's mail deliverable? Each finding with a fix.

It resolves what DNS publishes (through a configurable resolver) and compares it
with what the box expects (firstboot/mail/records.py): MX, SPF (pyspf evaluates it
for this box's address), DKIM (the published key must be this box's, and a message
signed here must verify with dkimpy), DMARC, MTA-STS (record and served policy),
TLS-RPT, mail client autoconfiguration (autoconfig.DOMAIN and autodiscover.DOMAIN answer
over HTTPS with the servers the box serves), PTR <-> HELO <-> A, DNSBL listings, and
whether outbound port 25 is open.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import dkim as dkimpy
import dns.exception
import dns.resolver
import dns.reversename
import spf

from firstboot.core.config import Appliance
from firstboot.mail import dkim
from firstboot.mail.autoconfig import (
    AUTOCONFIG_PATH,
    AUTODISCOVER_PATH,
    THUNDERBIRD_LOGIN,
    NotAClientConfig,
    client_servers,
    outlook_request,
    read_outlook,
    read_thunderbird,
    server_problems,
)
from firstboot.mail.fetch import UNVERIFIED, HttpsRequest, https_fetch
from firstboot.mail.records import BoxAddresses, client_config_hosts, report_address

OK, WARN, FAIL = "ok", "warn", "fail"
DEFAULT_DNSBLS = ("zen.spamhaus.org", "bl.spamcop.net")
DEFAULT_PORT25_PROBE = "gmail-smtp-in.l.google.com"
TIMEOUT_S = 8.0
MARKS = {OK: "✓", WARN: "!", FAIL: "✗"}
_spf_lock = threading.Lock()  # pyspf resolves through a module global


@dataclass(frozen=True)
class Finding:
    check: str  # e.g. "dkim arkbox.test"
    level: str  # ok | warn | fail
    message: str
    fix: str = ""


class DnsTrouble(Exception):
    """The resolver did not answer (time-out, SERVFAIL, refused)."""


@dataclass
class Resolver:
    """dnspython, pointed at one server (tests) or the system's resolvers."""

    nameserver: str | None = None
    port: int = 53
    timeout: float = TIMEOUT_S
    _resolver: dns.resolver.Resolver = field(init=False, repr=False)

    def __post_init__(self) -> None:
        configure = self.nameserver is None
        self._resolver = dns.resolver.Resolver(configure=configure)
        if self.nameserver is not None:
            self._resolver.nameservers = [self.nameserver]
            self._resolver.port = self.port
        self._resolver.lifetime = self.timeout

    @classmethod
    def parse(cls, text: str | None) -> Resolver:
        """IP, IP:PORT, [IPv6]:PORT, or None for the system's resolvers."""
        if not text:
            return cls()
        host, port = text, 53
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = int(rest.lstrip(":") or 53)
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
            port = int(port_text)
        ipaddress.ip_address(host)  # a name would need a resolver of its own
        return cls(host, port)

    def query(self, name: str, rdtype: str) -> list[Any]:
        """The answer's records; [] when the name or type does not exist."""
        try:
            return list(self._resolver.resolve(name, rdtype, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as e:
            raise DnsTrouble(f"{name} {rdtype}: {e}") from e

    def txt(self, name: str) -> list[str]:
        return [b"".join(r.strings).decode(errors="replace") for r in self.query(name, "TXT")]

    def addresses(self, name: str) -> list[str]:
        return [r.address for r in self.query(name, "A")] + \
            [r.address for r in self.query(name, "AAAA")]

    def dkim_txt(self, name: bytes | str, timeout: int = 5) -> bytes | None:
        """dkimpy's dnsfunc: the TXT record's text, or None."""
        text = name.decode() if isinstance(name, bytes) else name
        found = self.txt(text.rstrip("."))
        return found[0].encode() if found else None

    def spf_lookup(self, name: str, qtype: str, tcpfallback: bool = True,
                   timeout: int = 30) -> list[Any]:
        """pyspf's DNSLookup, answering from this resolver."""
        result: list[Any] = []
        for record in self.query(name, qtype):
            if qtype in ("A", "AAAA"):
                result.append(((name, qtype), record.address))
            elif qtype == "MX":
                result.append(((name, qtype), (record.preference, record.exchange)))
            elif qtype == "PTR":
                result.append(((name, qtype), record.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                result.append(((name, qtype), record.strings))
        return result


@dataclass(frozen=True)
class Expectations:
    """What the box expects DNS to say."""

    config: Appliance
    box: BoxAddresses
    dkim_key_pem: bytes
    mta_sts_enforce: bool = False

    @property
    def hostname(self) -> str:
        assert self.config.mail.hostname is not None
        return self.config.mail.hostname.lower()


@dataclass(frozen=True)
class Probes:
    """What the checks reach beyond DNS (replaceable in tests)."""

    dnsbls: tuple[str, ...] = DEFAULT_DNSBLS
    port25_probe: str = DEFAULT_PORT25_PROBE
    ca_file: str | None = None  # for the sites' HTTPS (None: the system's CAs)
    fetch_policy: Callable[[str, str, str | None], str] | None = None
    fetch_https: Callable[[HttpsRequest], str] | None = None  # the client settings
    connect_smtp: Callable[[str, int], str] | None = None


def check_mail(expect: Expectations, resolver: Resolver, probes: Probes) -> list[Finding]:
    """Every finding, domain by domain, then the host-wide ones."""
    findings: list[Finding] = []
    for check in (_check_host_address, _check_ptr):
        findings += _guarded(check.__name__, lambda c=check: c(expect, resolver))  # type: ignore[misc]
    for domain in expect.config.mail.domains:
        for domain_check in (_check_mx, _check_spf, _check_dkim, _check_dmarc, _check_mta_sts,
                             _check_tlsrpt, _check_autoconfig, _check_autodiscover):
            findings += _guarded(
                f"{domain_check.__name__} {domain}",
                lambda c=domain_check, d=domain: c(expect, resolver, probes, d))  # type: ignore[misc]
    findings += _guarded("dnsbl", lambda: _check_dnsbl(expect, resolver, probes))
    findings += _guarded("port 25", lambda: _check_outbound(expect, resolver, probes))
    return findings


def _guarded(what: str, check: Callable[[], Iterator[Finding]]) -> list[Finding]:
    try:
        return list(check())
    except DnsTrouble as e:
        name = what.removeprefix("_check_").replace("_", " ")
        return [Finding(name, WARN, f"DNS did not answer: {e}",
                        "check the resolver (--resolver), then run the check again")]


# ---------------------------------------------------------------- the checks


def _check_host_address(expect: Expectations, resolver: Resolver) -> Iterator[Finding]:
    host = expect.hostname
    published = set(resolver.addresses(host))
    for address in (expect.box.ipv4, expect.box.ipv6):
        if address is None:
            continue
        kind = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
        if address in published:
            yield Finding(f"{kind} {host}", OK, f"{host} resolves to this box ({address})")
        else:
            shown = ", ".join(sorted(published)) or "nothing"
            yield Finding(f"{kind} {host}", FAIL, f"{host} resolves to {shown}, not to this "
                          f"box ({address})", f"publish: {host}. IN {kind} {address}")


def _check_ptr(expect: Expectations, resolver: Resolver) -> Iterator[Finding]:
    host = expect.hostname
    address = expect.box.ipv4 or expect.box.ipv6
    if address is None:
        return
    reverse = dns.reversename.from_address(address).to_text()
    names = [r.target.to_text(True).lower() for r in resolver.query(reverse, "PTR")]
    fix = (f"ask your VPS provider to set the reverse DNS of {address} to {host} "
           "(receivers reject mail from servers whose PTR, HELO and A disagree)")
    if not names:
        yield Finding("ptr", FAIL, f"{address} has no PTR record", fix)
        return
    if host not in names:
        yield Finding("ptr", FAIL, f"PTR of {address} is {', '.join(names)}, but the "
                      f"server says HELO {host}", fix)
        return
    if address not in resolver.addresses(host):
        yield Finding("ptr", FAIL, f"PTR of {address} names {host}, which does not resolve "
                      "back to it", f"publish: {host}. IN A {address}")
        return
    yield Finding("ptr", OK, f"PTR {address} -> {host} = HELO name -> {address}")


def _check_mx(expect: Expectations, resolver: Resolver, probes: Probes,
              domain: str) -> Iterator[Finding]:
    host = expect.hostname
    found = sorted((r.preference, r.exchange.to_text(True).lower())
                   for r in resolver.query(domain, "MX"))
    if any(exchange == host for _, exchange in found):
        others = [e for _, e in found if e != host]
        extra = f" (also {', '.join(others)})" if others else ""
        yield Finding(f"mx {domain}", OK, f"MX of {domain} is {host}{extra}")
        return
    shown = ", ".join(e for _, e in found) or "none"
    yield Finding(f"mx {domain}", FAIL, f"MX of {domain} is {shown}, not {host}",
                  f"publish: {domain}. IN MX 10 {host}.")


def _check_spf(expect: Expectations, resolver: Resolver, probes: Probes,
               domain: str) -> Iterator[Finding]:
    records = [t for t in resolver.txt(domain) if t.lower().startswith("v=spf1")]
    fix = f'publish: {domain}. IN TXT "v=spf1 mx -all"'
    if not records:
        yield Finding(f"spf {domain}", FAIL, f"{domain} publishes no SPF record", fix)
        return
    if len(records) > 1:
        yield Finding(f"spf {domain}", FAIL, f"{domain} publishes {len(records)} SPF records "
                      "(receivers treat that as an error)", "keep one: " + fix)
        return
    if expect.config.mail.relay is not None:
        yield Finding(f"spf {domain}", WARN, f"mail leaves through the relay "
                      f"{expect.config.mail.relay.host}: SPF must name it, which this check "
                      "cannot verify", "add the relay's SPF include (see its documentation)")
        return
    for address in (expect.box.ipv4, expect.box.ipv6):
        if address is None:
            continue
        result = spf_result(resolver, address, f"postmaster@{domain}", expect.hostname)
        if result == "pass":
            yield Finding(f"spf {domain}", OK, f"SPF passes for this box ({address}): "
                          f"{records[0]}")
        else:
            yield Finding(f"spf {domain}", FAIL, f"SPF gives {result!r} for this box "
                          f"({address}): {records[0]}", fix)


def spf_result(resolver: Resolver, address: str, sender: str, helo: str) -> str:
    """pyspf's verdict for `address` sending as `sender`, resolved through `resolver`."""
    with _spf_lock:
        saved = spf.DNSLookup
        spf.DNSLookup = resolver.spf_lookup
        try:
            result, _ = spf.check2(i=address, s=sender, h=helo)
        finally:
            spf.DNSLookup = saved
    return str(result)


def _check_dkim(expect: Expectations, resolver: Resolver, probes: Probes,
                domain: str) -> Iterator[Finding]:
    selector = expect.config.mail.dkim_selector
    name = dkim.record_name(selector, domain)
    wanted = dkim.txt_value(expect.dkim_key_pem)
    fix = f'publish: {name}. IN TXT "{wanted}" (arkbox-installer dns prints it split for ' \
          "your zone)"
    records = [t for t in resolver.txt(name) if "p=" in t]
    if not records:
        yield Finding(f"dkim {domain}", FAIL, f"no DKIM key at {name}", fix)
        return
    published = dkim.parse_tags(records[0]).get("p", "")
    if published != dkim.public_key_b64(expect.dkim_key_pem):
        yield Finding(f"dkim {domain}", FAIL, f"the DKIM key at {name} is not this box's key "
                      "(mail signed here fails DKIM)", fix)
        return
    if not dkim_round_trip(expect.dkim_key_pem, selector, domain, resolver):
        yield Finding(f"dkim {domain}", FAIL, f"a message signed here does not verify "
                      f"against {name}", fix)
        return
    yield Finding(f"dkim {domain}", OK, f"{name} holds this box's key; a signed test "
                  "message verifies")


def dkim_round_trip(key_pem: bytes, selector: str, domain: str, resolver: Resolver) -> bool:
    message = (f"From: postmaster@{domain}\r\nTo: postmaster@{domain}\r\n"
               "Subject: arkbox DKIM check\r\n\r\nchecking the published key\r\n").encode()
    signature = dkimpy.sign(message, selector.encode(), domain.encode(), key_pem,
                            include_headers=[b"From", b"To", b"Subject"])
    return bool(dkimpy.verify(signature + message, dnsfunc=resolver.dkim_txt))


def _check_dmarc(expect: Expectations, resolver: Resolver, probes: Probes,
                 domain: str) -> Iterator[Finding]:
    name = f"_dmarc.{domain}"
    rua = report_address(expect.config)
    fix = f'publish: {name}. IN TXT "v=DMARC1; p=quarantine; adkim=s; aspf=s; ' \
          f'rua=mailto:{rua}"'
    records = [t for t in resolver.txt(name) if t.replace(" ", "").upper().startswith(
        "V=DMARC1")]
    if not records:
        yield Finding(f"dmarc {domain}", FAIL, f"no DMARC record at {name}", fix)
        return
    if len(records) > 1:
        yield Finding(f"dmarc {domain}", FAIL, f"{len(records)} DMARC records at {name}",
                      "keep one: " + fix)
        return
    tags = dkim.parse_tags(records[0])
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        yield Finding(f"dmarc {domain}", FAIL, f"the DMARC record at {name} has no valid "
                      f"policy (p={policy or 'missing'})", fix)
    elif policy == "none":
        yield Finding(f"dmarc {domain}", WARN, "DMARC policy is p=none: forged mail is "
                      "still delivered", fix)
    elif "rua" not in tags:
        yield Finding(f"dmarc {domain}", WARN, "DMARC asks for no reports (no rua=)", fix)
    else:
        yield Finding(f"dmarc {domain}", OK, f"DMARC p={policy}, reports to {tags['rua']}")


def _check_mta_sts(expect: Expectations, resolver: Resolver, probes: Probes,
                   domain: str) -> Iterator[Finding]:
    name = f"_mta-sts.{domain}"
    if _record_tags(resolver, name, "v=STSv1", needs="id") is None:
        yield Finding(f"mta-sts {domain}", FAIL, f"no MTA-STS record at {name}",
                      "publish the _mta-sts record from `arkbox-installer dns`")
        return
    host = f"mta-sts.{domain}"
    addresses = resolver.addresses(host)
    if not addresses:
        yield Finding(f"mta-sts {domain}", FAIL, f"{host} does not resolve: the policy "
                      "cannot be fetched", f"publish: {host}. IN A <this box's address>")
        return
    fetch = probes.fetch_policy or fetch_policy
    untrusted = ""
    try:
        try:
            policy = fetch(addresses[0], host, probes.ca_file)
        except ssl.SSLCertVerificationError as e:
            # Still worth knowing whether the policy is right: fetch it unverified.
            untrusted = e.verify_message or str(e)
            policy = fetch(addresses[0], host, UNVERIFIED)
    except (OSError, ValueError) as e:
        yield Finding(f"mta-sts {domain}", FAIL, f"the policy at https://{host}/.well-known/"
                      f"mta-sts.txt cannot be fetched: {e}",
                      "check that the proxy runs and serves the name (arkbox-installer status)")
        return
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":")
              for line in policy.splitlines()) if k.strip()}
    mx_lines = [line.partition(":")[2].strip().lower() for line in policy.splitlines()
                if line.startswith("mx:")]
    if expect.hostname not in mx_lines:
        yield Finding(f"mta-sts {domain}", FAIL, f"the MTA-STS policy does not name "
                      f"{expect.hostname} as mx", "serve the policy arkbox renders")
    elif untrusted:
        yield Finding(f"mta-sts {domain}", WARN, f"the policy is served, but its certificate "
                      f"is not trusted ({untrusted}): senders ignore the policy until it is",
                      f"the certificate must be a CA's and name {host} (arkbox-installer "
                      "status shows the certificate)")
    elif fields.get("mode") != "enforce":
        yield Finding(f"mta-sts {domain}", WARN, f"MTA-STS mode is {fields.get('mode')}: "
                      "senders report TLS problems but still deliver",
                      "it turns to enforce once the certificate is from a CA")
    else:
        yield Finding(f"mta-sts {domain}", OK, "MTA-STS policy served, mode enforce")


def fetch_policy(address: str, host: str, ca_file: str | None) -> str:
    """GET https://HOST/.well-known/mta-sts.txt from `address`, certificate checked
    (against `ca_file`, or the system's CAs; not at all for UNVERIFIED)."""
    return https_fetch(HttpsRequest(address, host, "/.well-known/mta-sts.txt", ca_file))


def _check_tlsrpt(expect: Expectations, resolver: Resolver, probes: Probes,
                  domain: str) -> Iterator[Finding]:
    name = f"_smtp._tls.{domain}"
    tags = _record_tags(resolver, name, "v=TLSRPTv1", needs="rua")
    if tags is None:
        yield Finding(f"tls-rpt {domain}", WARN, f"no TLS-RPT record at {name}",
                      f'publish: {name}. IN TXT "v=TLSRPTv1; rua=mailto:'
                      f'{report_address(expect.config)}"')
        return
    yield Finding(f"tls-rpt {domain}", OK, f"TLS reports go to {tags['rua']}")


def _check_autoconfig(expect: Expectations, resolver: Resolver, probes: Probes,
                      domain: str) -> Iterator[Finding]:
    """Thunderbird's file at autoconfig.DOMAIN: this domain, the box's servers, the whole
    address as the login."""
    def problems(text: str) -> list[str]:
        domains, servers, usernames = read_thunderbird(text)
        found = server_problems(servers, expect.hostname)
        if domain not in domains:
            found.append(f"is not for {domain} (it names {', '.join(domains) or 'no domain'})")
        if usernames != {THUNDERBIRD_LOGIN}:
            found.append(f"gives the login {', '.join(sorted(usernames)) or 'nothing'}, not "
                         f"the whole address ({THUNDERBIRD_LOGIN})")
        return found

    request = HttpsRequest("", client_config_hosts(domain)[0], AUTOCONFIG_PATH, probes.ca_file)
    yield _client_settings(f"autoconfig {domain}", expect, resolver, probes, request, problems)


def _check_autodiscover(expect: Expectations, resolver: Resolver, probes: Probes,
                        domain: str) -> Iterator[Finding]:
    """Outlook's answer at autodiscover.DOMAIN, asked as Outlook asks: the box's servers,
    and the address asked about as the login."""
    address = f"postmaster@{domain}"

    def problems(text: str) -> list[str]:
        servers, logins = read_outlook(text)
        found = server_problems(servers, expect.hostname)
        if logins != {address}:
            found.append(f"gives the login {', '.join(sorted(logins)) or 'nothing'}, not the "
                         f"address asked about ({address})")
        return found

    request = HttpsRequest("", client_config_hosts(domain)[1], AUTODISCOVER_PATH,
                           probes.ca_file, outlook_request(address))
    yield _client_settings(f"autodiscover {domain}", expect, resolver, probes, request,
                           problems)


def _client_settings(check: str, expect: Expectations, resolver: Resolver, probes: Probes,
                     request: HttpsRequest, problems_of: Callable[[str], list[str]]) -> Finding:
    """Fetch the settings `request` asks for from where the name points; judge them."""
    host, url = request.host, f"https://{request.host}{request.path}"
    addresses = resolver.addresses(host)
    if not addresses:
        return Finding(check, WARN, f"{host} does not resolve: mail clients cannot find "
                       "their settings from the address alone",
                       f"publish: {host}. IN A <this box's address> (arkbox-installer dns)")
    fetch = probes.fetch_https or https_fetch
    request = replace(request, address=addresses[0])
    untrusted = ""
    try:
        try:
            text = fetch(request)
        except ssl.SSLCertVerificationError as e:
            # Still worth knowing whether the settings are right: fetch them unverified.
            untrusted = e.verify_message or str(e)
            text = fetch(replace(request, ca_file=UNVERIFIED))
        problems = problems_of(text)
    except NotAClientConfig as e:
        problems = [str(e)]
    except (OSError, ValueError) as e:
        return Finding(check, FAIL, f"{url} cannot be fetched: {e}", "check that the proxy "
                       "runs and serves the name (arkbox-installer status)")
    if problems:
        return Finding(check, FAIL, f"{url}: {'; '.join(problems)}", f"check that {host} "
                       "points at this box, then run arkbox-installer apply")
    if untrusted:
        return Finding(check, WARN, f"{url} names the right servers, but its certificate is "
                       f"not trusted ({untrusted}): mail clients refuse it or warn",
                       f"the certificate must be a CA's and name {host} (arkbox-installer "
                       "status shows the certificate)")
    servers = ", ".join(s.describe() for s in client_servers(expect.hostname))
    return Finding(check, OK, f"{url} names {servers}")


def _record_tags(resolver: Resolver, name: str, version: str, needs: str
                 ) -> dict[str, str] | None:
    """The tags of the first TXT record at `name` that starts with `version` (spaces
    aside), or None when there is none or it lacks the tag `needs`."""
    records = [t for t in resolver.txt(name) if t.replace(" ", "").startswith(version)]
    tags = dkim.parse_tags(records[0]) if records else {}
    return tags if needs in tags else None


def _check_dnsbl(expect: Expectations, resolver: Resolver, probes: Probes
                 ) -> Iterator[Finding]:
    address = expect.box.ipv4
    if address is None:
        return
    reversed_ip = ".".join(reversed(address.split(".")))
    for dnsbl in probes.dnsbls:
        name = f"{reversed_ip}.{dnsbl}"
        try:
            answers = [r.address for r in resolver.query(name, "A")]
        except DnsTrouble as e:
            yield Finding(f"dnsbl {dnsbl}", WARN, f"could not ask {dnsbl}: {e}",
                          "some lists refuse public resolvers: use your own (--resolver)")
            continue
        if not answers:
            yield Finding(f"dnsbl {dnsbl}", OK, f"{address} is not listed on {dnsbl}")
        elif all(a.startswith("127.255.255.") for a in answers):
            yield Finding(f"dnsbl {dnsbl}", WARN, f"{dnsbl} refused the query "
                          f"({', '.join(answers)})", "query it through your own resolver")
        else:
            yield Finding(f"dnsbl {dnsbl}", FAIL, f"{address} is listed on {dnsbl} "
                          f"({', '.join(answers)})", f"look the address up on {dnsbl}'s "
                          "website and follow its delisting procedure")


def _check_outbound(expect: Expectations, resolver: Resolver, probes: Probes
                    ) -> Iterator[Finding]:
    relay = expect.config.mail.relay
    host, port = (relay.host, relay.port) if relay else (probes.port25_probe, 25)
    what = f"relay {host}:{port}" if relay else f"outbound port 25 ({host})"
    addresses = resolver.addresses(host)
    if not addresses:
        yield Finding(what, WARN, f"{host} does not resolve", "check the resolver, or "
                      "name another host to probe (--port25-probe)")
        return
    connect = probes.connect_smtp or connect_smtp
    try:
        banner = connect(addresses[0], port)
    except OSError as e:
        fix = ("check the relay's host and port in mail.relay" if relay else
               "many VPS providers block outbound port 25: ask yours to open it, or send "
               "through a smarthost (mail.relay in the config)")
        yield Finding(what, FAIL, f"cannot reach {host} ({addresses[0]}) on port {port}: {e}",
                      fix)
        return
    yield Finding(what, OK, f"{host} answers on port {port}: {banner[:60]}")


def connect_smtp(address: str, port: int) -> str:
    """Connect and read the greeting (then QUIT): proves the port is open end to end."""
    with socket.create_connection((address, port), timeout=TIMEOUT_S) as sock:
        sock.settimeout(TIMEOUT_S)
        banner = sock.recv(512).decode(errors="replace").strip()
        sock.sendall(b"QUIT\r\n")
    if not banner.startswith("2"):
        raise OSError(f"unexpected greeting {banner[:60]!r}")
    return banner


# ---------------------------------------------------------------- output


def summary_level(findings: list[Finding]) -> str:
    levels = {f.level for f in findings}
    return FAIL if FAIL in levels else WARN if WARN in levels else OK


def format_findings(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"{MARKS[finding.level]} {finding.check}: {finding.message}")
        if finding.fix and finding.level != OK:
            lines.append(f"    fix: {finding.fix}")
    counts = {level: sum(1 for f in findings if f.level == level) for level in (OK, WARN, FAIL)}
    lines.append(f"mail deliverability: {counts[OK]} ok, {counts[WARN]} warnings, "
                 f"{counts[FAIL]} failed")
    return "\n".join(lines)


def findings_json(findings: list[Finding]) -> list[dict[str, Any]]:
    return [asdict(f) for f in findings]

