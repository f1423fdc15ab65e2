"""`arkbox-installer drill`: prove the latest backup restores and works, without touching
the live box.

    1. find the latest complete backup (or --archive NAME) in the repository
    2. restore it into a throwaway root, /var/lib/arkbox/drill/<id>/ (its /srv/arkbox,
       its dumps), with the code a real restore runs (restore.restore)
    3. start the services from it in isolated containers: the installer rooted at the
       throwaway directory names everything `arkbox-t<hash>-…` (never `arkbox-…`),
       on networks of its own, with no published port; databases first, their dumps
       loaded (backup/dumps.py), then the rest (containers/services.py)
    4. run every service's health check until it passes or --timeout is up
    5. remove everything it made (containers, networks, files): always, also on a
       failure, Ctrl-C or SIGTERM; a drill killed with SIGKILL is cleaned up by the next

The live services, their data and /srv/arkbox are never touched. The borg key,
known_hosts and cache are the live box's (read; borg locks the repository itself).
The last drill's result is kept in /var/lib/arkbox/drill.json for status, and a line per
drill (the last HISTORY_KEPT) in drill-history.json (read by drill_record.py).
Not part of a drill: the proxy and mail (no published port may be made), and the
route checks through the proxy; each service's own health check is what is run.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

from firstboot.backup.client import BackupError, BackupPaths
from firstboot.backup.drill_record import HISTORY_FILE, HISTORY_KEPT, RESULT_FILE, drill_history
from firstboot.backup.dumps import load_dumps
from firstboot.backup.restore import find_backup, restore
from firstboot.containers.naming import Naming
from firstboot.containers.probe import container_problem
from firstboot.containers.services import converge_services
from firstboot.core import wait
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.errors import ArkboxError
from firstboot.core.files import atomic_write, ensure_dir
from firstboot.core.interrupts import terminate_as_interrupt
from firstboot.core.wait import NotYet

DRILL_SUBDIR = "drill"  # below /var/lib/arkbox
HEALTH_TIMEOUT_S = 300.0
POLL_S = 2.0
# Shared read-only with the live box, by symlink: what the installer reads below its root.
SHARED = ("/usr/share/arkbox",)


@dataclass
class ServiceResult:
    name: str
    ok: bool = False
    problem: str | None = "not started"
    seconds: float | None = None  # from start to healthy


@dataclass
class DrillReport:
    archive: str | None = None
    archive_time: str | None = None
    started_at: str = ""
    ok: bool = False
    failure: str | None = None
    hint: str | None = None
    restore_seconds: float | None = None
    start_seconds: float | None = None
    seconds: float = 0.0
    dumps: list[str] = field(default_factory=list)
    services: dict[str, ServiceResult] = field(default_factory=dict)
    cleaned: dict[str, int] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)
    prefix: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "result": "pass" if self.ok else "fail", "archive": self.archive,
            "archive_time": self.archive_time, "started_at": self.started_at,
            "failure": self.failure, "hint": self.hint,
            "seconds": {"restore": self.restore_seconds, "start": self.start_seconds,
                        "total": round(self.seconds, 1)},
            "dumps": self.dumps,
            "services": {n: {"result": "pass" if s.ok else "fail", "problem": s.problem,
                             "seconds": s.seconds} for n, s in self.services.items()},
            "cleaned": self.cleaned, "leftovers": self.leftovers, "prefix": self.prefix,
        }

    def lines(self) -> list[str]:
        """The report as an operator reads it."""
        mark = {True: "✓", False: "✗"}
        out = [f"drill of {self.archive or '(no backup)'}"
               + (f" (made {self.archive_time})" if self.archive_time else "")]
        if self.restore_seconds is not None:
            dumps = f", dumps loaded: {', '.join(self.dumps)}" if self.dumps else ""
            out.append(f"  {mark[True]} restore into a throwaway directory   "
                       f"{self.restore_seconds:6.1f} s{dumps}")
        for result in self.services.values():
            took = f"{result.seconds:6.1f} s" if result.seconds is not None else "       -"
            what = "healthy" if result.ok else (result.problem or "failed")
            out.append(f"  {mark[result.ok]} {result.name:32} {took}  {what}")
        if self.failure:
            out.append(f"  ✗ {self.failure}")
            if self.hint:
                out.append(f"    hint: {self.hint}")
        cleaned = ", ".join(f"{v} {k}" for k, v in self.cleaned.items() if v) or "nothing"
        out.append(f"{'PASS' if self.ok else 'FAIL'} in {self.seconds:.0f} s · "
                   f"removed afterwards: {cleaned}")
        if self.leftovers:
            out.append("  ✗ could not remove: " + ", ".join(self.leftovers))
        return out


def drill_root(live: Paths, run_id: str) -> Path:
    return live.state / DRILL_SUBDIR / run_id


def drill_context(live: FirstbootContext, root: Path) -> FirstbootContext:
    """The installer rooted at `root`: its own /srv/arkbox, names, networks; the live
    box's borg client state and baked recipes/images (symlinked, read only)."""
    paths = Paths(root)
    ensure_dir(paths.state, 0o700)
    backup_state = BackupPaths(paths).state
    if not backup_state.is_symlink():
        backup_state.symlink_to(BackupPaths(live.paths).state)
    for shared in SHARED:
        link = paths.at(shared)
        ensure_dir(link.parent, 0o755)
        if not link.is_symlink():
            link.symlink_to(live.paths.at(shared))
    return FirstbootContext(config=live.config, paths=paths, run=live.run, now=live.now)


