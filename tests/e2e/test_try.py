"""`arkbox try` as an operator runs it: boot, reach the apps over HTTPS, `try down`, Ctrl-C.

Runs `arkbox try` as a subprocess on this run's build (`--out` at it, `--no-build`:
the staleness decision is unit-tested; here it must say the build is up to date), in a
rig of its own name so an operator's `arkbox try` on the same machine is left alone.
What it leaves behind is counted by the rig's label, and by name against everything
the engine held before (in CI, where nothing else runs beside, no new object at all).
"""

from __future__ import annotations

import imaplib
import json
import os
import re
import shlex
import socket
import ssl
import subprocess
import time
from pathlib import Path

import docker
import pytest
import try_fixtures
from built import Built
from conftest import require_tool
from try_fixtures import arkbox_try, assert_nothing_left, engine_objects, interrupt_when, labelled

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
# Its own rig name (another with ARKBOX_TEST_SUBNET_SHIFT, to run beside a CI run on one
# engine); ARKBOX_TRY_TEST_RIG names one.
RIG = os.environ.get("ARKBOX_TRY_TEST_RIG", try_fixtures.rig_name("arkbox-try-test"))
TRY_TIMEOUT_S = 600  # first boot takes ~30 s here; the rest is for a busy CI machine
MAIL_HOST = "mail.arkbox.test"

built, engine = try_fixtures.fixtures_for(RIG)


def test_try_serves_the_apps_over_https_and_down_removes_everything(
        built: Built, engine: docker.DockerClient) -> None:
    curl = require_tool("curl")
    before = engine_objects(engine)
    started = time.monotonic()
    result = subprocess.run(arkbox_try(built, RIG, "--no-build"), cwd=ROOT, capture_output=True,
                            text=True, timeout=TRY_TIMEOUT_S + 120)
    print(result.stdout[-6000:], result.stderr[-3000:])
    print(f"arkbox try: {time.monotonic() - started:.0f} s")
    assert result.returncode == 0
    out = result.stdout
    assert out.count("is up to date") == 2  # neither the appliance nor the backup server rebuilt
    assert "] system " in out and "│ ready · https://arkbox.test" in out  # first boot, followed
    # Backed up to the rig's backup server: first boot made the repository there.
    assert re.search(r"\] backup +changed +repository created", out), out
    # backup server, test CA, appliance, and the DNS server with the zone
    assert labelled(engine, RIG) == {"containers": 4, "networks": 1, "volumes": 2}

    # The certificate comes from the rig's test CA over ACME, and the printed examples,
    # run as printed, trust only that CA's root.
    assert "✓ issued for " in out and "test ACME CA (Pebble)" in out, out
    examples = {shlex.split(line)[-1]: shlex.split(line) for line in out.splitlines()
                if line.strip().startswith("curl --resolve")}
    assert len(examples) == 3, out
    expected = {"wiki.arkbox.test": "DokuWiki", "webmail.arkbox.test": "Roundcube"}
    for host, content in expected.items():
        (argv,) = [argv for url, argv in examples.items() if f"//{host}:" in url]
        assert Path(argv[argv.index("--cacert") + 1]).is_file()
        page = subprocess.run([curl, "--silent", "--show-error", "--fail", "--max-time", "20",
                               *argv[1:]], capture_output=True, text=True, timeout=60)
        assert page.returncode == 0, page.stderr
        assert content in page.stdout, page.stdout[:500]
    assert f"arkbox try ssh --rig {RIG}" in out

    check_the_test_mailbox_over_imaps(out)
    check_the_doctor_is_green_apart_from_the_rig(out)

    status = subprocess.run(arkbox_try(built, RIG, "status"), capture_output=True, text=True,
                            timeout=60)
    assert f"{RIG}-appliance: running · first boot ok" in status.stdout, \
        status.stdout + status.stderr
    assert f"{RIG}-backup: running" in status.stdout

    down = subprocess.run(arkbox_try(built, RIG, "down"), capture_output=True, text=True,
                          timeout=180)
    assert down.returncode == 0, down.stderr
    assert "removed 4 containers, 2 volumes, 1 network" in down.stdout
    assert not (built.out / RIG).exists()  # the copied certificate went too
    assert_nothing_left(engine, before, RIG)
    again = subprocess.run(arkbox_try(built, RIG, "down"), capture_output=True, text=True,
                           timeout=60)
    assert "nothing to remove" in again.stdout


