"""Issue 7, end to end: the appliance's mail server on a small internet of its own.

One rig (172.30.170.0/24), one appliance boot for the whole module:

* `dns`: nsd serving the zone `arkbox-installer dns` prints (plus the PTR the provider
  would set, the foreign domain sink.test and an empty DNS blocklist zone);
* `dns-bad`: the same zone with a wrong DKIM key and without the DMARC record;
* `sink`: a foreign Postfix for sink.test, delivering into a Maildir;
* the appliance, booted with config/default.yaml; its resolver forwards to `dns`.

The pytest process itself is the mail client (SMTP, IMAP, sslyze): the host reaches the
rig's addresses directly. Mail from the outside world (the spam tests) is written and signed
by the test process and handed to the sink's Postfix, which finds the box's MX through the
rig's DNS and delivers on port 25 as any foreign MTA does.
"""

from __future__ import annotations

import contextlib
import email
import email.utils
import http.client
import imaplib
import ipaddress
import json
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
from restore_checks import imaps_message, spam_filter
from rig_fixtures import (
    BOOT_TIMEOUT_S,
    CACHE_DIR,
    DEFAULT_CONFIG,
    FULLCHAIN,
    ROOT,
    add_client,
    admin_key,
    appliance_image,
    check,
    config_with,
    dump,
    installer,
    new_rig,
    status,
    step_states,
    the_client_image,
)

from builder.rig.dns import NSD_CONF, ZoneDNSContainer
from builder.rig.parts import (
    ApplianceContainer,
    Rig,
    RigContainer,
    files_tar,
    rig_image,
    wait_until,
)
from firstboot.mail.dkim import make_private_key, txt_value
from firstboot.mail.doctor import Resolver, spf_result
from firstboot.mail.records import Record, zone_value

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RIG_OCTET = 170  # 172.30.170.0/24
MAIL_HOST = "mail.arkbox.test"
ADMIN = "admin@arkbox.test"
PASSWORD = (ROOT / "config/secrets/admin-mail-password").read_text().strip()
FRIEND = "friend@sink.test"
DNSBL = "dnsbl.test"
# Senders from the outside world, for the spam filter (zones_from publishes their records).
STRICT = "strict.test"
SENDER_SELECTOR = "s1"
SENDER_HOST = "gw.sink.test"
SINK_KEY = make_private_key()
STRICT_PUBLISHED_KEY = make_private_key()  # strict.test's signatures are made with another
SINK_MAILDIR = "/var/mail/vhosts/sink/new"
BAN_AFTER = 4  # failed logins (mail.login_ban.max_failures in this module's config)
DELIVERY_TIMEOUT_S = 90
SINK_MAIN_CF = """\
compatibility_level = 3.9
maillog_file = /dev/stdout
myhostname = mx.sink.test
mydestination = localhost
inet_interfaces = all
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
virtual_mailbox_domains = sink.test
virtual_mailbox_base = /var/mail/vhosts
virtual_mailbox_maps = static:sink/
virtual_uid_maps = static:5000
virtual_gid_maps = static:5000
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_tls_security_level = may
# A message the box deferred is retried within seconds, not the default 5 minutes.
queue_run_delay = 5s
minimum_backoff_time = 5s
maximum_backoff_time = 10s
"""


class DnsServer(ZoneDNSContainer):
    """nsd on the rig, serving the zones laid into /etc/nsd/zones (by `serve`, later)."""

    def serve(self, zones: dict[str, str]) -> None:
        files = {f"/etc/nsd/zones/{name}.zone": (text.encode(), 0o644)
                 for name, text in zones.items()}
        conf = NSD_CONF + "".join(f"zone:\n    name: {name}\n    zonefile: {name}.zone\n"
                                  for name in sorted(zones))
        files["/etc/nsd/nsd.conf"] = (conf.encode(), 0o644)
        self.put_files(files)
        code, out = self.exec("sh", "-c", "nsd-checkconf /etc/nsd/nsd.conf && for z in "
                              "/etc/nsd/zones/*.zone; do n=$(basename $z .zone); "
                              "nsd-checkzone $n $z || exit 1; done && "
                              "nsd-control -c /etc/nsd/nsd.conf reconfig && "
                              "nsd-control -c /etc/nsd/nsd.conf reload")
        assert code == 0, out


