"""Issue 7, end to end: the appliance's mail server on a small internet of its own.

One rig (172.30.170.0/24), one appliance boot for the whole module:

* `dns`: nsd serving the zone `arkbox-installer dns` prints (plus the PTR the provider
  would set, the foreign domain sink.test and an empty DNS blocklist zone);
* `dns-bad`: the same zone with a wrong DKIM key and without the DMARC record;
* `sink`: a foreign Postfix for sink.test, delivering into a Maildir;
* the appliance, booted with config/default.yaml; its resolver forwards to `dns`.

The pytest process itself is the mail client (SMTP, IMAP, sslyze): the host reaches the
rig's addresses directly.
"""

from __future__ import annotations

import email
import http.client
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
from restore_checks import imaps_message
from rig_fixtures import (
    BOOT_TIMEOUT_S,
    CACHE_DIR,
    DEFAULT_CONFIG,
    FULLCHAIN,
    ROOT,
    admin_key,
    appliance_image,
    check,
    config_with,
    dump,
    installer,
    new_rig,
    status,
    step_states,
)

from builder.rig.dns import NSD_CONF
from builder.rig.parts import AppliancePart, Part, Rig, rig_image, wait_until
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
SINK_MAILDIR = "/var/mail/vhosts/sink/new"
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
"""


@dataclass
class DnsPart(Part):
    """nsd on the rig, serving the zones laid into /etc/nsd/zones."""

    def wait_ready(self) -> None:
        super().wait_ready()
        wait_until("nsd", lambda: None if self.exec("nsd-control", "-c", "/etc/nsd/nsd.conf",
                                                    "status")[0] == 0 else "not answering", 60)

    def serve(self, zones: dict[str, str]) -> None:
        files = {f"/etc/nsd/zones/{name}.zone": (text.encode(), 0o644)
                 for name, text in zones.items()}
        conf = NSD_CONF + "".join(f"zone:\n    name: {name}\n    zonefile: {name}.zone\n"
                                  for name in sorted(zones))
        files["/etc/nsd/nsd.conf"] = (conf.encode(), 0o644)
        assert self.container is not None
        from builder.rig.parts import files_tar

        self.container.put_archive("/", files_tar(files))
        code, out = self.exec("sh", "-c", "nsd-checkconf /etc/nsd/nsd.conf && for z in "
                              "/etc/nsd/zones/*.zone; do n=$(basename $z .zone); "
                              "nsd-checkzone $n $z || exit 1; done && "
                              "nsd-control -c /etc/nsd/nsd.conf reconfig && "
                              "nsd-control -c /etc/nsd/nsd.conf reload")
        assert code == 0, out


@dataclass
class ResolvingPart(Part):
    """A part whose resolver forwards to the rig's DNS server."""

    dns: list[str] | None = None

    def run_kwargs(self) -> dict[str, Any]:
        return {**super().run_kwargs(), "dns": self.dns}


@dataclass
class MailAppliancePart(AppliancePart):
    dns: list[str] | None = None

    def run_kwargs(self) -> dict[str, Any]:
        return {**super().run_kwargs(), "dns": self.dns}


@dataclass
class Net:
    rig: Rig
    app: AppliancePart
    dns: DnsPart
    dns_bad: DnsPart
    sink: ResolvingPart
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
    sink = soa("sink.test") + f"@ IN MX 10 mx\nmx IN A {sink_ip}\n"
    return {"arkbox.test": arkbox, reverse_origin: reverse, "sink.test": sink,
            DNSBL: soa(DNSBL)}


@pytest.fixture(scope="module")
def net(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    rig = new_rig("mail", RIG_OCTET)
    app_image = appliance_image(rig)
    internet = rig_image(ROOT, CACHE_DIR, "rig-internet")
    with rig.running():
        dns = DnsPart(rig, "dns", internet, command=["dns"],
                      files={"/etc/nsd/nsd.conf": (NSD_CONF.encode(), 0o644)})
        rig.add(dns)
        dns_bad = DnsPart(rig, "dns-bad", internet, command=["dns"],
                          files={"/etc/nsd/nsd.conf": (NSD_CONF.encode(), 0o644)})
        rig.add(dns_bad)
        sink = ResolvingPart(rig, "sink", internet, aliases=["mx-sink"], command=["sink"],
                             files={"/etc/postfix/main.cf": (SINK_MAIN_CF.encode(), 0o644)},
                             dns=[dns.ip(4)])
        rig.add(sink)
        config = config_with(admin_key())
        app = MailAppliancePart(rig, "appliance", app_image, aliases=["arkbox-mail-box"],
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


def fetch_imaps(net: Net, subject: str) -> bytes:
    """The raw message with `subject` in the admin's INBOX (waits for delivery)."""
    return imaps_message(net.ip, tls_context(net), ADMIN, PASSWORD, subject,
                         timeout=DELIVERY_TIMEOUT_S, interval=2, readonly=False)


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


def check_mail(net: Net, dns: DnsPart) -> tuple[int, dict[str, Any]]:
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
            "tls-rpt arkbox.test", f"dnsbl {DNSBL}", "outbound port 25 (mx.sink.test)"} <= checks


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
