"""The proxy's nginx config: golden file for default.yaml, and the parts it is made of."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from firstboot.containers.nginx import (
    AUTODISCOVER_ANSWER,
    INTERMEDIATE_CIPHERS,
    Location,
    names_ocsp_responder,
    nginx_quote,
    nginx_size,
    nginx_text,
    render_proxy_config,
    sites_from_routes,
)
from firstboot.containers.spec import RouteSpec
from firstboot.core.config import load_config
from firstboot.core.config.loader import DEFAULT_CONFIG_PATH
from firstboot.mail.proxy_sites import mail_sites

GOLDEN = Path(__file__).resolve().parents[1] / "data/golden/nginx-default.conf"


def default_config_text() -> str:
    config = load_config(DEFAULT_CONFIG_PATH, check_secrets=False)
    routes = [(name, RouteSpec(s.route.hostname, s.route.path, s.route.port,
                               s.route.max_body_size))
              for name, s in sorted(config.services.items()) if s.route]
    # With the sites the box serves for its mail domains (MTA-STS, mail client
    # autoconfiguration), while it has no CA certificate yet.
    return render_proxy_config(sites_from_routes(routes), ocsp_stapling=False,
                               mail=mail_sites(config, None))


def test_rendered_config_for_default_yaml_matches_the_golden_file() -> None:
    rendered = default_config_text()
    if os.environ.get("ARKBOX_UPDATE_GOLDEN"):
        GOLDEN.write_text(rendered)
    assert rendered == GOLDEN.read_text(), (
        "the nginx config changed: review it, then ARKBOX_UPDATE_GOLDEN=1 pytest this test")


def test_golden_config_says_what_the_policy_requires() -> None:
    text = GOLDEN.read_text()
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text
    assert f"ssl_ciphers {INTERMEDIATE_CIPHERS};" in text
    assert "ssl_prefer_server_ciphers off;" in text
    assert "ssl_session_tickets off;" in text
    assert "ssl_stapling off;" in text
    assert 'Strict-Transport-Security "max-age=63072000" always' in text
    assert "return 301 https://$host$request_uri;" in text
    assert "location ^~ /.well-known/acme-challenge/" in text
    assert "ssl_reject_handshake on;" in text and "return 421;" in text
    for host, upstream in (("cal.arkbox.test", "http://calendar:5232"),
                           ("wiki.arkbox.test", "http://wiki:80"),
                           ("webmail.arkbox.test", "http://webmail:80")):
        assert f"server_name {host};" in text
        assert upstream in text
    for host in ("mta-sts", "autoconfig", "autodiscover"):
        assert f"server_name {host}.arkbox.test;" in text
    # Only 80 and 443 are listened on, over IPv4 and IPv6 alike; besides, the autodiscover
    # answer on the proxy container's own loopback (the engine publishes 80 and 443 only).
    listens = [line.split()[1:] for line in text.splitlines()
               if line.strip().startswith("listen")]
    assert [words for words in listens if words[0].startswith("127.")] == [
        [f"{AUTODISCOVER_ANSWER};"]]
    listens = [words for words in listens if not words[0].startswith("127.")]
    assert {words[0] for words in listens} == {"80", "443", "[::]:80", "[::]:443"}
    v4 = [words for words in listens if not words[0].startswith("[::]:")]
    v6 = [[words[0].removeprefix("[::]:"), *words[1:]] for words in listens
          if words[0].startswith("[::]:")]
    assert v4 == v6


def test_routes_on_one_host_share_a_server_longest_path_first() -> None:
    sites = sites_from_routes([
        ("app", RouteSpec("x.test", "/", 8080, "1M")),
        ("api", RouteSpec("x.test", "/api/", 9000, "64M")),
        ("wiki", RouteSpec("w.test", "/", 80, "2G")),
    ])
    assert [s.hostname for s in sites] == ["w.test", "x.test"]
    assert [loc.path for loc in sites[1].locations] == ["/api/", "/"]
    assert sites[0].locations[0] == Location("wiki", "/", 80, "2g")


def test_stapling_is_on_when_the_certificate_names_an_ocsp_responder() -> None:
    text = render_proxy_config([], ocsp_stapling=True)
    assert "ssl_stapling on;" in text and "ssl_stapling_verify on;" in text


@pytest.mark.parametrize(("size", "expected"), [
    ("32M", "32m"), ("1024K", "1m"), ("1T", "1024g"), ("3K", "3k"), ("2G", "2g")])
def test_sizes_in_nginx_units(size: str, expected: str) -> None:
    assert nginx_size(size) == expected


def test_unusual_paths_are_quoted() -> None:
    assert nginx_quote("/cal/") == "/cal/"
    assert nginx_quote('/a;b"c') == '"/a;b\\"c"'
    assert nginx_quote("/x{y}") == '"/x{y}"'


def test_text_is_one_nginx_string_and_never_a_variable() -> None:
    assert nginx_text('a "b"\\c\nd') == '"a \\"b\\"\\\\c\\nd"'
    with pytest.raises(ValueError, match="nginx cannot serve"):
        nginx_text("costs $5")


def test_dashed_service_names_make_valid_variables() -> None:
    assert Location("web-mail", "/", 80, "1m").variable == "web_mail"


def _certificate(ocsp_url: str | None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x.test")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    if ocsp_url:
        builder = builder.add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_ocsp_responder_is_detected_from_the_certificate() -> None:
    assert names_ocsp_responder(_certificate("http://ocsp.example.test"))
    assert not names_ocsp_responder(_certificate(None))
