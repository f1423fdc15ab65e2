"""Issue 16 (3), end to end: the status page in a real browser against the booted box.

One rig: the appliance (the built root fs with systemd), its backup server, and Pebble as
the ACME CA, so the box serves a certificate from a CA and Debian's Chromium, driven by
Playwright, trusts exactly that test CA (an NSS database of its own; no flag that ignores
certificate errors). The browser runs on the test machine and reaches the box at the
rig's address over HTTPS, the box's host name mapped to it.

The browser flow is one test, in the order a person meets the page (the lock-out at the
end would refuse every later login from this machine's address).
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from restore_checks import wait_first_boot_or_failure
from rig_fixtures import (
    CACHE_DIR,
    DEFAULT_CONFIG,
    SUBNET_SHIFT_ENV,
    admin_key,
    appliance_image,
    check,
    installer,
    load_json,
    sh,
)
from status_page_checks import PASSWORD, series_marks

from builder.rig.parts import ApplianceContainer, BackupServerContainer, image_from_rootfs_tar
from builder.rig.pebble import TestCAContainer, https_identity, pebble_image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
OCTET = 194
# The fixed address in the rig's subnet, which new_rig shifts by SUBNET_SHIFT_ENV.
APPLIANCE_IP = f"172.30.{OCTET + int(os.environ.get(SUBNET_SHIFT_ENV, '0'))}.10"
HOST = "arkbox.test"
ORIGIN = f"https://{HOST}"
CHROMIUM = "/usr/bin/chromium"
CA_BUNDLE = "pebble-https-ca.pem"
NAMES = ["arkbox.test", "autoconfig.arkbox.test", "autodiscover.arkbox.test",
         "cal.arkbox.test", "mail.arkbox.test", "mta-sts.arkbox.test", "webmail.arkbox.test",
         "wiki.arkbox.test"]
SECTIONS = ("services", "certificate", "backups", "drills", "mail", "ports", "host", "run")
BACKUPS_MADE = 2
PEBBLE_HTTPS = https_identity(["pebble", "localhost"])


@dataclass
class Box:
    app: ApplianceContainer
    backups_made: int
    failed_runs: int
    ca_root: bytes


@pytest.fixture(scope="module")
def box(docker_engine: None) -> Iterator[Box]:
    from built import built_backup_server
    from rig_fixtures import rig_up

    config: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["appliance"]["admin"]["ssh_keys"] = [admin_key()]
    config["tls"] = {"acme_directory": "https://pebble:14000/dir",
                     "contact_email": "admin@arkbox.test", "ca_bundle": CA_BUNDLE}
    with rig_up("statuspage", OCTET) as rig:
        image = appliance_image(rig)
        server_image = image_from_rootfs_tar(rig.client, built_backup_server(),
                                             "arkbox/backup-server-role")
        server = BackupServerContainer(rig, "backup", server_image, aliases=("backup.arkbox.test",))
        rig.add(server)
        pebble = TestCAContainer(rig, "pebble", pebble_image(ROOT, CACHE_DIR), aliases=["pebble"],
                            https=PEBBLE_HTTPS)
        rig.add(pebble)
        for name in NAMES:
            pebble.add_a(name, APPLIANCE_IP)
        app = ApplianceContainer(rig, "appliance", image, aliases=[HOST],
                            config=yaml.safe_dump(config, sort_keys=False),
                            seed_config=DEFAULT_CONFIG, ipv4_address=APPLIANCE_IP,
                            boot_timeout=420,
                            files={f"/etc/arkbox/{CA_BUNDLE}": (PEBBLE_HTTPS.ca_pem, 0o600)})
        rig.add(app)
        status = wait_first_boot_or_failure(app, timeout=900)
        assert status["result"] == "ok", status["failures"]
        code, out = installer(app, "renew")  # waits for the background request, if running
        assert code == 0, out[-3000:]
        for _ in range(BACKUPS_MADE):
            code, out = installer(app, "backup")
            assert code == 0, out[-3000:]
        # One failed run, to be marked in the plot: the backup server is away.
        assert server.container is not None
        server.container.stop(timeout=5)
        code, out = installer(app, "backup")
        assert code != 0, out[-3000:]
        server.container.start()
        yield Box(app, BACKUPS_MADE, 1, pebble.root_pem())


@pytest.fixture
def chromium_home(tmp_path: Path, box: Box) -> Path:
    """A HOME whose NSS database (where Chromium on Linux looks) trusts Pebble's root."""
    home = tmp_path / "home"
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(box.ca_root)
    for argv in (["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"],
                 ["certutil", "-d", f"sql:{nssdb}", "-A", "-n", "arkbox-test-ca", "-t", "C,,",
                  "-i", str(root)]):
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return home


