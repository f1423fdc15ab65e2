"""Issue 18 item 4, end to end: mail clients configure themselves from the address alone.

One rig (172.30.171.0/24), one appliance boot for the whole module (config/default.yaml,
mail on for arkbox.test), and the rig's nsd serving the zone `arkbox-installer dns`
prints (builder/rig/dns.py, as `arkbox try` does). The pytest process is the mail client,
outside the box: it connects to the box's address on 443, through the proxy, with the
names a client uses (SNI and Host), and trusts only the box's own certificate, checking
that it names them. It fetches

* Thunderbird's file at https://autoconfig.arkbox.test/mail/config-v1.1.xml, and at
  https://arkbox.test/.well-known/autoconfig/mail/config-v1.1.xml (the mail domain is
  the appliance's name: the status page's server);
* Outlook's answer at https://autodiscover.arkbox.test/autodiscover/autodiscover.xml to
  the POST Outlook sends (the address comes back as the login) and to a GET;

and asserts the hosts, ports and TLS they name: IMAPS 993, submission 465 (TLS) and 587
(STARTTLS) on mail.arkbox.test. Then `check mail` in the box finds both right.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from restore_checks import wait_first_boot_or_failure
from rig_fixtures import (
    CACHE_DIR,
    FULLCHAIN,
    ROOT,
    add_appliance,
    admin_key,
    appliance_image,
    check,
    config_with,
    dump,
    installer,
    rig_up,
)

from builder.rig.dns import start_dns
from builder.rig.parts import ApplianceContainer, rig_image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RIG_OCTET = 171  # 172.30.171.0/24
DOMAIN = "arkbox.test"
MAIL_HOST = "mail.arkbox.test"
AUTOCONFIG = "autoconfig.arkbox.test"
AUTODISCOVER = "autodiscover.arkbox.test"
ADDRESS = "admin@arkbox.test"
# What a client must be told: (protocol, host, port, TLS), Thunderbird's words for TLS.
SERVERS = [("imap", MAIL_HOST, 993, "SSL"), ("smtp", MAIL_HOST, 465, "SSL"),
           ("smtp", MAIL_HOST, 587, "STARTTLS")]
RESPONSE_NS = "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}"
OUTLOOK_NS = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
# What Outlook POSTs (written out here, not taken from the product).
OUTLOOK_REQUEST = (
    '<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="http://schemas.microsoft.com/'
    'exchange/autodiscover/outlook/requestschema/2006">\n  <Request>\n'
    "    <EMailAddress>{address}</EMailAddress>\n    <AcceptableResponseSchema>"
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
    "</AcceptableResponseSchema>\n  </Request>\n</Autodiscover>\n")


@dataclass
class Box:
    app: ApplianceContainer
    ip: str
    dns_ip: str
    ca_file: Path  # the box's own (fallback) certificate: the only one this client trusts


@pytest.fixture(scope="module")
def box(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    with rig_up("autoconfig", RIG_OCTET) as rig:
        app = add_appliance(rig, appliance_image(rig), dump(config_with(admin_key())))
        status = wait_first_boot_or_failure(app, timeout=600)
        assert status["result"] == "ok", status.get("failures")
        dns = start_dns(rig, rig_image(ROOT, CACHE_DIR, "rig-internet"), app, [DOMAIN])
        ca_file = tmp_path_factory.mktemp("autoconfig") / "fullchain.pem"
        ca_file.write_text(check(app, f"cat {FULLCHAIN}"))
        yield Box(app, app.ip(4), dns.ip(4), ca_file)


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: str
    certificate_names: list[str]


def https(box: Box, host: str, method: str, path: str, body: str | None = None,
          headers: dict[str, str] | None = None) -> Answer:
    """One request to the box's 443 for `host`, trusting only the box's certificate and
    checking that it names `host`."""
    context = ssl.create_default_context(cafile=str(box.ca_file))
    raw = socket.create_connection((box.ip, 443), timeout=30)
    tls = context.wrap_socket(raw, server_hostname=host)
    connection = http.client.HTTPConnection(host, timeout=30)
    connection.sock = tls  # HTTP over the TLS made here, to the box's address
    sent = dict(headers or {})
    if body is not None:
        sent["Content-Type"] = "text/xml; charset=utf-8"
    try:
        connection.request(method, path, body=None if body is None else body.encode(),
                           headers=sent)
        response = connection.getresponse()
        names = [value for kind, value in (tls.getpeercert() or {}).get("subjectAltName", ())
                 if kind == "DNS"]
        return Answer(response.status, response.getheader("Content-Type") or "",
                      response.read().decode(), names)
    finally:
        connection.close()


def thunderbird_servers(text: str) -> tuple[list[str], list[tuple[str, str, int, str]], set[str]]:
    provider = ElementTree.fromstring(text).find("emailProvider")
    assert provider is not None, text
    servers = [(e.get("type") or "", e.findtext("hostname") or "", int(e.findtext("port") or 0),
                e.findtext("socketType") or "")
               for e in provider if e.tag in ("incomingServer", "outgoingServer")]
    return ([d.text or "" for d in provider.findall("domain")], servers,
            {e.text or "" for e in provider.iter("username")})


def outlook_protocols(text: str) -> list[dict[str, str]]:
    root = ElementTree.fromstring(text)
    assert root.tag == f"{RESPONSE_NS}Autodiscover", root.tag
    account = root.find(f"{OUTLOOK_NS}Response/{OUTLOOK_NS}Account")
    assert account is not None, text
    assert account.findtext(f"{OUTLOOK_NS}Action") == "settings"
    return [{child.tag.removeprefix(OUTLOOK_NS): (child.text or "").strip() for child in p}
            for p in account.findall(f"{OUTLOOK_NS}Protocol")]


def as_servers(protocols: list[dict[str, str]]) -> list[tuple[str, str, int, str]]:
    tls = {"SSL": "SSL", "TLS": "STARTTLS"}
    return [(p["Type"].lower(), p["Server"], int(p["Port"]), tls[p["Encryption"]])
            for p in protocols]


# ---------------------------------------------------------------- Thunderbird


def test_autoconfig_names_the_mail_server_its_ports_and_the_whole_address(box: Box) -> None:
    answer = https(box, AUTOCONFIG, "GET",
                   "/mail/config-v1.1.xml?emailaddress=admin%40arkbox.test")
    assert answer.status == 200, answer
    assert "xml" in answer.content_type, answer.content_type
    domains, servers, usernames = thunderbird_servers(answer.body)
    assert domains == [DOMAIN]
    assert servers == SERVERS, answer.body
    assert usernames == {"%EMAILADDRESS%"}
    assert {AUTOCONFIG, AUTODISCOVER, MAIL_HOST} <= set(answer.certificate_names)


def test_the_mail_domain_serves_the_same_file_at_its_well_known_path(box: Box) -> None:
    well_known = https(box, DOMAIN, "GET", "/.well-known/autoconfig/mail/config-v1.1.xml")
    assert well_known.status == 200, well_known
    assert well_known.body == https(box, AUTOCONFIG, "GET", "/mail/config-v1.1.xml").body


def test_autoconfig_serves_that_file_only(box: Box) -> None:
    assert https(box, AUTOCONFIG, "GET", "/").status == 404
    assert https(box, AUTOCONFIG, "GET", "/mail/other.xml").status == 404


# ---------------------------------------------------------------- Outlook


def test_autodiscover_answers_outlooks_post_with_the_address_as_the_login(box: Box) -> None:
    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        answer = https(box, AUTODISCOVER, "POST", path, OUTLOOK_REQUEST.format(address=ADDRESS))
        assert answer.status == 200, (path, answer)
        assert "xml" in answer.content_type, answer.content_type
        protocols = outlook_protocols(answer.body)
        assert as_servers(protocols) == SERVERS, answer.body
        assert [p.get("LoginName") for p in protocols] == [ADDRESS] * 3, answer.body
        assert all(p["SSL"] == "on" and p["AuthRequired"] == "on" for p in protocols)
    assert {AUTODISCOVER} <= set(answer.certificate_names)
    other = https(box, AUTODISCOVER, "POST", "/autodiscover/autodiscover.xml",
                  OUTLOOK_REQUEST.format(address="postmaster@arkbox.test"))
    assert {p.get("LoginName") for p in outlook_protocols(other.body)} == \
        {"postmaster@arkbox.test"}


def test_autodiscover_answers_a_get_without_a_login(box: Box) -> None:
    answer = https(box, AUTODISCOVER, "GET", "/autodiscover/autodiscover.xml")
    assert answer.status == 200, answer
    protocols = outlook_protocols(answer.body)
    assert as_servers(protocols) == SERVERS
    assert all("LoginName" not in p for p in protocols), answer.body


def test_autodiscover_echoes_only_an_address_and_never_a_clients_header(box: Box) -> None:
    markup = OUTLOOK_REQUEST.format(address="a</EMailAddress><x>@b.test")
    forged = https(box, AUTODISCOVER, "POST", "/autodiscover/autodiscover.xml", markup,
                   headers={"X-Arkbox-Autodiscover-Address": "evil@elsewhere.test"})
    assert forged.status == 200, forged
    protocols = outlook_protocols(forged.body)  # still well-formed
    assert all("LoginName" not in p for p in protocols), forged.body
    assert "evil@" not in forged.body
    assert https(box, AUTODISCOVER, "PUT", "/autodiscover/autodiscover.xml", "<x/>").status == 403
    assert https(box, AUTODISCOVER, "GET", "/").status == 404


# ---------------------------------------------------------------- dns and check mail


def test_dns_lists_both_names(box: Box) -> None:
    code, out = installer(box.app, "dns --ipv6 none")
    assert code == 0, out
    flat = " ".join(out.split())
    for host in (AUTOCONFIG, AUTODISCOVER):
        assert f"{host}. 3600 IN A {box.ip}" in flat, (host, out)


def check_mail(box: Box, ca_file: str | None) -> dict[str, dict[str, Any]]:
    trust = f" --ca-file {ca_file}" if ca_file else ""
    _, out = installer(box.app, f"check mail --resolver {box.dns_ip} --ipv4 {box.ip} "
                       f"--ipv6 none --dnsbl dnsbl.invalid --port25-probe {MAIL_HOST} "
                       f"--json{trust}")
    report = json.loads(out[out.index("{"):])
    return {f["check"]: f for f in report["findings"]}


def test_check_mail_finds_both_served_right(box: Box) -> None:
    # Trusting the box's own certificate (as a client trusts a CA's): both are right.
    findings = check_mail(box, FULLCHAIN)
    for check_name in (f"autoconfig {DOMAIN}", f"autodiscover {DOMAIN}"):
        finding = findings[check_name]
        assert finding["level"] == "ok", finding
        assert "IMAP mail.arkbox.test:993 SSL" in finding["message"]
        assert "SMTP mail.arkbox.test:587 STARTTLS" in finding["message"]
    # Trusting the system's CAs: the fallback certificate is a warning, not a failure.
    findings = check_mail(box, None)
    for check_name in (f"autoconfig {DOMAIN}", f"autodiscover {DOMAIN}"):
        assert findings[check_name]["level"] == "warn", findings[check_name]
        assert "names the right servers" in findings[check_name]["message"]
