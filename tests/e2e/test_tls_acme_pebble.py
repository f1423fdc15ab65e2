"""Issue 6, end to end: certificates from Pebble (Debian's test ACME CA) in the container rig.

One appliance boot for the whole module. Each test asks a fixture for the state it needs,
so it passes alone, first, or after any other (issue 21):

1. `first_boot`: the box booted with the CA unreachable (no Pebble on the network yet),
   and what it said then: the fallback serves, status says why;
2. `first_issuance`: Pebble appears (default 5% badNonce rejection, 90-day certificates)
   and pebble-challtestsrv resolves every host name to the appliance: the box's move from
   the fallback to one certificate for all names, with nginx only reloaded;
   `long_lived_certificate` brings that Pebble and a certificate from it back when a test
   before switched to the short-lived one;
3. sslyze (host venv) checks 443 against Mozilla's intermediate profile (on the 90-day
   certificate);
4. `short_lived_ca`: a second Pebble rejects 50% of nonces and issues 2-minute
   certificates: issuance still succeeds (the client retries badNonce);
5. `short_lived_certificate`: a fresh 2-minute certificate; when a third of that lifetime
   is left, `renew` renews; a client loop runs through the reload without one failed
   handshake.

The renewal timer is stopped once the first background attempt is recorded: from then
on the tests drive renewal themselves.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from rig_fixtures import (
    CACHE_DIR,
    DEFAULT_CONFIG,
    INSTALLER,
    ROUTES,
    SUBNET_SHIFT_ENV,
    ClientContainer,
    admin_key,
    appliance_image,
    check,
    config_with,
    dump,
    installer,
    new_rig,
    sh,
    the_client_image,
)

from builder.rig.parts import ApplianceContainer, Rig, files_tar, wait_until
from builder.rig.pebble import TestCAContainer, https_identity, pebble_image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
OCTET = 160
# The fixed address in the rig's subnet, which new_rig shifts by SUBNET_SHIFT_ENV.
APPLIANCE_IP = f"172.30.{OCTET + int(os.environ.get(SUBNET_SHIFT_ENV, '0'))}.10"
CA_BUNDLE = "pebble-https-ca.pem"  # next to /etc/arkbox/appliance.yaml
ROOT_IN_CLIENT = "/tmp/pebble-root.pem"
LIVE = "/srv/arkbox/tls/live"
NAMES = ["arkbox.test", "autoconfig.arkbox.test", "autodiscover.arkbox.test",
         "cal.arkbox.test", "mail.arkbox.test", "mta-sts.arkbox.test", "webmail.arkbox.test",
         "wiki.arkbox.test"]
NINETY_DAYS_S = 90 * 86400
SHORT_LIFETIME_S = 120
# Pebble's own HTTPS (its directory): the appliance trusts this CA through tls.ca_bundle.
PEBBLE_HTTPS = https_identity(["pebble", "localhost"])


# The two CAs the tests use: (badNonce percent, certificate lifetime).
LONG_LIVED_CA = (5, NINETY_DAYS_S)
SHORT_LIVED_CA = (50, SHORT_LIFETIME_S)


@dataclass
class FirstBoot:
    """What the box said right after first boot with the CA unreachable, before any test
    changed it (the state happens once per box: later tests bring a CA)."""

    renew_state: dict[str, object]
    certificate_info: dict[str, object]
    status: str
    failed_units: list[str]


@dataclass
class TlsBox:
    rig: Rig
    app: ApplianceContainer
    client: ClientContainer
    first_boot: FirstBoot
    pebble: TestCAContainer | None = None
    pebble_settings: tuple[int, int] | None = None  # the running Pebble's (percent, lifetime)

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(check(self.app, f"cat {LIVE}/fullchain.pem")
                                              .encode())

    def start_pebble(self, settings: tuple[int, int]) -> TestCAContainer:
        """A new Pebble (a new root) in place of the running one, if any."""
        nonce_reject_percent, validity_seconds = settings
        if self.pebble is not None:
            assert self.pebble.container is not None
            self.pebble.container.remove(force=True)
            self.pebble, self.pebble_settings = None, None
        pebble = TestCAContainer(self.rig, "pebble", pebble_image(ROOT, CACHE_DIR),
                                 aliases=["pebble"], https=PEBBLE_HTTPS,
                                 nonce_reject_percent=nonce_reject_percent,
                                 validity_seconds=validity_seconds)
        self.rig.add(pebble)
        for name in NAMES:
            pebble.add_a(name, APPLIANCE_IP)
        self.pebble, self.pebble_settings = pebble, settings
        root = pebble.root_pem()
        assert self.client.container is not None
        self.client.container.put_archive("/", files_tar({ROOT_IN_CLIENT: (root, 0o644)}))
        return pebble

    def ensure_pebble(self, settings: tuple[int, int]) -> None:
        if self.pebble_settings != settings:
            self.start_pebble(settings)

    def served_by_running_pebble(self) -> bool:
        """Whether the live certificate was issued by the Pebble now running (a new Pebble
        has a new root: the client can verify only its certificates)."""
        code, _ = curl_https(self, "wiki.arkbox.test")
        return self.pebble is not None and code == 0


@pytest.fixture(scope="module")
def tls_box(docker_engine: None) -> Iterator[TlsBox]:
    rig = new_rig("tls", OCTET)
    image = appliance_image(rig)
    client_image = the_client_image()
    pebble_image(ROOT, CACHE_DIR)  # built before the boot, so the boot is not slowed by it
    config = config_with(admin_key(), {"tls": {
        "acme_directory": "https://pebble:14000/dir",
        "contact_email": "admin@arkbox.test",
        "ca_bundle": CA_BUNDLE,
    }})
    with rig.running():
        app = ApplianceContainer(rig, "appliance", image, aliases=["arkbox.test"],
                            config=dump(config), seed_config=DEFAULT_CONFIG,
                            ipv4_address=APPLIANCE_IP, boot_timeout=420,
                            files={f"/etc/arkbox/{CA_BUNDLE}": (PEBBLE_HTTPS.ca_pem, 0o600)})
        rig.add(app)
        started = time.monotonic()
        app.wait_first_boot(timeout=420)
        print(f"\nfirst boot (CA unreachable): {time.monotonic() - started:.1f} s")
        # The background request runs after first boot and fails: wait for its record.
        wait_until("the first background request", lambda: None if renew_state(app).get(
            "failures") else "not attempted yet", 180, interval=2)
        first = FirstBoot(renew_state(app), app.read_json(f"{LIVE}/certificate.json"),
                          installer(app, "status")[1], app.failed_units())
        # The tests drive renewal themselves from here on: no timer run in between.
        check(app, "systemctl stop arkbox-tls-renew.timer")
        client = ClientContainer(rig, "client", client_image)
        rig.add(client)
        yield TlsBox(rig, app, client, first)


@dataclass
class Issuance:
    """The box's move from the fallback to its first ACME certificate."""

    code: int
    out: str
    proxy_before: str
    proxy_after: str