def remove_drill(client: docker.DockerClient, root: Path) -> tuple[dict[str, int], list[str]]:
    """Remove every container, network and file of the drill at `root`. Returns what was
    removed and what could not be."""
    naming = Naming.for_root(root)
    removed = {"containers": 0, "networks": 0, "directories": 0}
    leftovers: list[str] = []
    for container in client.containers.list(all=True, filters=naming.filters()):
        try:
            container.remove(force=True, v=True)
            removed["containers"] += 1
        except docker.errors.APIError as err:
            leftovers.append(f"container {container.name} ({err.explanation or err})")
    for network in client.networks.list(filters=naming.filters()):
        try:
            network.remove()
            removed["networks"] += 1
        except docker.errors.APIError as err:
            leftovers.append(f"network {network.name} ({err.explanation or err})")
    if root.exists() or root.is_symlink():
        # rmtree unlinks symlinks, never follows them: the live box's files stay.
        shutil.rmtree(root, ignore_errors=True)
        removed["directories"] += 1
        if root.exists():
            leftovers.append(f"directory {root}")
    return removed, leftovers


def remove_stale_drills(live: FirstbootContext) -> list[str]:
    """Drills killed too hard to clean up after themselves (SIGKILL, power cut)."""
    base = live.paths.state / DRILL_SUBDIR
    found = []
    for root in sorted(base.glob("*")) if base.is_dir() else []:
        remove_drill(live.docker, root)
        found.append(root.name)
    return found


def run_drill(live: FirstbootContext, archive: str | None = None,
              timeout_s: float = HEALTH_TIMEOUT_S,
              progress: Callable[[str], None] = lambda line: None) -> DrillReport:
    """Restore into a throwaway root, start it isolated, check health, remove it all."""
    started = time.monotonic()
    now = live.now()
    report = DrillReport(started_at=now.isoformat(timespec="seconds"))
    stale = remove_stale_drills(live)
    if stale:
        live.log.warning("removed the remains of earlier drills: %s", " ".join(stale))
    root = drill_root(live.paths, now.strftime("%Y%m%dT%H%M%S") + f"-{time.time_ns() % 10**6}")
    report.prefix = Naming.for_root(root).prefix
    try:
        with terminate_as_interrupt() as shield:
            try:
                _drill(live, root, archive, timeout_s, report, progress)
            except ArkboxError as err:
                report.failure, report.hint = err.message, err.hint
            except KeyboardInterrupt:
                report.failure = "interrupted"
                raise
            finally:
                shield()
                progress("removing everything the drill made")
                report.cleaned, report.leftovers = remove_drill(live.docker, root)
    finally:
        report.seconds = time.monotonic() - started
        report.ok = (report.failure is None and not report.leftovers
                     and bool(report.services)
                     and all(s.ok for s in report.services.values()))
        save_report(live.paths, report)
    return report


