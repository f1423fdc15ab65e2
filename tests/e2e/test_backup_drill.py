"""Issue 5, day 2 on a booted appliance: backup status, the timers, `arkbox-installer drill`.

One appliance (the built NAME-rootfs.tar with systemd) and the backup-server role, in one
rig; real borg over real SSH. The drill must pass on a good backup, fail on a bad one, and
in every case leave the box exactly as it found it: the same containers (not restarted),
the same networks, no drill directory.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from restore_checks import wait_first_boot_or_failure
from rig_fixtures import (
    DEFAULT_CONFIG,
    admin_key,
    appliance_image,
    check,
    installer,
    rig_up,
    sh,
)
from status_page_checks import StatusPage, series_marks

from builder.rig.parts import ApplianceContainer, BackupServerContainer, Rig, image_from_rootfs_tar
from firstboot.statuspage.charts import PASSED_DRILLS_SERIES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RIG_OCTET = 180
BORG_ENV = (
    "BORG_REPO=ssh://borg@backup.arkbox.test:22/./arkbox "
    "BORG_PASSPHRASE=$(cat /etc/arkbox/secrets/borg-passphrase) "
    "BORG_BASE_DIR=/var/lib/arkbox/backup/borg BORG_HOSTNAME_IS_UNIQUE=yes "
    "BORG_RSH='ssh -i /var/lib/arkbox/backup/ssh-key -o IdentitiesOnly=yes "
    "-o UserKnownHostsFile=/var/lib/arkbox/backup/known_hosts -o BatchMode=yes'"
)


@dataclass
class Box:
    rig: Rig
    server: BackupServerContainer
    app: ApplianceContainer
    config: dict[str, Any]
    # status --json's backup part right after first boot, before any test made a backup.
    first_backup_status: dict[str, Any]
    # Whether the newest archive is known to be complete (a drill restores the newest).
    newest_archive_good: bool = False


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    from built import built_backup_server

    config: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["appliance"]["admin"]["ssh_keys"] = [admin_key()]
    with rig_up("drill", RIG_OCTET) as rig:
        image = appliance_image(rig)
        server_image = image_from_rootfs_tar(rig.client, built_backup_server(),
                                             "arkbox/backup-server-role")
        server = BackupServerContainer(rig, "backup", server_image, aliases=("backup.arkbox.test",))
        rig.add(server)
        app = ApplianceContainer(rig, "appliance", image, aliases=["arkbox.test"],
                            config=yaml.safe_dump(config, sort_keys=False),
                            seed_config=DEFAULT_CONFIG, boot_timeout=420)
        started = time.monotonic()
        rig.add(app)
        status = wait_first_boot_or_failure(app, timeout=900)
        print(f"\nappliance: first boot done in {time.monotonic() - started:.0f} s")
        assert status["result"] == "ok", status["failures"]
        yield Box(rig, server, app, config, status_json(app)["backup"])


@pytest.fixture
def good_backup(box: Box) -> Box:
    """The newest archive is a complete backup: a drill has something whole to restore,
    whatever a test before did (or whether one ran at all)."""
    if not box.newest_archive_good:
        code, out = installer(box.app, "backup")
        assert code == 0, out
        box.newest_archive_good = True
    return box


def status_json(app: ApplianceContainer) -> dict[str, Any]:
    _, out = sh(app, "/usr/local/sbin/arkbox-installer status --json")
    data: dict[str, Any] = json.loads(out)
    return data


def engine_objects(app: ApplianceContainer) -> dict[str, str]:
    """Every container (with its start time: a restart shows) and network in the box."""
    containers = check(app, "docker ps -a --format '{{.Names}}' | sort | xargs -r "
                            "docker inspect --format '{{.Name}} {{.State.StartedAt}}'")
    networks = check(app, "docker network ls --format '{{.Name}} {{.ID}}'")
    return {line.split()[0]: line.split()[1]
            for line in (containers + networks).splitlines() if line.strip()}


def assert_left_as_found(app: ApplianceContainer, before: dict[str, str]) -> None:
    assert engine_objects(app) == before
    leftover = check(app, "ls -A /var/lib/arkbox/drill 2>/dev/null; true").strip()
    assert leftover == "", leftover


def drill(app: ApplianceContainer, options: str = "") -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    code, out = sh(app, f"/usr/local/sbin/arkbox-installer drill --json {options} "
                        "2>/tmp/drill.err")
    seconds = time.monotonic() - started
    try:
        report: dict[str, Any] = json.loads(out)
    except ValueError:
        pytest.fail(f"drill printed no JSON (exit {code}):\n{out}\n"
                    f"{sh(app, 'cat /tmp/drill.err')[1]}")
    return code, report, seconds


def test_timers_are_enabled_and_status_shows_backups(box: Box) -> None:
    app = box.app
    for timer in ("arkbox-backup.timer", "arkbox-backup-verify.timer"):
        assert check(app, f"systemctl is-enabled {timer}").strip() == "enabled"
        assert check(app, f"systemctl is-active {timer}").strip() == "active"
    assert "OnCalendar=monthly" in check(app, "systemctl cat arkbox-backup-verify.timer")
    before = box.first_backup_status
    assert before["last"] is None and before["next_run"], before
    assert any("no backup has been made yet" in w for w in before["warnings"])

    code, out = installer(app, "backup")
    assert code == 0, out
    after = status_json(app)["backup"]
    assert after["last"] and after["stale"] is False and after["dedup_ratio"], after
    assert after["seconds"] > 0 and after["original_size"] > 0 and after["failure"] is None
    assert set(after["pauses"]) == {"calendar", "wiki", "mail"}  # mail: its store
    code, table = installer(app, "status")
    assert f"last backup: {after['last']}" in table and "next backup: 20" in table, table
    print(f"\nstatus: {[line for line in table.splitlines() if 'backup' in line]}")


def test_a_failed_scheduled_backup_shows_in_status_and_the_journal(box: Box) -> None:
    app, server = box.app, box.server
    assert server.exec("systemctl", "stop", "ssh.socket", "ssh.service")[0] in (0, 5)
    try:
        sh(app, "systemctl start arkbox-backup.service")  # oneshot: returns when it failed
        assert check(app, "systemctl show -p Result --value arkbox-backup.service").strip() \
            != "success"
        journal = check(app, "journalctl -u arkbox-backup --no-pager -o cat")
        assert "backup failed: " in journal and "cannot be reached" in journal, journal
        backup = status_json(app)["backup"]
        assert "cannot be reached" in backup["failure"]["message"], backup
        assert any("the last backup failed" in w for w in backup["warnings"])
        assert "the last backup failed" in installer(app, "status")[1]
    finally:
        server.exec("systemctl", "start", "ssh.service")
    # The next good backup clears it.
    for _ in range(10):
        code, out = installer(app, "backup")
        if code == 0:
            break
        time.sleep(3)  # sshd coming back, or its per-source penalty
    assert code == 0, out
    assert status_json(app)["backup"]["failure"] is None


def test_drill_passes_and_leaves_the_box_as_it_found_it(good_backup: Box) -> None:
    box = good_backup
    app = box.app
    before = engine_objects(app)
    code, report, seconds = drill(app)
    assert code == 0 and report["result"] == "pass", report
    assert set(report["services"]) == {"calendar", "wiki", "webmail", "db"}
    assert all(s["result"] == "pass" for s in report["services"].values()), report
    assert report["dumps"] and report["dumps"][0].startswith("db"), report
    assert report["prefix"].startswith("arkbox-t") and report["leftovers"] == []
    assert report["cleaned"]["containers"] == 4, report
    assert_left_as_found(app, before)
    assert status_json(app)["backup"]["last_drill"]["result"] == "pass"
    print(f"\ndrill passed in {seconds:.0f} s: restore {report['seconds']['restore']} s, "
          f"services healthy after {report['seconds']['start']} s: "
          + ", ".join(f"{n} {s['seconds']} s" for n, s in report["services"].items()))


def test_the_scheduled_drill_runs_from_its_timer_and_reaches_status(good_backup: Box) -> None:
    """backup.drill defaults to weekly: its timer is enabled; its service (what the timer
    starts) drills, and the result lands in status and the drill history."""
    app = good_backup.app
    assert check(app, "systemctl is-enabled arkbox-drill.timer").strip() == "enabled"
    assert "OnCalendar=Sun *-*-* 04:30:00" in check(app, "systemctl cat arkbox-drill.timer")
    before = engine_objects(app)
    drills_before = len(status_json(app)["backup"].get("drills") or [])
    # A oneshot: systemctl returns when the drill is over.
    code, out = sh(app, "systemctl start arkbox-drill.service")
    assert code == 0, out + check(app, "journalctl -u arkbox-drill --no-pager -o cat | tail -40")
    assert check(app, "systemctl show -p Result --value arkbox-drill.service").strip() \
        == "success"
    assert "PASS in" in check(app, "journalctl -u arkbox-drill --no-pager -o cat")
    backup = status_json(app)["backup"]
    assert backup["last_drill"]["result"] == "pass", backup["last_drill"]
    drills = backup["drills"]
    assert len(drills) == min(drills_before + 1, 30), drills
    assert drills[-1]["result"] == "pass" and drills[-1]["seconds_to_healthy"], drills[-1]
    assert "drills: " in installer(app, "status")[1]
    # ... and the status page: the drill plot holds each drill of the history, and the
    # page's table and /metrics say the last one passed.
    passed = sum(1 for d in drills if d["result"] == "pass")
    page = StatusPage.login(app.ip(), "arkbox.test")
    assert series_marks(page.get("/plots/drills.svg"), PASSED_DRILLS_SERIES) == passed
    section = re.search(r'<section id="drills">(.*?)</section>', page.get("/"), re.S)
    assert section is not None and section.group(1).count(">pass</td>") == passed, section
    assert "\narkbox_drill_last_pass 1" in page.get("/metrics")
    assert_left_as_found(app, before)


def test_a_drill_whose_service_does_not_come_up_fails_and_cleans_up(good_backup: Box) -> None:
    box = good_backup
    app = box.app
    # The same appliance, but the wiki's health check can never pass.
    sick = copy.deepcopy(box.config)
    sick["services"]["wiki"]["healthcheck"] = {"command": ["sh", "-c", "exit 3"]}
    encoded = base64.b64encode(yaml.safe_dump(sick).encode()).decode()
    check(app, f"echo {encoded} | base64 -d > /etc/arkbox/drill-sick.yaml")
    before = engine_objects(app)
    try:
        code, report, _ = drill(app, "--config /etc/arkbox/drill-sick.yaml --timeout 20")
    finally:
        sh(app, "rm -f /etc/arkbox/drill-sick.yaml")
    assert code == 1 and report["result"] == "fail", report
    assert report["failure"].startswith("1 service(s) not healthy after 20 s: wiki"), report
    assert report["hint"]
    services = report["services"]
    assert services["wiki"]["result"] == "fail" and "health check fails" in \
        services["wiki"]["problem"], services
    assert all(services[s]["result"] == "pass" for s in ("calendar", "db", "webmail"))
    assert report["cleaned"]["containers"] == 4 and report["leftovers"] == []
    assert_left_as_found(app, before)
    assert any("the last drill" in w for w in status_json(app)["backup"]["warnings"])


def test_a_drill_stopped_midway_removes_what_it_made(good_backup: Box) -> None:
    box = good_backup
    app = box.app
    before = engine_objects(app)
    sh(app, "systemd-run --unit arkbox-drill-test --collect "
            "/usr/local/sbin/arkbox-installer drill")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # until the drill's own containers exist
        if check(app, "docker ps -aq --filter name=arkbox-t").strip():
            break
        time.sleep(1)
    else:
        pytest.fail("the drill made no container")
    sh(app, "systemctl stop arkbox-drill-test")  # SIGTERM, as systemd or a closed session
    journal = check(app, "journalctl -u arkbox-drill-test --no-pager -o cat")
    assert "removing everything the drill made" in journal or "interrupted" in journal, journal
    assert_left_as_found(app, before)


def test_a_drill_of_an_incomplete_backup_fails_and_leaves_nothing(box: Box) -> None:
    app = box.app
    box.newest_archive_good = False  # this test damages the archive it makes now
    code, out = installer(app, "backup --no-prune")
    assert code == 0, out
    stamp = out.strip().splitlines()[-1].split(":")[0]
    # The archive loses its database dump (its comment still names it): damaged.
    code, out = sh(app, f"{BORG_ENV} borg recreate --exclude pp:.backup/dumps ::{stamp} 2>&1")
    assert code == 0, out
    before = engine_objects(app)
    code, report, _ = drill(app)
    assert code == 1 and report["result"] == "fail", report
    assert report["archive"] == stamp and "the dump of db" in report["failure"], report
    assert "--archive" in report["hint"]
    assert report["cleaned"]["containers"] == 0
    assert_left_as_found(app, before)