@pytest.fixture(scope="module")
def first_issuance(tls_box: TlsBox) -> Issuance:
    """Pebble appears and `renew` replaces the fallback: once per box, for whichever test
    first needs a certificate from a CA."""
    app = tls_box.app
    assert tls_box.first_boot.certificate_info["source"] == "fallback"
    tls_box.start_pebble(LONG_LIVED_CA)
    before = proxy_identity(app)
    started = time.monotonic()
    code, out = installer(app, "renew")
    print(f"\nissuance from Pebble: {time.monotonic() - started:.1f} s")
    return Issuance(code, out, before, proxy_identity(app))


@pytest.fixture
def long_lived_certificate(tls_box: TlsBox, first_issuance: Issuance) -> TlsBox:
    """The 90-day Pebble runs and the box serves a certificate from it (nothing to do
    unless a test before switched to the short-lived CA)."""
    tls_box.ensure_pebble(LONG_LIVED_CA)
    if not tls_box.served_by_running_pebble():
        code, out = installer(tls_box.app, "renew --force")
        assert code == 0, out[-3000:]
    return tls_box


@pytest.fixture
def short_lived_ca(tls_box: TlsBox, first_issuance: Issuance) -> TlsBox:
    """The Pebble that rejects half the nonces and issues 2-minute certificates runs."""
    tls_box.ensure_pebble(SHORT_LIVED_CA)
    return tls_box


@pytest.fixture
def short_lived_certificate(short_lived_ca: TlsBox) -> TlsBox:
    """A 2-minute certificate issued just now (whatever the box served before), so a test
    sees its whole lifetime."""
    code, out = installer(short_lived_ca.app, "renew --force")
    assert code == 0 and "renewed: new certificate" in out, out[-3000:]
    return short_lived_ca


