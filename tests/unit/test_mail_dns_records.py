"""`arkbox-installer dns` records and `check mail` findings, against an in-memory zone."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from firstboot.core.config import Appliance, load_config
from firstboot.mail import dkim
from firstboot.mail.autoconfig import outlook_answer, thunderbird_config
from firstboot.mail.doctor import (
    FAIL,
    OK,
    WARN,
    DnsTrouble,
    Expectations,
    Finding,
    Probes,
    Resolver,
    check_mail,
    format_findings,
)
from firstboot.mail.fetch import UNVERIFIED, HttpsRequest
from firstboot.mail.records import (
    PROVIDER,
    BoxAddresses,
    Record,
    mail_records,
    mta_sts_id,
    mta_sts_policy,
    zone_snippet,
    zone_value,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = dkim.make_private_key()
BOX = BoxAddresses("192.0.2.10", None)
HOST = "mail.arkbox.test"


@pytest.fixture(scope="module")
def config() -> Appliance:
    return load_config(ROOT / "config/default.yaml")


@pytest.fixture(scope="module")
def records(config: Appliance) -> list[Record]:
    return mail_records(config, BOX, KEY)


def by(records: list[Record], name: str, rtype: str) -> list[str]:
    return [r.value for r in records if r.name == name and r.type == rtype]


# ---------------------------------------------------------------- records


def test_records_cover_what_a_mail_domain_needs(records: list[Record]) -> None:
    assert by(records, f"{HOST}.", "A") == ["192.0.2.10"]
    assert by(records, "arkbox.test.", "MX") == [f"10 {HOST}."]
    assert by(records, "arkbox.test.", "TXT") == ["v=spf1 mx -all"]
    assert by(records, f"{HOST}.", "TXT") == ["v=spf1 a -all"]
    (dkim_txt,) = by(records, "arkbox._domainkey.arkbox.test.", "TXT")
    assert dkim_txt == dkim.txt_value(KEY)
    assert by(records, "_dmarc.arkbox.test.", "TXT") == [
        "v=DMARC1; p=quarantine; adkim=s; aspf=s; rua=mailto:postmaster@arkbox.test"]
    assert by(records, "_smtp._tls.arkbox.test.", "TXT") == [
        "v=TLSRPTv1; rua=mailto:postmaster@arkbox.test"]
    assert by(records, "mta-sts.arkbox.test.", "A") == ["192.0.2.10"]
    assert by(records, "autoconfig.arkbox.test.", "A") == ["192.0.2.10"]
    assert by(records, "autodiscover.arkbox.test.", "A") == ["192.0.2.10"]
    (sts,) = by(records, "_mta-sts.arkbox.test.", "TXT")
    assert sts.startswith("v=STSv1; id=")
    ptr = [r for r in records if r.type == "PTR"]
    assert [(r.name, r.value, r.publish_at) for r in ptr] == [
        ("10.2.0.192.in-addr.arpa.", f"{HOST}.", PROVIDER)]


def test_mta_sts_policy_id_changes_with_the_mode(config: Appliance) -> None:
    testing, enforce = mta_sts_policy(config, False), mta_sts_policy(config, True)
    assert testing == f"version: STSv1\nmode: testing\nmx: {HOST}\nmax_age: 604800\n"
    assert "mode: enforce" in enforce
    assert mta_sts_id(testing) != mta_sts_id(enforce)


def test_client_autoconfig_names_are_published_per_mail_domain_only_with_mail(
        config: Appliance) -> None:
    two = config.model_copy(update={"mail": config.mail.model_copy(
        update={"domains": ["arkbox.test", "b.example"]})})
    records = mail_records(two, BoxAddresses("192.0.2.10", "2001:db8::10"), KEY)
    for host in ("autoconfig.arkbox.test.", "autodiscover.arkbox.test.",
                 "autoconfig.b.example.", "autodiscover.b.example."):
        assert by(records, host, "A") == ["192.0.2.10"], host
        assert by(records, host, "AAAA") == ["2001:db8::10"], host
    lines = {" ".join(line.split()) for line in zone_snippet(records, "x").splitlines()}
    assert {"autoconfig.b.example. 3600 IN A 192.0.2.10",
            "autodiscover.arkbox.test. 3600 IN AAAA 2001:db8::10"} <= lines
    off = config.model_copy(update={"mail": config.mail.model_copy(update={"enabled": False})})
    assert not [r for r in mail_records(off, BOX, KEY) if r.name.startswith("auto")]


def test_reports_to_another_domain_get_their_authorisation_record(config: Appliance) -> None:
    other = config.model_copy(update={"mail": config.mail.model_copy(
        update={"dmarc_report_to": "dmarc@reports.example"})})
    records = mail_records(other, BOX, KEY)
    assert by(records, "arkbox.test._report._dmarc.reports.example.", "TXT") == ["v=DMARC1"]


def test_zone_snippet_splits_long_txt_and_keeps_ptr_out_of_the_zone(
        records: list[Record]) -> None:
    text = zone_snippet(records, "arkbox-test")
    dkim_line = next(line for line in text.splitlines() if "_domainkey" in line)
    assert '( "v=DKIM1; k=rsa; p=' in dkim_line and '" "' in dkim_line
    strings = re.findall(r'"([^"]*)"', dkim_line)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert "".join(strings) == dkim.txt_value(KEY)
    ptr = [line for line in text.splitlines() if "PTR" in line]
    assert ptr and all(line.startswith(";") for line in ptr)
    assert zone_value(Record("a.", "TXT", 'say "hi"', "")) == '"say \\"hi\\""'


# ---------------------------------------------------------------- check mail


@dataclass
class FakeResolver(Resolver):
    """Answers from a dict: (name, type) -> presentation-form records."""

    zone: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)

    def query(self, name: str, rdtype: str) -> list[Any]:
        name = name.rstrip(".").lower()
        if name in self.broken:
            raise DnsTrouble(f"{name} {rdtype}: timed out")
        return [dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)
                for text in self.zone.get((name, rdtype), [])]


def zone_of(records: list[Record]) -> dict[tuple[str, str], list[str]]:
    zone: dict[tuple[str, str], list[str]] = {}
    for record in records:
        zone.setdefault((record.name.rstrip("."), record.type), []).append(zone_value(record))
    zone[("gmail-smtp-in.l.google.com", "A")] = ["192.0.2.99"]
    return zone


def client_settings(request: HttpsRequest) -> str:
    """What the box's proxy answers for the client settings (the tests' fetch_https)."""
    if request.host.startswith("autoconfig."):
        return thunderbird_config(HOST, request.host.removeprefix("autoconfig."))
    body = (request.body or b"").decode()
    return outlook_answer(HOST, body.split("<EMailAddress>")[1].split("<")[0])


def run_check(config: Appliance, zone: dict[tuple[str, str], list[str]],
              **probe: Any) -> dict[str, Finding]:
    policy = mta_sts_policy(config, True)
    options: dict[str, Any] = {"dnsbls": ("dnsbl.test",),
                               "fetch_policy": lambda a, h, c: policy,
                               "fetch_https": client_settings,
                               "connect_smtp": lambda a, p: "220 mx ESMTP", **probe}
    probes = Probes(**options)
    findings = check_mail(Expectations(config, BOX, KEY), FakeResolver(zone=zone), probes)
    return {f.check: f for f in findings}


def test_all_green_against_the_records_we_print(config: Appliance,
                                                records: list[Record]) -> None:
    findings = run_check(config, zone_of(records))
    assert {c: f.level for c, f in findings.items() if f.level != OK} == {}
    assert set(findings) == {
        f"A {HOST}", "ptr", "mx arkbox.test", "spf arkbox.test", "dkim arkbox.test",
        "dmarc arkbox.test", "mta-sts arkbox.test", "tls-rpt arkbox.test",
        "autoconfig arkbox.test", "autodiscover arkbox.test", "dnsbl dnsbl.test",
        "outbound port 25 (gmail-smtp-in.l.google.com)"}
    assert findings["autoconfig arkbox.test"].message == (
        "https://autoconfig.arkbox.test/mail/config-v1.1.xml names IMAP mail.arkbox.test:993 "
        "SSL, SMTP mail.arkbox.test:465 SSL, SMTP mail.arkbox.test:587 STARTTLS")


def test_wrong_dkim_key_and_missing_dmarc_are_named_with_fixes(config: Appliance,
                                                               records: list[Record]) -> None:
    zone = zone_of(records)
    zone[("arkbox._domainkey.arkbox.test", "TXT")] = [
        zone_value(Record("x.", "TXT", dkim.txt_value(dkim.make_private_key()), ""))]
    del zone[("_dmarc.arkbox.test", "TXT")]
    findings = run_check(config, zone)
    failed = {c: f for c, f in findings.items() if f.level == FAIL}
    assert set(failed) == {"dkim arkbox.test", "dmarc arkbox.test"}
    assert "not this box's key" in failed["dkim arkbox.test"].message
    assert dkim.public_key_b64(KEY) in failed["dkim arkbox.test"].fix
    assert failed["dmarc arkbox.test"].fix.startswith('publish: _dmarc.arkbox.test. IN TXT')
    text = format_findings(list(findings.values()))
    assert "✗ dmarc arkbox.test: no DMARC record at _dmarc.arkbox.test" in text
    assert text.endswith("2 failed")


def test_spf_ptr_and_mx_faults(config: Appliance, records: list[Record]) -> None:
    zone = zone_of(records)
    zone[("arkbox.test", "TXT")] = ['"v=spf1 ip4:198.51.100.1 -all"']
    zone[("10.2.0.192.in-addr.arpa", "PTR")] = ["vps-123.provider.example."]
    zone[("arkbox.test", "MX")] = ["10 mx.elsewhere.example."]
    findings = run_check(config, zone)
    assert findings["spf arkbox.test"].level == FAIL
    assert "'fail'" in findings["spf arkbox.test"].message
    assert findings["ptr"].level == FAIL and "vps-123.provider.example" in findings["ptr"].message
    assert "reverse DNS of 192.0.2.10 to mail.arkbox.test" in findings["ptr"].fix
    assert findings["mx arkbox.test"].level == FAIL


def test_listed_on_a_dnsbl_and_port_25_blocked(config: Appliance,
                                               records: list[Record]) -> None:
    zone = zone_of(records)
    zone[("10.2.0.192.dnsbl.test", "A")] = ["127.0.0.2"]

    def blocked(address: str, port: int) -> str:
        raise TimeoutError("timed out")

    findings = run_check(config, zone, connect_smtp=blocked)
    assert findings["dnsbl dnsbl.test"].level == FAIL
    port25 = findings["outbound port 25 (gmail-smtp-in.l.google.com)"]
    assert port25.level == FAIL and "mail.relay" in port25.fix


def test_dns_trouble_is_a_warning_not_a_crash(config: Appliance,
                                              records: list[Record]) -> None:
    findings = check_mail(Expectations(config, BOX, KEY),
                          FakeResolver(zone=zone_of(records), broken={"_dmarc.arkbox.test"}),
                          Probes(dnsbls=(), fetch_policy=lambda a, h, c: "",
                                 fetch_https=client_settings,
                                 connect_smtp=lambda a, p: "220"))
    dmarc = [f for f in findings if f.check.startswith("dmarc")]
    assert [f.level for f in dmarc] == [WARN] and "did not answer" in dmarc[0].message


def test_client_settings_are_asked_for_as_the_clients_ask(config: Appliance,
                                                          records: list[Record]) -> None:
    asked: list[HttpsRequest] = []

    def fetch(request: HttpsRequest) -> str:
        asked.append(request)
        return client_settings(request)

    run_check(config, zone_of(records), fetch_https=fetch, ca_file="/etc/ca.pem")
    thunderbird, outlook = asked
    assert (thunderbird.address, thunderbird.host, thunderbird.path, thunderbird.ca_file,
            thunderbird.body) == ("192.0.2.10", "autoconfig.arkbox.test",
                                  "/mail/config-v1.1.xml", "/etc/ca.pem", None)
    assert (outlook.address, outlook.host, outlook.path) == (
        "192.0.2.10", "autodiscover.arkbox.test", "/autodiscover/autodiscover.xml")
    assert b"<EMailAddress>postmaster@arkbox.test</EMailAddress>" in (outlook.body or b"")


def test_wrong_or_missing_client_settings_are_named(config: Appliance,
                                                    records: list[Record]) -> None:
    def wrong(request: HttpsRequest) -> str:
        text = client_settings(request)
        if request.host.startswith("autoconfig."):
            return text.replace("<port>993</port>", "<port>143</port>")
        return text.replace("<LoginName>postmaster@arkbox.test</LoginName>", "")

    findings = run_check(config, zone_of(records), fetch_https=wrong)
    autoconfig, autodiscover = findings["autoconfig arkbox.test"], \
        findings["autodiscover arkbox.test"]
    assert autoconfig.level == FAIL and "does not name IMAP mail.arkbox.test:993 SSL" in \
        autoconfig.message and "143 SSL, which this box does not serve" in autoconfig.message
    assert autodiscover.level == FAIL and "gives the login nothing" in autodiscover.message
    assert "postmaster@arkbox.test" in autodiscover.message
    # Not published: clients fall back to asking the user, which is a warning.
    zone = zone_of(records)
    del zone[("autoconfig.arkbox.test", "A")]
    unpublished = run_check(config, zone)["autoconfig arkbox.test"]
    assert unpublished.level == WARN and "does not resolve" in unpublished.message
    assert unpublished.fix.startswith("publish: autoconfig.arkbox.test. IN A")


def test_client_settings_behind_an_untrusted_certificate_or_none_at_all(
        config: Appliance, records: list[Record]) -> None:
    import ssl

    def self_signed(request: HttpsRequest) -> str:
        if request.ca_file != UNVERIFIED:
            error = ssl.SSLCertVerificationError("certificate verify failed")
            error.verify_message = "self-signed certificate"
            raise error
        return client_settings(request)

    findings = run_check(config, zone_of(records), fetch_https=self_signed)
    for check in ("autoconfig arkbox.test", "autodiscover arkbox.test"):
        assert findings[check].level == WARN, findings[check]
        assert "names the right servers" in findings[check].message
        assert "self-signed certificate" in findings[check].message

    def refused(request: HttpsRequest) -> str:
        raise ConnectionRefusedError(111, "Connection refused")

    findings = run_check(config, zone_of(records), fetch_https=refused)
    assert findings["autodiscover arkbox.test"].level == FAIL
    assert "cannot be fetched" in findings["autodiscover arkbox.test"].message
    findings = run_check(config, zone_of(records), fetch_https=lambda r: "<html>hi</html>")
    assert findings["autoconfig arkbox.test"].level == FAIL
    assert "not an autodiscover answer" in findings["autodiscover arkbox.test"].message


def test_the_doctors_requests_are_plain_http_over_its_tls() -> None:
    from firstboot.mail.fetch import _request_bytes

    get = HttpsRequest("192.0.2.10", "autoconfig.arkbox.test", "/mail/config-v1.1.xml", None)
    assert _request_bytes(get) == (b"GET /mail/config-v1.1.xml HTTP/1.0\r\n"
                                   b"Host: autoconfig.arkbox.test\r\n\r\n")
    post = HttpsRequest("192.0.2.10", "autodiscover.arkbox.test",
                        "/autodiscover/autodiscover.xml", None, b"<x/>")
    assert _request_bytes(post) == (
        b"POST /autodiscover/autodiscover.xml HTTP/1.0\r\nHost: autodiscover.arkbox.test\r\n"
        b"Content-Type: text/xml; charset=utf-8\r\nContent-Length: 4\r\n\r\n<x/>")


def test_resolver_addresses_parse() -> None:
    assert (Resolver.parse("192.0.2.53").nameserver, Resolver.parse("192.0.2.53").port) == \
        ("192.0.2.53", 53)
    assert Resolver.parse("192.0.2.53:5353").port == 5353
    parsed = Resolver.parse("[2001:db8::53]:53")
    assert (parsed.nameserver, parsed.port) == ("2001:db8::53", 53)
    with pytest.raises(ValueError):
        Resolver.parse("dns.example:53")


def test_check_alone_is_still_the_backup_check_and_check_mail_is_the_doctor() -> None:
    from firstboot.cli import build_parser

    parser = build_parser()
    backup = parser.parse_args(["check", "--verify-data"])
    assert backup.subject == "backup" and backup.verify_data
    mail = parser.parse_args(["check", "mail", "--resolver", "192.0.2.53:5353", "--json",
                              "--dnsbl", "a.test", "--dnsbl", "b.test", "--ipv6", "none"])
    assert (mail.subject, mail.resolver, mail.json, mail.dnsbl, mail.ipv6) == (
        "mail", "192.0.2.53:5353", True, ["a.test", "b.test"], "none")
    assert mail.func is backup.func  # one dispatcher, by subject
    dns = parser.parse_args(["dns", "--json", "--ipv4", "192.0.2.10"])
    assert dns.json and dns.ipv4 == "192.0.2.10"