class ImapsByName(imaplib.IMAP4_SSL):
    """IMAPS to 127.0.0.1, the certificate verified for the mail host's name."""

    def _create_socket(self, timeout: float | None) -> ssl.SSLSocket:
        sock = socket.create_connection((self.host, self.port), timeout)
        context: ssl.SSLContext = self.ssl_context
        return context.wrap_socket(sock, server_hostname=MAIL_HOST)


def check_the_test_mailbox_over_imaps(out: str) -> None:
    """The printed IMAPS port and login work from this machine, TLS verified against the
    printed certificate; the printed openssl example runs as printed."""
    (imaps,) = [line.split() for line in out.splitlines() if line.strip().startswith("IMAPS ")]
    host, _, port = imaps[1].rpartition(":")
    assert host == "127.0.0.1"
    login = re.search(r"Test mailbox: user (\S+), password in (\S+)", out)
    assert login is not None, out
    user, password_file = login[1], Path(login[2])
    (example,) = [line.strip() for line in out.splitlines() if "openssl s_client" in line]
    argv = shlex.split(example.partition(" | ")[2])
    cafile = argv[argv.index("-CAfile") + 1]
    context = ssl.create_default_context(cafile=cafile)  # hostname checked, chain verified
    subject = f"try-{time.time_ns()}"
    with ImapsByName("127.0.0.1", int(port), ssl_context=context, timeout=30) as imap:
        imap.login(user, password_file.read_text().strip())
        imap.append("INBOX", None, None,
                    f"From: {user}\r\nTo: {user}\r\nSubject: {subject}\r\n\r\nhi\r\n".encode())
        assert imap.select("INBOX")[0] == "OK"
        _, found = imap.search(None, "SUBJECT", f'"{subject}"')
        (number,) = found[0].split()
        _, data = imap.fetch(number, "(RFC822)")
        item = data[0]
        assert isinstance(item, tuple) and subject.encode() in item[1]
    openssl = require_tool("openssl")
    shown = subprocess.run(["bash", "-c", example.replace("openssl s_client",
                                                          f"{openssl} s_client", 1)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "Logged in" in shown.stdout and "[READ-WRITE]" in shown.stdout, \
        shown.stdout + shown.stderr
    assert "Verify return code: 0" in shown.stderr or shown.returncode == 0, shown.stderr


def check_the_doctor_is_green_apart_from_the_rig(out: str) -> None:
    """The printed doctor command, run as printed (with --json): no failure."""
    lines = out.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.strip().startswith("Mail doctor")]
    argv = shlex.split(lines[at + 1])
    assert argv[:6] == ["docker", "exec", f"{RIG}-appliance", "arkbox-installer", "check",
                        "mail"], argv
    docker_cli = require_tool("docker")
    doctor = subprocess.run([docker_cli, *argv[1:], "--json"], capture_output=True, text=True,
                            timeout=180)
    print(doctor.stdout[-4000:], doctor.stderr[-2000:])
    report = json.loads(doctor.stdout[doctor.stdout.index("{"):])
    failures = [f for f in report["findings"] if f["level"] == "fail"]
    assert failures == [] and doctor.returncode == 0, failures
    found = {f["check"]: f["level"] for f in report["findings"]}
    for check in ("ptr", "mx arkbox.test", "spf arkbox.test", "dkim arkbox.test",
                  "dmarc arkbox.test", "tls-rpt arkbox.test"):
        assert found.get(check) == "ok", (check, report)


def test_ctrl_c_during_first_boot_leaves_nothing_behind(
        built: Built, engine: docker.DockerClient) -> None:
    before = engine_objects(engine)
    def three_parts() -> None:
        assert labelled(engine, RIG)["containers"] == 3  # backup server, test CA, appliance

    # Mid-boot: once first boot's own lines are coming (the rig is fully made by then).
    text = interrupt_when(arkbox_try(built, RIG, "--no-build"),
                          lambda seen: any(line.startswith("  │ ") for line in seen), 300,
                          before_signal=three_parts)
    assert "interrupted: removing what arkbox try created" in text
    assert "removed 3 containers, 2 volumes, 1 network" in text
    assert "ready ·" not in text
    assert_nothing_left(engine, before, RIG)