def renew_state(app: ApplianceContainer) -> dict[str, object]:
    state: dict[str, object] = app.read_json("/var/lib/arkbox/tls-renew.json") or {}
    return state


def curl_https(box: TlsBox, host: str, path: str = "/") -> tuple[int, str]:
    """curl from the client, trusting only Pebble's root (no -k anywhere)."""
    return box.client.exec("curl", "-sS", "--max-time", "20", "--cacert", ROOT_IN_CLIENT,
                           "--resolve", f"{host}:443:{APPLIANCE_IP}", f"https://{host}{path}")


def proxy_identity(app: ApplianceContainer) -> str:
    """The proxy container's ID, start time and nginx master PID: equal after a reload."""
    return check(app, "c=$(docker ps -q --filter label=arkbox.role=proxy); "
                      "docker inspect --format '{{.Id}} {{.State.StartedAt}} {{.State.Pid}}' $c")


# ---------------------------------------------------------------- 1. CA unreachable


def test_ca_unreachable_at_first_boot_fallback_serves_and_status_says_why(tls_box: TlsBox
                                                                           ) -> None:
    app, first = tls_box.app, tls_box.first_boot
    # The background request ran after first boot and failed: recorded, not a failed unit.
    assert first.renew_state.get("failures"), first.renew_state
    info = first.certificate_info
    assert info["source"] == "fallback"
    assert str(info["reason"]).startswith("the ACME CA is unreachable (CA: "
                                          "https://pebble:14000/dir: "), info
    shown = first.status
    assert "certificate: fallback (self-signed)" in shown and "the ACME CA is unreachable" in \
        " ".join(shown.split()), shown
    assert "next attempt" in shown
    assert "arkbox-tls-renew.service" not in first.failed_units
    assert "arkbox-tls-renew.service" not in app.failed_units()
    assert check(app, "systemctl is-enabled arkbox-tls-renew.timer").strip() == "enabled"
    # The frozen installer carries the ACME code.
    code, helptext = sh(app, f"{INSTALLER} renew --help")
    assert code == 0 and "--scheduled" in helptext, helptext


# ---------------------------------------------------------------- 2. a later retry


def test_a_later_retry_gets_one_certificate_for_all_names_and_only_reloads_nginx(
        first_issuance: Issuance, long_lived_certificate: TlsBox) -> None:
    tls_box = long_lived_certificate
    app = tls_box.app
    code, out = first_issuance.code, first_issuance.out
    assert code == 0, out
    assert "renewed: new certificate for " + " ".join(NAMES) in " ".join(out.split()), out
    assert "reloaded proxy (nginx reloaded)" in out, out
    assert first_issuance.proxy_after == first_issuance.proxy_before, \
        "the proxy was restarted, not reloaded"
    info = app.read_json(f"{LIVE}/certificate.json")
    assert info["source"] == "acme" and info["names"] == NAMES, info
    modes = check(app, "stat -c %a /srv/arkbox/secrets/acme /srv/arkbox/secrets/acme/"
                       "account-key.pem").split()
    assert modes == ["700", "600"], modes
    for host, (path, marker) in ROUTES.items():
        code, page = curl_https(tls_box, host, path)
        assert code == 0 and marker in page, f"{host}: {page[:300]}"
    data = app.read_json("/var/lib/arkbox/tls-renew.json")
    assert data["failures"] == 0 and data["last_success"], data
    code, shown = installer(app, "status --json")
    assert '"source": "acme"' in shown
    # Not due again: the next run says so and changes nothing.
    code, out = installer(app, "renew")
    assert code == 0 and "not due: certificate valid until" in out, out


# ---------------------------------------------------------------- 3. Mozilla intermediate


def test_sslyze_mozilla_intermediate_profile_passes(long_lived_certificate: TlsBox,
                                                    tmp_path: Path) -> None:
    from sslyze.mozilla_tls_profile.tls_config_checker import (
        SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        MozillaTlsConfiguration,
        ServerNotCompliantWithTlsConfiguration,
        TlsConfigurationEnum,
        check_server_against_tls_configuration,
    )
    from sslyze.plugins.certificate_info.implementation import CertificateInfoExtraArgument
    from sslyze.scanner.models import ScanCommandsExtraArguments, ServerScanRequest
    from sslyze.scanner.scanner import Scanner
    from sslyze.server_setting import ServerNetworkConfiguration, ServerNetworkLocation

    tls_box = long_lived_certificate
    assert tls_box.pebble is not None
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(tls_box.pebble.root_pem())
    request = ServerScanRequest(
        server_location=ServerNetworkLocation("wiki.arkbox.test", 443, ip_address=APPLIANCE_IP),
        network_configuration=ServerNetworkConfiguration("wiki.arkbox.test"),
        scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=root)),
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    (result,) = list(scanner.get_results())
    try:
        check_server_against_tls_configuration(
            result, MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE))
    except ServerNotCompliantWithTlsConfiguration as err:
        pytest.fail(f"not Mozilla intermediate: {err.issues}")