class ResolvingContainer(RigContainer):
    """A container whose resolver forwards to the rig's DNS server."""

    def __init__(self, *args: Any, dns: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if dns:
            self.with_dns(dns)


class MailApplianceContainer(ApplianceContainer):
    """The appliance, resolving through the rig's DNS server."""

    def __init__(self, *args: Any, dns: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if dns:
            self.with_dns(dns)


@dataclass
class Net:
    rig: Rig
    app: ApplianceContainer
    dns: DnsServer
    dns_bad: DnsServer
    sink: ResolvingContainer
    ca_file: Path
    records: list[dict[str, Any]]

    @property
    def ip(self) -> str:
        return self.app.ip(4)

    @property
    def resolver(self) -> Resolver:
        return Resolver(self.dns.ip(4))


def soa(origin: str) -> str:
    return (f"$ORIGIN {origin}.\n$TTL 300\n@ IN SOA ns.{origin}. hostmaster.{origin}. "
            "( 1 3600 600 86400 300 )\n@ IN NS ns.invalid.\n")


def zones_from(records: list[dict[str, Any]], sink_ip: str, app_ip: str,
               drop: frozenset[str] = frozenset(), replace: dict[str, str] | None = None
               ) -> dict[str, str]:
    """The zones the test internet serves, from `arkbox-installer dns --json`'s records."""
    arkbox = soa("arkbox.test")
    reverse_origin = ".".join(reversed(app_ip.split(".")[:3])) + ".in-addr.arpa"
    reverse = soa(reverse_origin)
    for item in records:
        record = Record(**item)
        if record.name in drop:
            continue
        if replace and record.name in replace:
            record = Record(record.name, record.type, replace[record.name], record.purpose)
        line = f"{record.name} {record.ttl} IN {record.type} {zone_value(record)}\n"
        if record.publish_at == "provider":
            if record.name.endswith(reverse_origin + "."):
                reverse += line  # what the VPS provider would publish
        else:
            assert record.name.endswith("arkbox.test."), record
            arkbox += line
    # The outside world's senders (the spam tests): sink.test signs (the test process holds
    # its key), passes SPF from its MTA (the sink) and the rig's gateway, and publishes
    # DMARC; strict.test sends nothing itself, so mail claiming it fails SPF and DKIM
    # against its p=reject.
    rig_net = ".".join(app_ip.split(".")[:3]) + ".0/24"
    # The sink's Postfix is mx.sink.test, and the rig's gateway (bench/mail.py sends from
    # the host process) gw.sink.test, both ways, as a real MTA's address is (rspamd scores
    # a sender without a matching PTR).
    gateway = ".".join(app_ip.split(".")[:3]) + ".1"
    reverse += f"{gateway.split('.')[-1]} IN PTR {SENDER_HOST}.\n"
    reverse += f"{sink_ip.split('.')[-1]} IN PTR mx.sink.test.\n"
    sink = (soa("sink.test") + f"@ IN MX 10 mx\nmx IN A {sink_ip}\ngw IN A {gateway}\n"
            f'@ IN TXT "v=spf1 ip4:{sink_ip} ip4:{rig_net} -all"\n'
            f"{SENDER_SELECTOR}._domainkey IN TXT {zone_txt(txt_value(SINK_KEY))}\n"
            '_dmarc IN TXT "v=DMARC1; p=reject"\n')
    strict = (soa(STRICT) + "@ IN MX 10 mx\nmx IN A 192.0.2.25\n"
              '@ IN TXT "v=spf1 -all"\n'
              f"{SENDER_SELECTOR}._domainkey IN TXT {zone_txt(txt_value(STRICT_PUBLISHED_KEY))}\n"
              '_dmarc IN TXT "v=DMARC1; p=reject"\n')
    return {"arkbox.test": arkbox, reverse_origin: reverse, "sink.test": sink,
            STRICT: strict, DNSBL: soa(DNSBL)}


def zone_txt(value: str) -> str:
    return zone_value(Record("", "TXT", value, ""))


@pytest.fixture(scope="module")
def net(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    rig = new_rig("mail", RIG_OCTET)
    app_image = appliance_image(rig)
    internet = rig_image(ROOT, CACHE_DIR, "rig-internet")
    with rig.running():
        dns = DnsServer(rig, "dns", internet,
                        files={"/etc/nsd/nsd.conf": (NSD_CONF.encode(), 0o644)})
        rig.add(dns)
        dns_bad = DnsServer(rig, "dns-bad", internet,
                            files={"/etc/nsd/nsd.conf": (NSD_CONF.encode(), 0o644)})
        rig.add(dns_bad)
        sink = ResolvingContainer(rig, "sink", internet, aliases=["mx-sink"], command=["sink"],
                             files={"/etc/postfix/main.cf": (SINK_MAIN_CF.encode(), 0o644)},
                             dns=[dns.ip(4)])
        rig.add(sink)
        config = config_with(admin_key())
        config["mail"].update(guard_config(rig))
        app = MailApplianceContainer(rig, "appliance", app_image, aliases=["arkbox-mail-box"],
                                config=dump(config), seed_config=DEFAULT_CONFIG,
                                boot_timeout=BOOT_TIMEOUT_S,
                                dns=[dns.ip(4)])
        started = time.monotonic()
        rig.add(app)
        app.wait_first_boot(timeout=600)
        print(f"\nmail appliance: first boot done in {time.monotonic() - started:.0f} s")
        code, out = installer(app, "dns --json --ipv6 none")
        assert code == 0, out
        records = json.loads(out[out.index("{"):])["records"]
        app_ip, sink_ip = app.ip(4), sink.ip(4)
        dns.serve(zones_from(records, sink_ip, app_ip))
        dkim_name = next(r["name"] for r in records if "._domainkey." in r["name"])
        wrong_key = txt_value(make_private_key())
        dns_bad.serve(zones_from(records, sink_ip, app_ip, drop=frozenset({"_dmarc.arkbox.test."}),
                                 replace={dkim_name: wrong_key}))
        ca_file = tmp_path_factory.mktemp("mail") / "fullchain.pem"
        ca_file.write_text(check(app, f"cat {FULLCHAIN}"))
        yield Net(rig, app, dns, dns_bad, sink, ca_file, records)


def host_address(rig: Rig) -> str:
    """The test process's address as the box sees it: the rig network's gateway."""
    return str(next(ipaddress.ip_network(rig.ipv4_subnet).hosts()))


def guard_config(rig: Rig) -> dict[str, Any]:
    """Postscreen asks the rig's DNSBL (and Spamhaus, which the rig's DNS refuses: a list
    that does not answer); the login ban is quick to reach, and never bans the test
    process, whose password tests would otherwise cut it off from the other tests."""
    return {"dnsbls": [{"zone": "zen.spamhaus.org", "replies": "127.0.0.[2..11]", "weight": 3},
                       {"zone": DNSBL, "replies": "127.0.0.2", "weight": 3}],
            "login_ban": {"max_failures": BAN_AFTER, "window": "10m", "ban_time": "20m",
                          "exempt": [f"{host_address(rig)}/32"]}}


# ---------------------------------------------------------------- helpers


def tls_context(net: Net) -> ssl.SSLContext:
    """Trust the box's own (fallback) certificate; the tests connect by address."""
    context = ssl.create_default_context(cafile=str(net.ca_file))
    context.check_hostname = False
    return context


def message(sender: str, to: str, subject: str) -> str:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@arkbox.test>\r\n\r\nhello from the test\r\n")


def submit_587(net: Net, to: str, subject: str) -> None:
    with smtplib.SMTP(net.ip, 587, timeout=30) as smtp:
        smtp.ehlo("client.example")
        smtp.starttls(context=tls_context(net))
        smtp.ehlo("client.example")
        smtp.login(ADMIN, PASSWORD)
        smtp.sendmail(ADMIN, [to], message(ADMIN, to, subject))


def submit_465(net: Net, to: str, subject: str) -> None:
    with smtplib.SMTP_SSL(net.ip, 465, timeout=30, context=tls_context(net)) as smtp:
        smtp.login(ADMIN, PASSWORD)
        smtp.sendmail(ADMIN, [to], message(ADMIN, to, subject))


def fetch_imaps(net: Net, subject: str, mailbox: str = "INBOX") -> bytes:
    """The raw message with `subject` in the admin's `mailbox` (waits for delivery)."""
    return imaps_message(net.ip, tls_context(net), ADMIN, PASSWORD, subject,
                         timeout=DELIVERY_TIMEOUT_S, interval=2, readonly=False,
                         mailbox=mailbox)


def sink_message(net: Net, subject: str) -> bytes:
    found: list[bytes] = []

    def arrived() -> str | None:
        code, out = net.sink.exec("sh", "-c", f"grep -l 'Subject: {subject}' {SINK_MAILDIR}/*")
        if code != 0:
            return "not delivered to the sink yet"
        path = out.split()[0]
        raw = net.sink.exec("cat", path)[1]
        found.append(raw.encode())
        return None

    wait_until(f"message {subject!r} at the sink", arrived, DELIVERY_TIMEOUT_S, interval=2)
    return found[0]


def dkim_verifies(net: Net, raw: bytes) -> bool:
    return bool(dkimpy.verify(raw, dnsfunc=net.resolver.dkim_txt))


# ---------------------------------------------------------------- the mail path


def test_first_boot_runs_the_mail_step(net: Net) -> None:
    data = status(net.app)
    assert data["result"] == "ok", data.get("failures")
    assert step_states(data)["mail"] in {"changed", "unchanged"}
    mail_step = next(s for s in data["steps"] if s["name"] == "mail")
    assert "ports 25 465 587 993" in mail_step["summary"]
    key = check(net.app, "stat -c '%a %U' /srv/arkbox/secrets/generated/dkim.key").split()
    assert key == ["600", "root"]


def test_submission_587_and_465_deliver_to_imaps_with_a_valid_dkim_signature(net: Net) -> None:
    for port, submit in ((587, submit_587), (465, submit_465)):
        subject = f"local via {port} {uuid.uuid4().hex[:8]}"
        submit(net, ADMIN, subject)
        raw = fetch_imaps(net, subject)
        parsed = email.message_from_bytes(raw)
        assert "d=arkbox.test" in str(parsed["DKIM-Signature"]), raw[:800]
        assert "s=arkbox" in str(parsed["DKIM-Signature"])
        assert dkim_verifies(net, raw), raw[:1500]


def test_outbound_mail_reaches_the_sink_signed_and_passes_spf(net: Net) -> None:
    subject = f"outbound {uuid.uuid4().hex[:8]}"
    submit_587(net, FRIEND, subject)
    raw = sink_message(net, subject)
    assert dkim_verifies(net, raw), raw[:1500]
    # The sink saw the appliance's address (the first Received header is the sink's own).
    received = email.message_from_bytes(raw).get_all("Received") or []
    assert f"[{net.ip}]" in received[0] and MAIL_HOST in received[0], received[0]
    assert spf_result(net.resolver, net.ip, ADMIN, MAIL_HOST) == "pass"


def test_inbound_on_25_from_the_sink_reaches_the_mailbox(net: Net) -> None:
    subject = f"inbound {uuid.uuid4().hex[:8]}"
    # Through postmaster@ (an alias of admin@): the sink resolves MX arkbox.test itself.
    code, out = net.sink.exec("sh", "-c", f"printf 'From: {FRIEND}\\nTo: postmaster@arkbox.test"
                              f"\\nSubject: {subject}\\n\\nhi\\n' | sendmail -f {FRIEND} "
                              "postmaster@arkbox.test")
    assert code == 0, out
    raw = fetch_imaps(net, subject)
    assert b"Delivered-To: admin@arkbox.test" in raw, raw[:800]


def test_no_open_relay_and_no_auth_before_tls(net: Net) -> None:
    with smtplib.SMTP(net.ip, 25, timeout=30) as smtp:
        smtp.ehlo("mx.sink.test")
        assert smtp.has_extn("starttls"), smtp.esmtp_features
        assert not smtp.has_extn("auth"), "no AUTH on port 25"
        smtp.mail(FRIEND)
        code, reply = smtp.rcpt("someone@third.test")
        assert code == 554 and b"Relay access denied" in reply, (code, reply)
    with smtplib.SMTP(net.ip, 587, timeout=30) as smtp:
        smtp.ehlo("client.example")
        assert not smtp.has_extn("auth"), "AUTH offered before STARTTLS"
        code, reply = smtp.docmd("AUTH", "PLAIN AGFkbWluQGFya2JveC50ZXN0AHg=")
        assert code >= 500, (code, reply)
        # After STARTTLS but without logging in, nothing is accepted on submission.
        smtp.starttls(context=tls_context(net))
        smtp.ehlo("client.example")
        assert smtp.has_extn("auth")
        code, reply = smtp.mail(ADMIN)
        if code < 400:
            code, reply = smtp.rcpt(FRIEND)
        assert code >= 500, (code, reply)


# ---------------------------------------------------------------- TLS profile


@pytest.fixture
def scanner_exempt(net: Net) -> Iterator[None]:
    """Exempt the test's own address from Postfix's per-client rate limits while sslyze
    scans: a TLS scan opens hundreds of connections a minute, which the limits exist to
    refuse. Only for the scan, put back afterwards (and `apply` would rewrite it)."""
    main = "/etc/arkbox/rendered/mail/postfix/main.cf"
    check(net.app, f"cp {main} /root/main.cf.saved && echo 'smtpd_client_event_limit_exceptions"
                   f" = $mynetworks, {net.rig.ipv4_subnet}' >> {main} && docker exec arkbox-mail "
                   "/usr/local/sbin/mail-reload")
    # Nor screened by postscreen on 25: a scanner speaks before its turn (and its
    # connectivity check gives up before the greeting wait is over).
    check(net.app, f"echo 'postscreen_access_list = permit_mynetworks, "
                   f"cidr:{{{{{net.rig.ipv4_subnet} permit}}}}' >> {main} && "
                   "docker exec arkbox-mail /usr/local/sbin/mail-reload")
    yield
    check(net.app, f"cp /root/main.cf.saved {main} && docker exec arkbox-mail "
                   "/usr/local/sbin/mail-reload")


# The one part of Mozilla's profile that depends on trust: the rig has no public CA, and
# the box's fallback certificate is self-signed with CA:FALSE, which no verifier accepts
# as a trust anchor. Instead, the test proves the served certificate is the box's own.
TRUST_ONLY = {"certificate_path_validation"}


@pytest.mark.parametrize("port", [25, 465, 587, 993])
def test_tls_meets_mozilla_intermediate(net: Net, scanner_exempt: None, port: int) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from sslyze.connection_helpers.opportunistic_tls_helpers import (
        ProtocolWithOpportunisticTlsEnum,
    )
    from sslyze.mozilla_tls_profile.tls_config_checker import (
        SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        MozillaTlsConfiguration,
        ServerNotCompliantWithTlsConfiguration,
        TlsConfigurationEnum,
        check_server_against_tls_configuration,
    )
    from sslyze.scanner.models import ServerScanRequest
    from sslyze.scanner.scanner import Scanner
    from sslyze.server_setting import ServerNetworkConfiguration, ServerNetworkLocation

    starttls = {25: ProtocolWithOpportunisticTlsEnum.SMTP,
                587: ProtocolWithOpportunisticTlsEnum.SMTP}.get(port)
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(MAIL_HOST, port, net.ip),
        network_configuration=ServerNetworkConfiguration(
            MAIL_HOST, tls_opportunistic_encryption=starttls),
        scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    (result,) = list(scanner.get_results())
    issues: dict[str, str] = {}
    try:
        check_server_against_tls_configuration(
            result, MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE))
    except ServerNotCompliantWithTlsConfiguration as e:
        issues = dict(e.issues)
    assert set(issues) <= TRUST_ONLY, f"port {port}: {issues}"
    assert result.scan_result is not None
    info = result.scan_result.certificate_info.result
    assert info is not None
    served = info.certificate_deployments[0].received_certificate_chain[0]
    own = x509.load_pem_x509_certificate(net.ca_file.read_bytes())
    assert served.fingerprint(hashes.SHA256()) == own.fingerprint(hashes.SHA256())


# ---------------------------------------------------------------- dns and check mail


def test_dns_prints_every_record_to_publish(net: Net) -> None:
    code, out = installer(net.app, "dns --ipv6 none")
    assert code == 0, out
    ip = net.ip
    flat = " ".join(out.split())
    for expected in (f"{MAIL_HOST}. 3600 IN A {ip}", f"arkbox.test. 3600 IN MX 10 {MAIL_HOST}.",
                     'arkbox.test. 3600 IN TXT "v=spf1 mx -all"',
                     'arkbox._domainkey.arkbox.test. 3600 IN TXT ( "v=DKIM1; k=rsa; p=',
                     '_dmarc.arkbox.test. 3600 IN TXT "v=DMARC1; p=quarantine;',
                     '_mta-sts.arkbox.test. 3600 IN TXT "v=STSv1; id=',
                     '_smtp._tls.arkbox.test. 3600 IN TXT "v=TLSRPTv1;',
                     f"; {'.'.join(reversed(ip.split('.')))}.in-addr.arpa. 3600 IN PTR "
                     f"{MAIL_HOST}."):
        assert expected in flat, (expected, out)
    # nsd accepted the zone made from --json (the fixture checked it) and serves it.
    assert net.resolver.txt("_dmarc.arkbox.test")[0].startswith("v=DMARC1")


def check_mail(net: Net, dns: DnsServer) -> tuple[int, dict[str, Any]]:
    code, out = installer(net.app, f"check mail --resolver {dns.ip(4)} --dnsbl {DNSBL} "
                          "--port25-probe mx.sink.test --ipv6 none --json")
    return code, json.loads(out[out.index("{"):])


def test_check_mail_is_green_against_the_published_zone(net: Net) -> None:
    code, report = check_mail(net, net.dns)
    problems = [f for f in report["findings"] if f["level"] != "ok"]
    # MTA-STS and the mail clients' settings: served and right, but the rig's certificate
    # is the self-signed fallback, so senders would ignore the policy and clients warn:
    # warnings, and the only ones (test_mail_autoconfig.py trusts the box's certificate).
    assert [f["check"] for f in problems] == ["mta-sts arkbox.test", "autoconfig arkbox.test",
                                              "autodiscover arkbox.test"], problems
    assert all(f["level"] == "warn" for f in problems), problems
    assert "policy is served" in problems[0]["message"]
    assert all("names the right servers" in f["message"] for f in problems[1:]), problems
    assert code == 0, report
    checks = {f["check"] for f in report["findings"]}
    assert {"ptr", "mx arkbox.test", "spf arkbox.test", "dkim arkbox.test", "dmarc arkbox.test",
            "tls-rpt arkbox.test", f"dnsbl {DNSBL}", "outbound port 25 (mx.sink.test)",
            "spam filter"} <= checks


def test_check_mail_names_a_wrong_dkim_key_and_a_missing_dmarc_record(net: Net) -> None:
    code, report = check_mail(net, net.dns_bad)
    failed = {f["check"]: f for f in report["findings"] if f["level"] == "fail"}
    assert set(failed) == {"dkim arkbox.test", "dmarc arkbox.test"}, failed
    assert "not this box's key" in failed["dkim arkbox.test"]["message"]
    assert "no DMARC record" in failed["dmarc arkbox.test"]["message"]
    assert "v=DMARC1; p=quarantine" in failed["dmarc arkbox.test"]["fix"]
    assert code == 1
    code, text = installer(net.app, f"check mail --resolver {net.dns_bad.ip(4)} --dnsbl "
                           f"{DNSBL} --port25-probe mx.sink.test --ipv6 none")
    assert code == 1 and "✗ dkim arkbox.test" in text and "fix: publish" in text, text


def served_fingerprint(net: Net, port: int) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    pem = ssl.get_server_certificate((net.ip, port), timeout=20)
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()


def test_a_new_certificate_is_reloaded_not_recreated(net: Net) -> None:
    """What renewal does: new files in /srv/arkbox/tls/live, then `apply`; the mail
    step sees Postfix and Dovecot hold an older certificate and reloads them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from builder.rig.parts import files_tar
    from firstboot.certs.certificate import cert_names, make_fallback
    from firstboot.core.context import utc_now

    before = check(net.app, "docker inspect -f '{{.Id}}' arkbox-mail").strip()
    names = cert_names(x509.load_pem_x509_certificate(net.ca_file.read_bytes()))
    key_pem, chain_pem, certificate = make_fallback(names, utc_now())
    assert net.app.container is not None
    net.app.container.put_archive("/", files_tar({
        "/srv/arkbox/tls/live/privkey.pem": (key_pem, 0o600),
        "/srv/arkbox/tls/live/fullchain.pem": (chain_pem, 0o644)}))
    code, out = installer(net.app, "apply")
    assert code == 0, out
    mail_step = next(s for s in status(net.app)["steps"] if s["name"] == "mail")
    assert mail_step["details"]["container"] == "reloaded (new certificate)", mail_step
    assert check(net.app, "docker inspect -f '{{.Id}}' arkbox-mail").strip() == before
    wanted = certificate.fingerprint(hashes.SHA256()).hex()
    for port in (465, 993):
        assert served_fingerprint(net, port) == wanted, port
    net.ca_file.write_bytes(chain_pem)  # later tests trust the new one
    subject = f"after renewal {uuid.uuid4().hex[:8]}"
    submit_465(net, ADMIN, subject)
    assert fetch_imaps(net, subject)


def test_rerun_changes_nothing_for_mail(net: Net) -> None:
    before = check(net.app, "docker inspect -f '{{.Id}}' arkbox-mail").strip()
    code, out = installer(net.app, "apply")
    assert code == 0, out
    assert check(net.app, "docker inspect -f '{{.Id}}' arkbox-mail").strip() == before


def wrong_password(net: Net) -> tuple[int, bytes]:
    """One AUTH on 465 with a wrong password: the server's reply."""
    with smtplib.SMTP_SSL(net.ip, 465, timeout=60, context=tls_context(net)) as smtp:
        smtp.ehlo("client.example")
        # "\0admin@arkbox.test\0wrong", base64
        return smtp.docmd("AUTH", "PLAIN AGFkbWluQGFya2JveC50ZXN0AHdyb25n")


@pytest.fixture
def lockout_waited_out(net: Net) -> Iterator[Net]:
    """The test locks its own address out of AUTH for a minute (Postfix's per-client AUTH
    rate): afterwards wait until a password is asked for again, so the tests after it
    can log in. Probes are 15 s apart, well under the limit they wait out."""
    yield net

    def asked_again() -> str | None:
        code, reply = wrong_password(net)
        return None if code == 535 else f"{code} {reply.decode(errors='replace')}"

    started = time.monotonic()
    wait_until("the AUTH lockout to end", asked_again, 180, interval=15)
    print(f"\nAUTH lockout over after {time.monotonic() - started:.0f} s")


def test_password_guessing_is_locked_out(lockout_waited_out: Net) -> None:
    net = lockout_waited_out
    replies: list[tuple[int, bytes]] = []
    for _ in range(14):
        replies.append(wrong_password(net))
        if replies[-1][0] < 500:
            break
    codes = [code for code, _ in replies]
    assert codes[0] == 535, replies  # a wrong password is refused as such ...
    # ... and after 10 attempts a minute the address may not even try.
    assert codes[-1] in (421, 450, 454) and b"too many AUTH" in replies[-1][1], replies
    assert codes.count(535) <= 10, replies


# ---------------------------------------------------------------- webmail reaches the mail server

IMAP_LOGIN_PHP = r"""
$s = stream_socket_client('tcp://mail:143', $errno, $error, 10);
if (!$s) { exit("connect: $error\n"); }
stream_set_timeout($s, 15);
echo fgets($s);
fwrite($s, "a STARTTLS\r\n");
echo fgets($s);
stream_context_set_option($s, 'ssl', 'verify_peer', false);
stream_context_set_option($s, 'ssl', 'verify_peer_name', false);
if (!stream_socket_enable_crypto($s, true, STREAM_CRYPTO_METHOD_TLS_CLIENT)) { exit("no TLS\n"); }
fwrite($s, 'b LOGIN "' . getenv('U') . '" "' . getenv('P') . "\"\r\n");
while (($line = fgets($s)) !== false) { echo $line; if (strpos($line, 'b ') === 0) break; }
"""


def sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def mail_ips(net: Net) -> dict[str, str]:
    """arkbox-mail's address on each network it is on."""
    out = check(net.app, "docker inspect -f '{{range $n, $e := .NetworkSettings.Networks}}"
                         "{{$n}} {{$e.IPAddress}}\n{{end}}' arkbox-mail")
    return dict(line.split() for line in out.splitlines() if line.strip())


def test_webmail_and_only_webmail_reaches_the_mail_server(net: Net) -> None:
    # The mail container is on its own network and on webmail's (the roundcube recipe
    # uses the mail server), nowhere else.
    ips = mail_ips(net)
    assert set(ips) == {"arkbox-mail", "arkbox-webmail"}, ips
    # IMAP on 143 from the webmail container, by the name Roundcube is configured with:
    # STARTTLS, then a login as the default mailbox.
    code, out = net.app.exec("sh", "-c", f"docker exec -e U={ADMIN} -e P={sh_quote(PASSWORD)} "
                             f"arkbox-webmail php -r {sh_quote(IMAP_LOGIN_PHP)}")
    assert code == 0 and "a OK" in out and "b OK" in out, out
    # Submission too (Roundcube sends through mail:587).
    code, out = net.app.exec("sh", "-c", "docker exec arkbox-webmail php -r "
                             + sh_quote("$s = stream_socket_client('tcp://mail:587', $e, $m, "
                                        "10); echo fgets($s);"))
    assert code == 0 and out.startswith("220 "), out
    # The wiki cannot: no name `mail`, and no route to any of the mail container's
    # addresses (other bridges); it only reaches the published ports on the host's
    # address, like anyone.
    code, out = net.app.exec("docker", "exec", "arkbox-wiki", "getent", "hosts", "mail")
    assert code == 2, out  # getent: "not found"
    # (The probe itself works there: the wiki reaches its own port 80.)
    code, out = net.app.exec("docker", "exec", "arkbox-wiki", "timeout", "5", "bash", "-c",
                             "exec 3<>/dev/tcp/127.0.0.1/80")
    assert code == 0, out
    for network, ip in ips.items():
        code, out = net.app.exec("docker", "exec", "arkbox-wiki", "timeout", "5", "bash", "-c",
                                 f"exec 3<>/dev/tcp/{ip}/143")
        assert code != 0, f"wiki reached arkbox-mail on {network} ({ip}): {out}"


class _Https(http.client.HTTPSConnection):
    """HTTPS to a host name at a given address (SNI and Host are the name)."""

    def __init__(self, ip: str, hostname: str, context: ssl.SSLContext) -> None:
        super().__init__(hostname, 443, context=context, timeout=60)
        self._ip = ip
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, 443), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


@dataclass
class Browser:
    """Just enough of a browser for Roundcube: cookies, and one request at a time."""

    net: Net
    hostname: str
    cookies: dict[str, str]

    def request(self, method: str, path: str, body: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the fallback certificate names no IP; TLS only
        conn = _Https(self.net.ip, self.hostname, context)
        sent = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
                **({"Content-Type": "application/x-www-form-urlencoded"} if body else {}),
                **(headers or {})}
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
            for value in response.headers.get_all("Set-Cookie") or []:
                name, _, rest = value.partition("=")
                cookie = rest.split(";", 1)[0]
                if cookie and cookie != "deleted":
                    self.cookies[name.strip()] = cookie
                else:
                    self.cookies.pop(name.strip(), None)
            return response.status, dict(response.headers.items()), text
        finally:
            conn.close()


def test_roundcube_login_shows_the_inbox(net: Net) -> None:
    """Log in to Roundcube over HTTPS through the proxy, as a person would: its login
    form (with its CSRF token), then the INBOX list, which holds a message just sent."""
    import re
    import urllib.parse

    subject = f"webmail{uuid.uuid4().hex[:8]}"
    submit_587(net, ADMIN, subject)
    fetch_imaps(net, subject)  # delivered
    browser = Browser(net, "webmail.arkbox.test", {})
    code, _, page = browser.request("GET", "/")
    assert code == 200, page[:500]
    token = re.search(r'name="_token" value="([^"]+)"', page)
    assert token, page[:2000]
    form = urllib.parse.urlencode({"_token": token.group(1), "_task": "login",
                                   "_action": "login", "_timezone": "UTC", "_url": "",
                                   "_user": ADMIN, "_pass": PASSWORD})
    code, headers, page = browser.request("POST", "/?_task=login", form)
    if code != 302:  # a failed login answers 401 with the form and says why
        print(check(net.app, "docker logs --tail 30 arkbox-webmail 2>&1; "
                             "docker logs --tail 30 arkbox-mail 2>&1"))
    assert code == 302, (code, re.findall(r'display_message\(([^)]*)\)', page))
    assert "_task=mail" in headers.get("Location", ""), headers
    code, _, page = browser.request("GET", "/?_task=mail&_mbox=INBOX")
    assert code == 200 and '"mailbox":"INBOX"' in page, page[:2000]
    request_token = re.search(r'"request_token":"([^"]+)"', page)
    assert request_token, page[:2000]
    code, _, listing = browser.request(
        "GET", "/?_task=mail&_action=list&_mbox=INBOX&_page=1&_remote=1",
        headers={"X-Roundcube-Request": request_token.group(1),
                 "X-Requested-With": "XMLHttpRequest"})
    assert code == 200 and subject in listing, listing[:3000]


# ---------------------------------------------------------------- spam filtering (rspamd)

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_JUNK = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
# Bayes learns only messages with enough words (rspamd's min_tokens).
PROSE = ("The harbour committee met on Thursday to discuss the new lighthouse, the ferry "
         "timetable for winter, repairs to the northern pier and a proposal from the "
         "fishermen's cooperative about shared storage for nets and crates.\r\n")


def world_message(sender: str, subject: str, body: str = PROSE,
                  key: bytes | None = None) -> bytes:
    """A message as a well-behaved outside sender writes it, DKIM-signed with `key`."""
    domain = sender.split("@")[1]
    raw = (f"From: {sender}\r\nTo: {ADMIN}\r\nSubject: {subject}\r\n"
           f"Date: {email.utils.formatdate()}\r\n"
           f"Message-ID: <{uuid.uuid4().hex}@{domain}>\r\nMIME-Version: 1.0\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode()
    if key is None:
        return raw
    signature = dkimpy.sign(raw, SENDER_SELECTOR.encode(), domain.encode(), key,
                            include_headers=[b"from", b"to", b"subject", b"date",
                                             b"message-id"])
    return signature + raw


def send_from_the_world(net: Net, sender: str, raw: bytes, bounce: bool = True) -> str:
    """Hand `raw` to the sink's Postfix (sendmail, envelope sender `sender`, to ADMIN): it
    looks up arkbox.test's MX through the rig's DNS and delivers on port 25 from its own
    address, inside sink.test's SPF. The message's Message-ID, to follow it in the sink's
    log (`sink_delivery`). `bounce=False` asks for no bounce (DSN NOTIFY=NEVER): one to a
    domain without a reachable MX would sit in the sink's queue."""
    message_id = str(email.message_from_bytes(raw)["Message-ID"]).strip()
    path = f"/tmp/world-{uuid.uuid4().hex}.eml"
    assert net.sink.container is not None
    net.sink.container.put_archive("/", files_tar({path.lstrip("/"): (raw, 0o644)}))
    notify = "" if bounce else "-N never "
    code, out = net.sink.exec("sh", "-c", f"sendmail {notify}-f {sender} {ADMIN} < {path} "
                              f"&& rm {path}")
    assert code == 0, out
    return message_id


def sink_log(net: Net) -> str:
    assert net.sink.container is not None
    return str(net.sink.container.logs().decode(errors="replace"))


def sink_delivery(net: Net, message_id: str) -> str:
    """Waits until the sink's Postfix has finished with the message (`status=sent` or
    `status=bounced` in its log); that log line: the box's reply as the foreign MTA saw it."""
    found: list[str] = []

    def finished() -> str | None:
        log = sink_log(net).splitlines()
        queue_ids = {line.split(": message-id=")[0].rsplit(" ", 1)[-1] for line in log
                     if f"message-id={message_id}" in line}
        if not queue_ids:
            return f"the sink has not queued {message_id} yet"
        outcomes = [line for line in log
                    if any(f" {queue_id}: to=<" in line for queue_id in queue_ids)]
        final = [line for line in outcomes if "status=sent" in line or "status=bounced" in line]
        if final:
            found.append(final[-1])
            return None
        return (f"the sink has not finished with {message_id} yet: "
                f"{outcomes[-1] if outcomes else 'no delivery attempt'}")

    wait_until(f"the sink's Postfix to deliver or bounce {message_id}", finished,
               DELIVERY_TIMEOUT_S, interval=1)
    return found[0]


def refused_by_the_box(net: Net, message_id: str) -> str:
    """The box's 5xx reply to the sink's Postfix, which bounced the message."""
    line = sink_delivery(net, message_id)
    assert "status=bounced" in line and f"host {MAIL_HOST}[{net.ip}] said: " in line, line
    return line.split(" said: ", 1)[1].removesuffix(")")  # the status's own parenthesis


def spam_status(net: Net) -> dict[str, Any]:
    spam = spam_filter(net.app)
    assert spam["answering"], spam
    return spam


def rspamd_log(net: Net) -> str:
    """rspamd's last verdicts, for a failing test's message."""
    return check(net.app, "docker logs --tail 400 arkbox-mail 2>&1 | grep -E "
                          "'rspamd_task_write_log|milter' | tail -5")


def test_gtube_from_the_world_is_refused_and_its_junk_variant_filed_in_junk(net: Net) -> None:
    subject = f"gtube {uuid.uuid4().hex[:8]}"
    sent = send_from_the_world(net, FRIEND, world_message(FRIEND, subject, PROSE + GTUBE,
                                                          SINK_KEY))
    reply = refused_by_the_box(net, sent)
    assert reply.startswith("554 ") and "Gtube" in reply, reply
    assert "(in reply to end of DATA command)" in reply, reply
    print(f"\nthe box's reply to GTUBE, as the sink's Postfix saw it: {reply}")
    # The sink bounced it to its sender, quoting the box's reply.
    bounce = sink_message(net, subject)
    assert b"Gtube" in bounce, bounce[:3000]
    junk = f"junk {uuid.uuid4().hex[:8]}"
    send_from_the_world(net, FRIEND, world_message(FRIEND, junk, PROSE + GTUBE_JUNK, SINK_KEY))
    raw = fetch_imaps(net, junk, mailbox="Junk")
    assert b"X-Spam: Yes" in raw, raw[:1500]
    assert not mailbox_subjects(net, subject), "the refused GTUBE message was delivered"


def test_signed_mail_from_the_world_reaches_the_inbox_with_spf_dkim_dmarc_pass(net: Net
                                                                             ) -> None:
    subject = f"clean {uuid.uuid4().hex[:8]}"
    send_from_the_world(net, FRIEND, world_message(FRIEND, subject, key=SINK_KEY))
    parsed = email.message_from_bytes(fetch_imaps(net, subject))
    results = " ".join(str(h) for h in parsed.get_all("Authentication-Results") or [])
    for verdict in (MAIL_HOST, "dkim=pass", "spf=pass", "dmarc=pass"):
        assert verdict in results, (results, rspamd_log(net))
    assert str(parsed["X-Spam-Status"]).startswith("No"), parsed["X-Spam-Status"]


def test_mail_failing_a_dmarc_reject_policy_is_refused(net: Net) -> None:
    sender = f"boss@{STRICT}"
    subject = f"forged {uuid.uuid4().hex[:8]}"
    # Signed, but not with the key strict.test publishes; and sent from outside its SPF.
    raw = world_message(sender, subject, key=make_private_key())
    reply = refused_by_the_box(net, send_from_the_world(net, sender, raw, bounce=False))
    assert reply.startswith("554 "), reply
    assert "(in reply to end of DATA command)" in reply, reply
    print(f"\nthe box's reply to the forged strict.test message: {reply}")
    assert not mailbox_subjects(net, subject), "the refused forged message was delivered"


def mailbox_subjects(net: Net, subject: str) -> list[bytes]:
    """The admin's messages with `subject`, in any mailbox (none once refused)."""
    found: list[bytes] = []
    with imaplib.IMAP4_SSL(net.ip, 993, ssl_context=tls_context(net)) as imap:
        imap.login(ADMIN, PASSWORD)
        for mailbox in ("INBOX", "Junk"):
            imap.select(mailbox, readonly=True)
            _, numbers = imap.search(None, "SUBJECT", f'"{subject}"')
            found += numbers[0].split()
    return found


def move(net: Net, subject: str, source: str, target: str) -> None:
    with imaplib.IMAP4_SSL(net.ip, 993, ssl_context=tls_context(net)) as imap:
        imap.login(ADMIN, PASSWORD)
        imap.select(source)
        _, numbers = imap.search(None, "SUBJECT", f'"{subject}"')
        (number,) = numbers[0].split()
        code, reply = imap.copy(number, target)
        assert code == "OK", reply
        imap.store(number, "+FLAGS", "\\Deleted")
        imap.expunge()


def test_moving_into_junk_learns_spam_and_out_of_it_learns_ham(net: Net) -> None:
    subject = f"learn {uuid.uuid4().hex[:8]}"
    send_from_the_world(net, FRIEND, world_message(FRIEND, subject, key=SINK_KEY))
    fetch_imaps(net, subject)
    before = spam_status(net)
    move(net, subject, "INBOX", "Junk")

    def learned(kind: str, than: int) -> str | None:
        now = spam_status(net)[f"learned_{kind}"]
        return None if now > than else f"rspamd has learned {now} {kind} (was {than})"

    wait_until("rspamd to learn the message moved into Junk as spam",
               lambda: learned("spam", before["learned_spam"]), 60, interval=2)
    middle = spam_status(net)
    move(net, subject, "Junk", "INBOX")
    wait_until("rspamd to learn the message moved out of Junk as ham",
               lambda: learned("ham", middle["learned_ham"]), 60, interval=2)


def test_status_and_check_mail_report_the_spam_filter(net: Net) -> None:
    code, text = installer(net.app, "status")
    assert "spam filter: rspamd answers" in text, text
    code, report = check_mail(net, net.dns)
    (finding,) = [f for f in report["findings"] if f["check"] == "spam filter"]
    assert finding["level"] == "ok" and "learned" in finding["message"], finding
    # The mail container stopped: status says rspamd does not answer, check mail fails.
    check(net.app, "docker stop -t 20 arkbox-mail")
    try:
        spam = spam_filter(net.app)
        assert spam["answering"] is False and "does not answer" in spam["summary"], spam
        code, report = check_mail(net, net.dns)
        (finding,) = [f for f in report["findings"] if f["check"] == "spam filter"]
        assert finding["level"] == "fail" and "docker logs arkbox-mail" in finding["fix"]
        assert code == 1
    finally:
        check(net.app, "docker start arkbox-mail")
        wait_until("arkbox-mail healthy again", lambda: None if check(
            net.app, "docker inspect -f '{{.State.Health.Status}}' arkbox-mail").strip()
            == "healthy" else "not healthy yet", 120, interval=3)


def test_rspamd_starts_from_the_matchers_compiled_into_the_image(net: Net) -> None:
    # The image's copy (rspamd-precompile) is in the cache tmpfs, and rspamd used it: had
    # it compiled afresh, it would have rewritten the files (a new mtime; `cp -a` keeps the
    # image's). Same machine, same CPU as the image's build.
    listing = "cd {} && find . -type f -name '*.hs*' -printf '%P %s %T@\\n' | sort"
    seed = check(net.app, "docker exec arkbox-mail sh -c "
                          f"{sh_quote(listing.format('/usr/local/share/arkbox-rspamd-hs'))}")
    cache = check(net.app, "docker exec arkbox-mail sh -c "
                           f"{sh_quote(listing.format('/var/cache/rspamd'))}")
    assert seed.strip() and len(seed.splitlines()) >= 3, seed
    assert set(seed.splitlines()) <= set(cache.splitlines()), (seed, cache)
    spam_status(net)  # and it answers


# ---------------------------------------------------------------- postscreen and the login ban

POSTSCREEN_CACHE = "/run/postfix-data/postscreen_cache.db"


def listing_name(ip: str) -> str:
    return f"{'.'.join(reversed(ip.split('.')))}.{DNSBL}"


def listed(ip: str) -> str:
    """The DNSBL record naming `ip`."""
    return f"{listing_name(ip)}. 300 IN A 127.0.0.2\n"


def serve_listing(net: Net, zones: dict[str, str], ips: tuple[str, ...],
                  want_listed: bool) -> None:
    """Serve `zones`, then wait until nsd answers for `ips` as asked: postscreen must not
    hear the old zone. nsd reloads a zone file only when its time stamp changed, which two
    writes within one second may not do: the zones are written again until it answers."""
    served_at = 0.0

    def answered() -> str | None:
        nonlocal served_at
        if time.monotonic() - served_at > 3:
            net.dns.serve(zones)
            served_at = time.monotonic()
        wrong = [ip for ip in ips
                 if bool(net.resolver.query(listing_name(ip), "A")) != want_listed]
        state = "listed" if want_listed else "unlisted"
        return f"{wrong} not {state} yet" if wrong else None

    wait_until("the rig's DNSBL to answer as served", answered, 30, interval=0.5)


def forget_postscreen_verdicts(net: Net) -> None:
    """postscreen remembers a client's DNSBL verdict (up to the answer's TTL): start over."""
    check(net.app, f"docker exec arkbox-mail sh -c 'rm -f {POSTSCREEN_CACHE} && postfix reload'")


@contextlib.contextmanager
def dnsbl_listing(net: Net, *ips: str) -> Iterator[None]:
    """The rig's DNSBL lists `ips` while the body runs; afterwards it is empty again and
    postscreen has forgotten, so mail from them gets in (other tests need the sink's)."""
    zones = zones_from(net.records, net.sink.ip(4), net.ip)
    try:
        serve_listing(net, {**zones, DNSBL: zones[DNSBL] + "".join(listed(ip) for ip in ips)},
                      ips, want_listed=True)
        forget_postscreen_verdicts(net)
        yield
    finally:
        serve_listing(net, zones, ips, want_listed=False)
        forget_postscreen_verdicts(net)


@pytest.fixture
def sink_listed(net: Net) -> Iterator[Net]:
    with dnsbl_listing(net, net.sink.ip(4)):
        yield net


def test_a_dnsbl_listing_the_foreign_mta_is_refused_at_postscreen(sink_listed: Net) -> None:
    net = sink_listed
    subject = f"listed {uuid.uuid4().hex[:8]}"
    code, out = net.sink.exec("sh", "-c", f"printf 'From: {FRIEND}\\nTo: postmaster@arkbox.test"
                              f"\\nSubject: {subject}\\n\\nhi\\n' | sendmail -f {FRIEND} "
                              "postmaster@arkbox.test")
    assert code == 0, out
    try:
        bounce = sink_message(net, subject)  # the sink's bounce to the sender quotes the subject
    except Exception:
        assert net.sink.container is not None
        print(net.sink.exec("postqueue", "-p")[1],
              net.sink.container.logs(tail=60).decode(errors="replace"),
              check(net.app, "docker logs --since 5m arkbox-mail 2>&1 | tail -60"))
        raise
    assert b"blocked using dnsbl.test" in bounce, bounce[:3000]
    reply = next(line for line in bounce.decode(errors="replace").splitlines()
                 if "blocked using" in line)
    print(f"\npostscreen's reply to the listed sink: {reply.strip()}")
    logs = check(net.app, "docker logs --since 5m arkbox-mail 2>&1 | grep postscreen")
    assert f"DNSBL rank 3 for [{net.sink.ip(4)}]" in logs, logs[-3000:]


@pytest.fixture
def dns_silent(net: Net) -> Iterator[Net]:
    """The test process is listed, and the rig's DNS server is frozen (it receives and never
    answers: every lookup of the box times out). Afterwards it answers again, lists nobody,
    and postscreen has forgotten its verdicts."""
    assert net.dns.container is not None
    with dnsbl_listing(net, host_address(net.rig)):
        net.dns.container.pause()
        try:
            forget_postscreen_verdicts(net)
            yield net
        finally:
            net.dns.container.reload()
            if net.dns.container.status == "paused":
                net.dns.container.unpause()


def deliver_on_25(net: Net, subject: str) -> tuple[int, bytes]:
    """A bounce-style message (null sender: no sender domain to look up) to postmaster@
    from the test process; the reply to RCPT, or DATA's when RCPT was taken."""
    with smtplib.SMTP(net.ip, 25, timeout=120) as smtp:
        smtp.ehlo("mx.outside.test")
        smtp.mail("<>")
        code, reply = smtp.rcpt("postmaster@arkbox.test")
        if code >= 400:
            return code, reply
        return smtp.data(f"To: postmaster@arkbox.test\r\nSubject: {subject}\r\n\r\nhi\r\n")


def test_a_dnsbl_that_does_not_answer_never_blocks_mail(dns_silent: Net) -> None:
    net = dns_silent
    started = time.monotonic()
    code, reply = deliver_on_25(net, f"dns silent {uuid.uuid4().hex[:8]}")
    took = time.monotonic() - started
    print(f"\nlisted client, DNSBL not answering: {code} {reply.decode(errors='replace')} "
          f"after {took:.0f} s")
    assert code == 250, (code, reply)
    # The same listing, answered: refused. (The list would have blocked it.)
    assert net.dns.container is not None
    net.dns.container.unpause()
    forget_postscreen_verdicts(net)
    code, reply = deliver_on_25(net, f"dns answers {uuid.uuid4().hex[:8]}")
    print(f"listed client, DNSBL answering: {code} {reply.decode(errors='replace')}")
    assert code == 550 and b"blocked using dnsbl.test" in reply, (code, reply)
    net.dns.container.pause()  # the fixture unpauses


IMAP_LOGIN = """
import imaplib, ssl, sys
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
try:
    imap = imaplib.IMAP4_SSL(sys.argv[1], 993, ssl_context=context, timeout=60)
except OSError as e:
    print("connect:", e); sys.exit(3)
try:
    imap.login(sys.argv[2], sys.argv[3])
except imaplib.IMAP4.error as e:
    print("refused:", e); sys.exit(1)
print("logged in"); imap.logout()
"""


def imap_login_from(part: RigContainer, net: Net, password: str) -> tuple[int, str]:
    """An IMAPS login to the box from inside `part`: 0 in, 1 refused, 3 no connection."""
    return part.exec("timeout", "90", "python3", "-c", IMAP_LOGIN, net.ip, ADMIN, password)


def mail_bans(net: Net) -> dict[str, dict[str, Any]]:
    _, out = installer(net.app, "status --json")
    data = json.loads(out[out.index("{"):])
    return {ban["address"]: ban for ban in data["mail_bans"]["bans"]}


@pytest.fixture(scope="module")
def guesser(net: Net) -> RigContainer:
    """A client on the rig (not the test process: a ban of it would cut the tests off)."""
    return add_client(net.rig, the_client_image())


@pytest.fixture
def guesser_unbanned(net: Net, guesser: RigContainer) -> Iterator[RigContainer]:
    installer(net.app, f"mail unban {guesser.ip(4)}")
    yield guesser
    installer(net.app, f"mail unban {guesser.ip(4)}")


def test_repeated_failed_imap_logins_ban_the_address(net: Net,
                                                     guesser_unbanned: RigContainer) -> None:
    client = guesser_unbanned
    address = client.ip(4)
    assert imap_login_from(client, net, PASSWORD)[0] == 0  # it may log in before
    started = time.monotonic()
    for attempt in range(BAN_AFTER):
        code, out = imap_login_from(client, net, "wrong password")
        assert code == 1, (attempt, out)
    last_failure = time.monotonic()

    def banned() -> str | None:
        return None if address in mail_bans(net) else "not banned yet"

    wait_until(f"a ban of {address}", banned, 60, interval=1)
    print(f"\n{BAN_AFTER} failed IMAP logins took {last_failure - started:.0f} s; banned "
          f"{time.monotonic() - last_failure:.1f} s after the last")
    ban = mail_bans(net)[address]
    assert ban["failures"] >= BAN_AFTER and ban["service"] == "imap", ban
    assert 19 * 60 <= ban["left_s"] <= 20 * 60, ban  # ban_time 20m in this module's config
    code, text = installer(net.app, "status")
    assert "mail bans" in text and address in text, text
    # The banned address reaches no mail port; others are unaffected: the test process
    # logs in, and the sink still reaches port 25.
    assert imap_login_from(client, net, PASSWORD)[0] == 3
    for port in (25, 587):
        code, out = client.exec("timeout", "5", "bash", "-c", f"exec 3<>/dev/tcp/{net.ip}/{port}")
        assert code != 0, (port, out)
    with imaplib.IMAP4_SSL(net.ip, 993, ssl_context=tls_context(net), timeout=60) as imap:
        assert imap.login(ADMIN, PASSWORD)[0] == "OK"
    code, out = net.sink.exec("timeout", "5", "bash", "-c", f"exec 3<>/dev/tcp/{net.ip}/25")
    assert code == 0, out
    # The ban is lifted by the command, and the address logs in again.
    code, out = installer(net.app, f"mail unban {address}")
    assert code == 0 and "ban lifted" in out, out
    assert address not in mail_bans(net)
    assert imap_login_from(client, net, PASSWORD)[0] == 0
    code, out = installer(net.app, f"mail unban {address}")
    assert code == 1 and "was not banned" in out, out
    code, out = installer(net.app, "mail unban not-an-address")
    assert code == 2, out
