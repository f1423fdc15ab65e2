"""Issue 5, day 2 without a server: backup status (stale, next run, failures, formatting),
the monthly verify-data timer, the dumps-before-apps plan, and the drill's bookkeeping."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from firstboot.backup import timer
from firstboot.backup.client import (
    BackupPaths,
    backup_status,
    clear_failure,
    record_failure,
    record_stats,
)
from firstboot.backup.drill import (
    DrillReport,
    ServiceResult,
    drill_context,
    drill_root,
    remove_drill,
    remove_stale_drills,
)
from firstboot.backup.drill import save_report as drill_save
from firstboot.backup.drill_record import HISTORY_FILE, HISTORY_KEPT, drill_history, last_drill
from firstboot.backup.dumps import first_wave
from firstboot.containers.naming import Naming
from firstboot.core.config import load_config
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.execute import Completed
from firstboot.status import Status, StepReport, StepState, status_json
from firstboot.status_view import backup_lines, human_size, render_status
from firstboot.steps import NAMES
from firstboot.steps import backup as backup_step
from firstboot.systemd_units import parse_systemd_time

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
LAST = {"archive": "h-2026-11-26T030000Z", "finished_at": "2026-11-26T03:00:00+00:00",
        "seconds": 41.2, "original_size": 3 << 30, "deduplicated_size": 12 << 20,
        "pauses": {"wiki": 0.4, "calendar": 0.3}}


def text_of(*renderables: Any) -> str:
    console = Console(width=200, record=True, force_terminal=False)
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


# ----------------------------------------------------------------- status


def test_next_run_is_read_from_systemctl_in_either_format() -> None:
    assert parse_systemd_time("@1764213262\n") == datetime.fromtimestamp(1764213262, UTC)
    assert parse_systemd_time("Fri 2026-11-27 03:14:22 UTC") == datetime(2026, 11, 27, 3, 14, 22,
                                                                      tzinfo=UTC)
    for never in ("", "n/a", "@", "garbage"):
        assert parse_systemd_time(never) is None


def test_status_of_a_fresh_backup_with_its_next_run(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    record_stats(paths, LAST)
    status = backup_status(paths, NOW, next_run=datetime(2026, 11, 27, 3, 12, tzinfo=UTC))
    assert status["enabled"] and not status["stale"] and status["warnings"] == []
    assert status["next_run"] == "2026-11-27T03:12:00+00:00"
    assert status["dedup_ratio"] == 256.0 and status["seconds"] == 41.2
    text = text_of(*backup_lines(status))
    assert "last backup: h-2026-11-26T030000Z" in text
    assert "(9 h ago)" in text and "3.0 GiB, 12.0 MiB new (dedup 256.0x)" in text
    assert "took 41 s" in text and "paused wiki 0.4 s, calendar 0.3 s" in text
    assert "next backup: 2026-11-27 03:12:00" in text and "⚠" not in text


def test_stale_after_26_hours_and_unscheduled_are_warnings(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    record_stats(paths, LAST)
    at_26h = backup_status(paths, datetime(2026, 11, 27, 5, 0, tzinfo=UTC), NOW)
    assert not at_26h["stale"]  # exactly 26 h: not yet
    late = backup_status(paths, datetime(2026, 11, 27, 5, 1, tzinfo=UTC), None)
    assert late["stale"]
    assert late["warnings"][0].startswith("the last backup is 26 h old (more than 26 h)")
    assert any("no backup is scheduled" in w for w in late["warnings"])
    text = text_of(*backup_lines(late))
    assert "⚠ backup: the last backup is 26 h old" in text
    assert "next backup: not scheduled" in text


def test_a_failed_backup_shows_until_the_next_success(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    assert backup_status(paths, NOW, NOW)["warning"].startswith("no backup has been made")
    record_failure(paths, NOW, "backup: the backup server cannot be reached",
                   "check that it is up")
    status = backup_status(paths, NOW, NOW)
    assert status["failure"]["message"].endswith("cannot be reached")
    assert any("the last backup failed (2026-11-26T12:00:00+00:00): backup: the backup "
               "server cannot be reached; hint: check that it is up" in w
               for w in status["warnings"])
    clear_failure(paths)
    assert backup_status(paths, NOW, NOW)["failure"] is None
    assert not BackupPaths(paths).failure.exists()


def test_status_json_and_table_carry_the_backup(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    record_stats(paths, LAST)
    backup = backup_status(paths, NOW, None)
    status = Status("firstboot", "0.1", "2026-11-26T00:00:00+00:00",
                    steps=[StepReport("backup", StepState.CHANGED, "ok")])
    data = json.loads(status_json(status, backup=backup))
    assert data["backup"]["last"] == LAST["archive"] and data["backup"]["stale"] is False
    table = text_of(render_status(status, backup=backup))
    assert "last backup: h-2026-11-26T030000Z" in table and "next backup" in table
    assert "backup: off" in text_of(*backup_lines(backup_status(paths, NOW, enabled=False)))


def test_human_sizes() -> None:
    assert [human_size(n) for n in (0, 1023, 1536, 5 << 20, 3 << 40, 5 << 50)] == [
        "0 B", "1023 B", "1.5 KiB", "5.0 MiB", "3.0 TiB", "5120.0 TiB"]


def test_the_status_command_shows_backups_and_the_last_drill(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    Status("firstboot", "0.1", "2026-11-26T00:00:00+00:00", result="ok").save(paths.status)  # type: ignore[arg-type]
    record_stats(paths, {**LAST, "finished_at": datetime.now(UTC).isoformat()})
    record_failure(paths, NOW, "backup: the repository is locked", None)
    (paths.state / "drill.json").write_text(json.dumps(
        {"result": "fail", "archive": "h-x", "started_at": "2026-11-26T04:00:00+00:00",
         "failure": "1 service(s) not healthy"}))
    argv = [sys.executable, "-m", "firstboot", "status", "--root", str(tmp_path)]
    shown = subprocess.run([*argv, "--json"], capture_output=True, text=True, check=True)
    backup = json.loads(shown.stdout)["backup"]
    assert backup["last"] == LAST["archive"] and backup["stale"] is False
    assert backup["last_drill"]["result"] == "fail"
    assert any("the last drill" in w for w in backup["warnings"])
    table = subprocess.run(argv, capture_output=True, text=True).stdout
    assert "last backup: h-2026-11-26T030000Z" in table
    assert "the last backup failed" in table and "last drill: fail" in table


def test_each_drill_is_kept_in_a_history_of_the_last_thirty(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    for n in range(HISTORY_KEPT + 2):
        report = DrillReport(archive=f"h-{n}", started_at=f"2026-11-{n % 28 + 1:02d}T04:30:00",
                             ok=n % 3 != 0, seconds=40.0 + n,
                             failure=None if n % 3 else "wiki not healthy")
        report.services["wiki"] = ServiceResult("wiki", ok=n % 3 != 0, seconds=12.34)
        drill_save(paths, report)
    history = drill_history(paths)
    assert len(history) == HISTORY_KEPT
    assert [entry["archive"] for entry in history] == [f"h-{n}" for n in range(2, 32)]
    assert history[-1] == {"started_at": "2026-11-04T04:30:00", "archive": "h-31",
                           "result": "pass", "seconds": 71.0, "seconds_to_healthy": 12.3,
                           "failure": None}
    assert last_drill(paths)["archive"] == "h-31"  # type: ignore[index]
    Status("firstboot", "0.1", "2026-11-26T00:00:00+00:00", result="ok").save(paths.status)  # type: ignore[arg-type]
    record_stats(paths, {**LAST, "finished_at": datetime.now(UTC).isoformat()})
    argv = [sys.executable, "-m", "firstboot", "status", "--root", str(tmp_path)]
    shown = json.loads(subprocess.run([*argv, "--json"], capture_output=True, text=True,
                                      check=True).stdout)
    assert shown["backup"]["drills"] == history
    table = subprocess.run(argv, capture_output=True, text=True).stdout
    assert "drills: 20 of the last 30 passed" in table


def test_an_unreadable_drill_history_counts_as_none(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.state.mkdir(parents=True)
    (paths.state / HISTORY_FILE).write_text("{not json")
    assert drill_history(paths) == []


# ------------------------------------------------------------------ timers


def test_the_monthly_verify_data_timer_is_rendered() -> None:
    nightly, monthly = timer.units("*-*-* 03:00")
    assert (nightly.service, nightly.timer) == (timer.SERVICE, timer.TIMER)
    assert (monthly.service, monthly.timer) == (timer.CHECK_SERVICE, timer.CHECK_TIMER)
    check_timer = monthly.timer_text
    assert "OnCalendar=monthly" in check_timer and "Persistent=true" in check_timer
    assert "RandomizedDelaySec=1d" in check_timer and "WantedBy=timers.target" in check_timer
    service = monthly.service_text
    assert "ExecStart=/usr/local/sbin/arkbox-installer check --verify-data" in service
    assert "ConditionPathExists=/var/lib/arkbox/firstboot.done" in service


def test_the_drill_timer_is_rendered_a_quiet_hour_after_the_backup() -> None:
    assert timer.drill_calendar("off") is None
    assert timer.drill_calendar("weekly") == "Sun *-*-* 04:30:00"
    assert timer.drill_calendar("Sat *-*-* 02:00") == "Sat *-*-* 02:00"
    units = timer.drill_units("Sun *-*-* 04:30:00")
    assert (units.service, units.timer) == (timer.DRILL_SERVICE, timer.DRILL_TIMER)
    assert "OnCalendar=Sun *-*-* 04:30:00" in units.timer_text
    assert "Persistent=true" in units.timer_text
    assert "ExecStart=/usr/local/sbin/arkbox-installer drill" in units.service_text
    assert f"After=network-online.target docker.service {timer.SERVICE}" in units.service_text
    assert "ConditionPathExists=/var/lib/arkbox/firstboot.done" in units.service_text


def _step_context(tmp_path: Path, calls: list[tuple[str, ...]],
                  edit: tuple[str, str] | None = None) -> FirstbootContext:
    def record(argv: Any, **kwargs: Any) -> Completed:
        calls.append(tuple(argv))
        return Completed(tuple(argv), 1 if "is-enabled" in argv else 0, "")

    if not (tmp_path / "config/secrets").exists():
        shutil.copytree(REPO / "config/secrets", tmp_path / "config/secrets")
    text = (REPO / "config/default.yaml").read_text()
    if edit:
        assert edit[0] in text
        text = text.replace(*edit)
    (tmp_path / "config/appliance.yaml").write_text(text)
    return FirstbootContext(config=load_config(tmp_path / "config/appliance.yaml"),
                            paths=Paths(tmp_path / "root"), run=record)


def test_the_backup_step_installs_and_enables_the_timers(tmp_path: Path) -> None:
    calls: list[tuple[str, ...]] = []
    ctx = _step_context(tmp_path, calls)
    changes = backup_step._timer(ctx)
    unit_dir = ctx.paths.at(timer.UNIT_DIR)
    assert (unit_dir / timer.CHECK_TIMER).read_text() == timer.check_timer_unit()
    assert (unit_dir / timer.CHECK_SERVICE).read_text() == timer.check_service_unit()
    assert (unit_dir / timer.DRILL_TIMER).read_text() == \
        timer.drill_timer_unit(timer.DRILL_WEEKLY)
    assert changes == [f"{timer.TIMER} (*-*-* 03:00)", f"{timer.CHECK_TIMER} (monthly)",
                       f"{timer.DRILL_TIMER} ({timer.DRILL_WEEKLY})"]
    assert backup_step._timer(ctx) == []  # idempotent
    assert calls == []  # not live: systemctl is never run below a test root
    (unit_dir / timer.CHECK_TIMER).unlink()
    (ctx.paths.state / "backup").mkdir(parents=True)
    assert backup_step.verify(ctx) is not None
    # On a live box each timer is enabled and started (tests/e2e/test_backup_drill.py
    # checks both are enabled on a booted appliance).


def test_drill_off_removes_its_timer_and_verify_no_longer_wants_it(tmp_path: Path) -> None:
    calls: list[tuple[str, ...]] = []
    backup_step._timer(_step_context(tmp_path, calls))
    ctx = _step_context(tmp_path, calls, ("compression: lz4", "compression: lz4\n  drill: off"))
    assert ctx.config.backup.drill == "off"
    assert backup_step._timer(ctx) == [f"{timer.DRILL_TIMER} removed (backup.drill: off)"]
    unit_dir = ctx.paths.at(timer.UNIT_DIR)
    assert not (unit_dir / timer.DRILL_TIMER).exists()
    assert not (unit_dir / timer.DRILL_SERVICE).exists()
    assert (unit_dir / timer.TIMER).exists()
    assert backup_step._timer(ctx) == []


# ---------------------------------------------------------------- ordering


def test_dumps_are_loaded_before_the_services_start() -> None:
    assert NAMES.index("restore") < NAMES.index("restore_dumps") < NAMES.index("services")


def test_first_wave_is_the_dumped_services_and_what_they_connect_to() -> None:
    default = {"calendar": [], "wiki": [], "webmail": ["db"], "db": []}
    assert first_wave(default, ["db"]) == ["db"]  # webmail starts after the load
    chain = {"app": ["db"], "db": ["vault"], "vault": [], "other": []}
    assert first_wave(chain, ["db"]) == ["db", "vault"]
    assert first_wave(chain, []) == []
    assert first_wave(chain, ["gone"]) == []  # a dump of a service no longer configured
    assert first_wave({"a": ["b"], "b": ["a"]}, ["a"]) == ["a", "b"]  # a cycle ends


# ------------------------------------------------------------------- drill


class FakeEngine:
    """The two listings remove_drill uses; records what it removed."""

    def __init__(self, containers: list[str], networks: list[str]) -> None:
        self.removed: list[str] = []
        self.filters: list[Any] = []
        outer = self

        class Thing:
            def __init__(self, name: str) -> None:
                self.name = name

            def remove(self, **kwargs: Any) -> None:
                outer.removed.append(self.name)

        class Listing:
            def __init__(self, names: list[str]) -> None:
                self.names = names

            def list(self, **kwargs: Any) -> list[Thing]:
                outer.filters.append(kwargs.get("filters"))
                return [Thing(n) for n in self.names]

        self.containers = Listing(containers)
        self.networks = Listing(networks)


def test_a_drill_root_shares_the_live_client_state_and_is_removed_without_it(
        tmp_path: Path) -> None:
    shutil.copytree(REPO / "config/secrets", tmp_path / "config/secrets")
    shutil.copy(REPO / "config/default.yaml", tmp_path / "config/appliance.yaml")
    live = FirstbootContext(config=load_config(tmp_path / "config/appliance.yaml"),
                            paths=Paths(tmp_path / "live"))
    key = BackupPaths(live.paths).ssh_key
    key.parent.mkdir(parents=True)
    key.write_text("KEY")
    (live.paths.at("/usr/share/arkbox/recipes")).mkdir(parents=True)
    root = drill_root(live.paths, "r1")
    ctx = drill_context(live, root)
    assert BackupPaths(ctx.paths).ssh_key.read_text() == "KEY"
    assert ctx.paths.at("/usr/share/arkbox/recipes").is_dir()
    assert ctx.paths.data == root / "srv/arkbox" and not ctx.paths.is_live
    prefix = Naming.for_root(root).prefix
    assert prefix.startswith("arkbox-t") and prefix != Naming().prefix
    (ctx.paths.data / "volumes").mkdir(parents=True)

    engine = FakeEngine([f"{prefix}-db"], [f"{prefix}-db"])
    removed, leftovers = remove_drill(engine, root)  # type: ignore[arg-type]
    assert removed == {"containers": 1, "networks": 1, "directories": 1} and leftovers == []
    assert all(f == Naming.for_root(root).filters() for f in engine.filters)
    assert not root.exists()
    assert key.read_text() == "KEY"  # the live box's files stay
    assert live.paths.at("/usr/share/arkbox/recipes").is_dir()

    drill_context(live, drill_root(live.paths, "killed"))  # a drill that was SIGKILLed
    live._docker = FakeEngine([], [])  # type: ignore[assignment]
    assert remove_stale_drills(live) == ["killed"]
    assert not any((live.paths.state / "drill").iterdir())


def test_the_drill_report_reads_and_serialises() -> None:
    report = DrillReport(archive="h-2026-11-26T030000Z", archive_time="2026-11-26T03:00:01",
                         restore_seconds=12.34, seconds=61.0, dumps=["db (1.2 s)"],
                         services={"db": ServiceResult("db", True, None, 8.0),
                                   "wiki": ServiceResult("wiki", False, "unhealthy: 500")},
                         cleaned={"containers": 4, "networks": 4, "directories": 1},
                         failure="1 service(s) not healthy after 300 s: wiki")
    text = "\n".join(report.lines())
    assert "✓ restore into a throwaway directory" in text and "dumps loaded: db (1.2 s)" in text
    assert "✓ db" in text and "✗ wiki" in text and "unhealthy: 500" in text
    assert "FAIL in 61 s · removed afterwards: 4 containers, 4 networks, 1 directories" in text
    data = report.as_json()
    assert data["result"] == "fail" and data["services"]["db"]["result"] == "pass"
    assert data["seconds"]["restore"] == 12.34


# ------------------------------------------------------- shared connection


def test_the_parts_of_a_backup_share_one_ssh_connection(tmp_path: Path) -> None:
    from firstboot.backup import borg
    from firstboot.backup.client import Borg

    remote = borg.Remote("ssh://borg@backup.example:2222/./arkbox", Path("/k"), Path("/kh"),
                         pinned=True)
    plain = borg.ssh_command(remote)
    assert "ControlMaster" not in plain
    shared = borg.ssh_command(remote, Path("/tmp/arkbox-ssh-x/master"))
    assert shared.startswith(plain)
    assert "-o ControlMaster=auto -o ControlPath=/tmp/arkbox-ssh-x/master" in shared
    assert "-o ControlPersist=30" in shared
    assert borg.close_shared_connection_argv(remote, Path("/s")) == (
        "ssh", "-o", "ControlPath=/s", "-O", "exit", "-p", "2222", "backup.example")

    calls: list[tuple[str, ...]] = []

    def record(argv: Any, **kwargs: Any) -> Completed:
        calls.append(tuple(argv))
        return Completed(tuple(argv), 0, "")

    shutil.copytree(REPO / "config/secrets", tmp_path / "config/secrets")
    shutil.copy(REPO / "config/default.yaml", tmp_path / "config/appliance.yaml")
    ctx = FirstbootContext(config=load_config(tmp_path / "config/appliance.yaml"),
                           paths=Paths(tmp_path / "root"), run=record)
    with Borg.shared(ctx) as runner:
        assert runner.control_path is not None
        socket_dir = runner.control_path.parent
        assert len(str(runner.control_path)) < 108 - 20  # ssh appends a suffix while binding
        assert f"ControlPath={runner.control_path}" in runner.env()["BORG_RSH"]
        runner.control_path.write_text("")  # as if ssh had made the socket
    assert calls[-1][:4] == ("ssh", "-o", f"ControlPath={runner.control_path}", "-O")
    assert not socket_dir.exists()


def test_socket_dirs_of_killed_runs_are_removed_by_the_next(tmp_path: Path) -> None:
    import os

    from firstboot.backup.client import remove_stale_socket_dirs

    old, live, young = (tmp_path / f"arkbox-ssh-{n}" for n in ("old", "live", "young"))
    for directory in (old, live, young):
        directory.mkdir()
    (live / "master").write_text("")  # a running backup's socket
    (tmp_path / "other").mkdir()
    for directory in (old, live):
        os.utime(directory, (1000, 1000))
    assert remove_stale_socket_dirs(tmp_path, 1000 + 601) == [old]
    assert live.exists() and young.exists() and (tmp_path / "other").exists()


def test_backups_and_checks_wait_for_the_repository_lock() -> None:
    from firstboot.backup import borg

    assert borg.with_lock_wait(borg.check_argv(True)) == (
        "borg", "check", "--lock-wait", "600", "--verify-data")
    assert borg.with_lock_wait(("borg", "create", "--json", "::a", "."), 5)[:4] == (
        "borg", "create", "--lock-wait", "5")