# ---------------------------------------------------------------- 4. 50% badNonce


def test_issuance_succeeds_with_half_the_nonces_rejected(short_lived_ca: TlsBox) -> None:
    tls_box = short_lived_ca
    app = tls_box.app
    code, out = installer(app, "renew --force -v")
    assert code == 0, out[-3000:]
    assert "renewed: new certificate" in out, out[-3000:]
    # Rejected nonces did happen, and were retried (more than acme's one retry allows for).
    assert out.count("badNonce from the CA, retrying") >= 2, out[-3000:]
    lifetime = tls_box.certificate().not_valid_after_utc - tls_box.certificate(
    ).not_valid_before_utc
    assert lifetime.total_seconds() <= SHORT_LIFETIME_S + 1
    code, page = curl_https(tls_box, "wiki.arkbox.test")  # the new Pebble's root
    assert code == 0 and "[DokuWiki]" in page, page[:300]


# ---------------------------------------------------------------- 5. renewal


def test_renewal_at_a_third_left_serves_the_new_certificate_without_failed_handshakes(
        short_lived_certificate: TlsBox) -> None:
    tls_box = short_lived_certificate
    app, client = tls_box.app, tls_box.client
    old = tls_box.certificate()
    code, out = installer(app, "renew")
    assert code == 0 and "not due" in out, out  # two thirds of 2 minutes are not over yet
    lifetime = old.not_valid_after_utc - old.not_valid_before_utc
    due_at = old.not_valid_after_utc - lifetime / 3
    wait_until("a third of the lifetime left",
               lambda: None if datetime.now(UTC) > due_at else f"due at {due_at:%H:%M:%S}",
               SHORT_LIFETIME_S, interval=1)
    # A client loop through the renewal: every request must complete its handshake.
    loop = ("i=0; while [ ! -e /tmp/stop ] && [ $i -lt 2000 ]; do i=$((i+1)); "
            f"curl -sS -o /dev/null -w '%{{http_code}}\\n' --max-time 10 --cacert {ROOT_IN_CLIENT}"
            f" --resolve wiki.arkbox.test:443:{APPLIANCE_IP} https://wiki.arkbox.test/ "
            ">> /tmp/loop.log 2>&1 || echo FAILED >> /tmp/loop.log; done; "
            "echo END >> /tmp/loop.log")
    assert client.container is not None
    client.container.exec_run(["sh", "-c", "rm -f /tmp/stop /tmp/loop.log; " + loop],
                              detach=True)
    wait_until("the client loop", lambda: None if check(
        client, "cat /tmp/loop.log 2>/dev/null | wc -l").strip() not in ("", "0")
        else "no request yet", 30, interval=0.5)
    code, out = installer(app, "renew")
    assert code == 0 and "renewed: new certificate" in out, out
    assert "less than a third of its lifetime is left" in out, out
    time.sleep(2)  # let the loop run a few requests against the reloaded nginx
    check(client, "touch /tmp/stop")
    wait_until("the loop to end", lambda: None if "END" in check(client, "cat /tmp/loop.log")
               else "running", 30, interval=0.5)
    results = check(client, "cat /tmp/loop.log").split()
    assert results[-1] == "END"
    answers = results[:-1]
    print(f"\n{len(answers)} requests through the renewal, all answered")
    assert len(answers) >= 5, answers
    assert set(answers) == {"200"}, [a for a in answers if a != "200"][:10]
    new = tls_box.certificate()
    assert new.serial_number != old.serial_number
    served = check(client, "echo | openssl s_client -connect "
                           f"{APPLIANCE_IP}:443 -servername wiki.arkbox.test 2>/dev/null "
                           "| openssl x509 -noout -serial").strip()
    assert int(served.removeprefix("serial="), 16) == new.serial_number, served