def _drill(live: FirstbootContext, root: Path, archive: str | None, timeout_s: float,
           report: DrillReport, progress: Callable[[str], None]) -> None:
    ctx = drill_context(live, root)
    backup = find_backup(ctx, archive)
    if backup is None:
        raise BackupError("the repository holds no complete backup: nothing to drill",
                          hint="make one: arkbox-installer backup")
    report.archive, report.archive_time = backup.name, backup.time
    report.services = {name: ServiceResult(name) for name in sorted(ctx.config.services)}
    progress(f"restoring {backup.name} into {root}")
    phase = time.monotonic()
    restored = restore(ctx, backup)
    report.restore_seconds = round(time.monotonic() - phase, 1)
    progress(f"restored in {report.restore_seconds:.1f} s; starting the services isolated "
             f"({report.prefix}-*)")
    phase = time.monotonic()
    report.dumps = load_dumps(ctx)  # databases first, their dumps loaded
    converge_services(ctx)  # then the rest
    if restored.dumps and not report.dumps:
        raise BackupError("the backup's database dumps were not loaded")
    _wait_healthy(ctx, report, phase, timeout_s, progress)
    report.start_seconds = round(time.monotonic() - phase, 1)


def _wait_healthy(ctx: FirstbootContext, report: DrillReport, since: float,
                  timeout_s: float, progress: Callable[[str], None]) -> None:
    naming = Naming.for_root(ctx.paths.root)
    waiting = set(report.services)

    def all_healthy() -> bool | NotYet:
        for name in sorted(waiting):
            result = report.services[name]
            result.problem = container_problem(ctx.docker, naming.container(name))
            if result.problem is None:
                result.ok, result.seconds = True, round(time.monotonic() - since, 1)
                waiting.discard(name)
                progress(f"{name}: healthy after {result.seconds:.1f} s")
        return True if not waiting else NotYet(", ".join(
            f"{n}: {report.services[n].problem}" for n in sorted(waiting)))

    try:
        wait.until("the drill's services to be healthy", all_healthy, timeout_s,
                   interval_s=POLL_S)
    except wait.WaitTimedOut:
        report.failure = (f"{len(waiting)} service(s) not healthy after {timeout_s:.0f} s: "
                          + ", ".join(sorted(waiting)))
        report.hint = ("the backup restores, but these services do not come up from it: "
                       "see the problems above; the live box is untouched")


def save_report(paths: Paths, report: DrillReport) -> None:
    target = paths.state / RESULT_FILE
    ensure_dir(target.parent, 0o755)
    atomic_write(target, json.dumps(report.as_json(), indent=2) + "\n", mode=0o644)
    history = [*drill_history(paths), history_entry(report)][-HISTORY_KEPT:]
    atomic_write(paths.state / HISTORY_FILE, json.dumps(history, indent=1) + "\n", mode=0o644)


def history_entry(report: DrillReport) -> dict[str, Any]:
    """One drill in the history: when, which archive, pass or fail, how long, why not."""
    healthy = [s.seconds for s in report.services.values() if s.seconds is not None]
    return {"started_at": report.started_at, "archive": report.archive,
            "result": "pass" if report.ok else "fail", "seconds": round(report.seconds, 1),
            "seconds_to_healthy": round(max(healthy), 1) if healthy else None,
            "failure": report.failure}
