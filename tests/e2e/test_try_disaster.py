"""`arkbox try disaster` as an operator runs it: back up, destroy, watch a blank box restore.

On this run's builds (`--no-build`), in a rig of its own name: `arkbox try` boots the
appliance; data goes in through the applications from this machine (CalDAV on the
published 443, SQL and a wiki page inside); `arkbox try disaster` backs up, destroys
the appliance and its volumes, boots a blank one from the same image and follows it
restoring itself; the restored box holds the same data (restore_checks.py, shared with
test_backup_restore.py). Then the failure paths that cost no boot: a backup that fails
destroys nothing (exit 1); Ctrl-C while a second disaster's blank box is restoring
leaves a rig that `arkbox try down` removes completely; no rig, exit 2.
Two full appliance boots and the start of a third.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import docker
import pytest
import try_fixtures
from built import Built
from conftest import require_tool
from restore_checks import Outside, assert_event_stored, assert_same_data, data_facts, write_data
from try_fixtures import arkbox_try, assert_nothing_left, engine_objects, interrupt_when, labelled

from builder.rig.parts import ApplianceContainer, Rig

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
# Not test_try.py's: the two may run side by side (and another with a subnet shift).
RIG = try_fixtures.rig_name("arkbox-try-disaster-test")
RUN_TIMEOUT_S = 1200

def run(argv: list[str], timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    print(f"$ {' '.join(argv[1:3])}: exit {result.returncode} in "
          f"{time.monotonic() - started:.0f} s\n{result.stdout[-5000:]}{result.stderr[-2000:]}")
    return result


def the_appliance(client: docker.DockerClient) -> ApplianceContainer:
    """The rig's running appliance, to exec in (the rig module's part, attached)."""
    container = client.containers.get(f"{RIG}-appliance")
    return ApplianceContainer(Rig(name=RIG, client=client), "appliance",
                              container.image.id or "", container=container)


def from_here(app: ApplianceContainer) -> Outside:
    """Requests from this machine, as an operator makes them: 127.0.0.1, the published 443."""
    curl = require_tool("curl")

    def sh(script: str) -> str:
        result = subprocess.run(["sh", "-c", script.replace("curl ", f"{curl} ", 1)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    return Outside(sh, f"127.0.0.1:{app.host_port('443/tcp')}")


built, engine = try_fixtures.fixtures_for(RIG)


def test_disaster_restores_the_same_data_and_down_removes_everything(
        built: Built, engine: docker.DockerClient) -> None:
    before = engine_objects(engine)
    up = run(arkbox_try(built, RIG, "--no-build"))
    assert up.returncode == 0

    app = the_appliance(engine)
    old_id = app.container.id if app.container else None
    write_data(app, from_here(app))
    facts = data_facts(app)
    cert_before = app.read_json("/srv/arkbox/tls/live/certificate.json")["fingerprint_sha256"]
    assert_event_stored(app)

    disaster = run(arkbox_try(built, RIG, "disaster"))
    assert disaster.returncode == 0, disaster.stderr
    out = disaster.stdout
    # Each phase says itself; the blank box's first boot is followed live and restores.
    for phase in ("1/3 backing up now", "2/3 destroying the appliance", "3/3 booting a blank"):
        assert phase in out
    assert "removed 1 container, 1 volume" in out
    assert "│ arkbox first boot" in out, out
    assert re.search(r"\] restore +changed +RESTORE: restored ", out), out
    made = re.search(r"✓ backed up: (\S+)", out)
    assert made, out
    assert f"✓ restored {made[1]} — the backup made above" in out
    healthy = re.search(r"blank boot to all healthy: (\d+) s", out)
    assert healthy, out
    print(f"time to healthy after the blank boot: {healthy[1]} s")

    restored = the_appliance(engine)
    assert restored.container is not None and restored.container.id != old_id
    assert_same_data(restored, from_here(restored), facts)
    # The restored box serves the certificate the test CA issued to the destroyed one.
    info = restored.read_json("/srv/arkbox/tls/live/certificate.json")
    assert info["source"] == "acme" and info["fingerprint_sha256"] == cert_before, info
    assert labelled(engine, RIG) == {"containers": 4, "networks": 1, "volumes": 2}

    # A backup that fails destroys nothing: exit 1, the same appliance still there.
    server = engine.containers.get(f"{RIG}-backup")
    assert server.exec_run(["systemctl", "stop", "ssh.service"]).exit_code == 0
    failed = run(arkbox_try(built, RIG, "disaster"), timeout=600)
    assert failed.returncode == 1
    assert "the backup failed" in failed.stderr and "nothing was destroyed" in failed.stderr
    assert "2/3" not in failed.stdout
    assert the_appliance(engine).container.id == restored.container.id  # type: ignore[union-attr]
    assert server.exec_run(["systemctl", "start", "ssh.service"]).exit_code == 0

    # Ctrl-C while the next blank box restores: `try down` removes all of it.
    interrupted = interrupt_once_restoring(arkbox_try(built, RIG, "disaster"))
    assert "interrupted while following the restore" in interrupted
    down = run(arkbox_try(built, RIG, "down"), timeout=180)
    assert down.returncode == 0
    assert "removed 4 containers, 2 volumes, 1 network" in down.stdout
    assert_nothing_left(engine, before, RIG)

    none = run(arkbox_try(built, RIG, "disaster"), timeout=60)
    assert none.returncode == 2
    assert "no `arkbox try` appliance in the rig" in none.stderr


def interrupt_once_restoring(argv: list[str]) -> str:
    """Run argv, SIGINT it once the blank box's first-boot lines come; its output (exit 130)."""

    def restoring(seen: list[str]) -> bool:
        following = [i for i, line in enumerate(seen) if "following first boot" in line]
        return bool(following) and any(line.startswith("  │ ")
                                       for line in seen[following[0] + 1:])

    return interrupt_when(argv, restoring, 600)