# Chromium drops a request in flight when the host's network interfaces change, as they do
# while the rig's bridges and veths come and go on this host.
NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"


def goto(page: Any, url: str, **kwargs: Any) -> Any:
    """page.goto, once more (up to 3 tries) when Chromium dropped it for NETWORK_CHANGED;
    any other error fails at once."""
    from playwright.sync_api import Error

    for attempt in range(3):
        try:
            return page.goto(url, **kwargs)
        except Error as err:
            if NETWORK_CHANGED not in str(err) or attempt == 2:
                raise
            print(f"{url}: {NETWORK_CHANGED}, again")
    raise AssertionError("unreachable")


def test_status_page_in_chromium(box: Box, chromium_home: Path) -> None:
    from built import BUILD_OUT
    from playwright.sync_api import sync_playwright

    from firstboot.statuspage.app import CACHE_S
    from firstboot.statuspage.charts import FAILED_SERIES, SIZE_SERIES

    requests: list[str] = []
    problems: list[tuple[str, str]] = []  # (console text, the URL it is about)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", f"--host-resolver-rules=MAP {HOST} {APPLIANCE_IP}"],
            env={**os.environ, "HOME": str(chromium_home)})
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: problems.append((f"{m.type}: {m.text}",
                                                      m.location.get("url", "")))
                if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append((f"page error: {e}", "")))
        page.on("requestfailed", lambda r: problems.append((f"failed: {r.failure}", r.url)))

        # No data without a login: the page sends to the form, the data answers 401.
        response = goto(page, f"{ORIGIN}/")
        assert response is not None and page.url == f"{ORIGIN}/login"
        assert response.status == 200 and "arkbox-wiki" not in page.content()
        for path in ("/status.json", "/metrics", "/plots/backups.svg"):
            refused = goto(page, f"{ORIGIN}{path}")
            assert refused is not None and refused.status == 401, path
            assert "arkbox-wiki" not in refused.text() and "arkbox-" not in refused.text()
        # The headers a person cannot see.
        login = goto(page, f"{ORIGIN}/login")
        assert login is not None
        headers = login.headers
        assert headers["content-security-policy"].startswith("default-src 'none'")
        assert headers["strict-transport-security"] == "max-age=63072000"

        # A wrong password is refused.
        page.fill("#password", "not the password")
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.url == f"{ORIGIN}/login"
        assert "Wrong password (4 tries left" in page.inner_text("#login-message")

        # The right one: every section, the plots, the same data as status --json.
        page.fill("#password", PASSWORD)
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.url == f"{ORIGIN}/"
        # Timed once the data's cache has expired (the server collects status anew), and
        # again within it.
        time.sleep(CACHE_S + 1)
        started = time.monotonic()
        goto(page, f"{ORIGIN}/", wait_until="load")
        load_s = time.monotonic() - started
        started = time.monotonic()
        goto(page, f"{ORIGIN}/", wait_until="load")
        cached_s = time.monotonic() - started
        for section in SECTIONS:
            assert page.locator(f"section#{section} h2").is_visible(), section
        text = page.inner_text("main")
        for expected in ("arkbox-wiki", "arkbox-proxy", "issued by", "Pebble",
                         "open: 22(admin) 80 443 25 465 587 993"):
            assert expected in text, expected
        assert page.locator("#drill-plot").count() == 0  # no drill yet: no empty plot
        for plot in ("#backup-plot",):
            width = page.eval_on_selector(plot, "img => img.complete && img.naturalWidth")
            assert width and width > 0, plot
        screenshot = BUILD_OUT / "status-page.png"  # kept beside the build, for people
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"\nstatus page (page, style sheet, backup plot): {load_s:.2f} s collecting "
              f"status anew, {cached_s:.2f} s from the cache; screenshot {screenshot}")

        # One mark per backup made in the test, and the failed run marked.
        svg = goto(page, f"{ORIGIN}/plots/backups.svg")
        assert svg is not None and svg.status == 200
        drawn = svg.text()
        assert series_marks(drawn, SIZE_SERIES) == box.backups_made
        assert series_marks(drawn, FAILED_SERIES) == box.failed_runs
        data = goto(page, f"{ORIGIN}/status.json")
        assert data is not None
        served = load_json(data.text())
        _, shown = sh(box.app, "/usr/local/sbin/arkbox-installer status --json")
        assert served.keys() == load_json(shown).keys()
        assert len(served["backup"]["history"]) == box.backups_made
        metrics = goto(page, f"{ORIGIN}/metrics")
        assert metrics is not None and "arkbox_backup_last_size_bytes" in metrics.text()

        # Logged out, the data is gone again.
        goto(page, f"{ORIGIN}/")
        with page.expect_navigation():
            page.click("header button[type=submit]")
        gone = goto(page, f"{ORIGIN}/status.json")
        assert gone is not None and gone.status == 401

        # Lock-out: five failures, then even the right password is refused.
        goto(page, f"{ORIGIN}/login")
        for _ in range(5):
            page.fill("#password", "guess")
            with page.expect_navigation():
                page.click("button[type=submit]")
        assert "locked out" in page.inner_text("#login-message")
        page.fill("#password", PASSWORD)
        with page.expect_navigation() as navigation:
            page.click("button[type=submit]")
        assert navigation.value is not None and navigation.value.status == 429
        assert page.url == f"{ORIGIN}/login"
        browser.close()

    # Chromium logs each 401/429 answer as a console error: only the refusals this test
    # provoked on purpose may appear, nothing else (no CSP violation, no script error).
    provoked = {f"{ORIGIN}{path}" for path in ("/status.json", "/metrics", "/plots/backups.svg",
                                              "/login")}
    unexpected = [(text, url) for text, url in problems
                  if not (url in provoked and re.search(r"status of (401|429)", text))
                  and NETWORK_CHANGED not in text]
    assert unexpected == [], unexpected
    leaving = [url for url in requests if not url.startswith(f"{ORIGIN}/")]
    assert leaving == [], leaving
    assert load_s < 10, load_s


def test_plain_http_only_redirects_to_https(box: Box) -> None:
    connection = http.client.HTTPConnection(APPLIANCE_IP, 80, timeout=20)
    connection.request("GET", "/status.json", headers={"Host": HOST})
    answer = connection.getresponse()
    assert answer.status == 301 and answer.getheader("Location") == f"{ORIGIN}/status.json"
    assert b"arkbox-" not in answer.read()
    connection.close()


def test_only_the_proxy_can_reach_the_page_server(box: Box) -> None:
    socket_dir = "/var/lib/arkbox/status-page/socket"
    assert check(box.app, f"stat -c '%a %u %g' {socket_dir}").split() == ["710", "0", "33"]
    assert check(box.app, f"stat -c '%a %u %g' {socket_dir}/http.sock").split() == \
        ["660", "0", "33"]
    assert check(box.app, "stat -c '%a' /var/lib/arkbox/status-page/password.argon2"
                 ).strip() == "600"
    # No TCP port of its own: the unit has no network at all.
    listening = check(box.app, "ss -Htlnp")
    assert "arkbox-installer" not in listening, listening
    assert check(box.app, "systemctl is-active arkbox-status-page").strip() == "active"
