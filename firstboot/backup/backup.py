"""`arkbox-installer backup`: one consistent backup, one archive `<host>-<UTC>`.

Everything under /srv/arkbox goes in: config, manifest, secrets (the DKIM key), TLS,
service volumes, the mail store, and each database's dump (streamed from
`docker exec <dump_command>`; no copy on disk). One `borg create --paths-from-stdin`
makes it; the list of paths is written while borg runs (firstboot.backup.feed), so each
`pause` service and the mail container are paused only while borg reads their volumes
(the pause time is reported). The archive's comment says what is in it; the restore
checks it. Nothing of the operating system is in it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import docker.errors

from firstboot.backup import borg, feed, preread
from firstboot.backup.client import (
    BackupError,
    BackupPaths,
    Borg,
    record_repository,
    record_stats,
)
from firstboot.containers.naming import Naming
from firstboot.core.context import FirstbootContext
from firstboot.core.execute import CommandError
from firstboot.core.files import atomic_write, ensure_dir

CONFIG_DIR = "config"  # /srv/arkbox/config: the validated config, as the box runs it


@dataclass
class BackupReport:
    archive: str
    seconds: float = 0.0
    pauses: dict[str, float] = field(default_factory=dict)  # service -> seconds paused
    stats: dict[str, Any] = field(default_factory=dict)  # borg create --json
    skipped: list[str] = field(default_factory=list)  # names borg cannot be given
    pruned: bool = False
    preread: preread.Preread | None = None  # the live read before the paused pass, if any
    cleanup_seconds: float = 0.0  # deleting the pre-read (or a killed run's) after the archive

    def totals(self) -> dict[str, int]:
        stats = self.stats.get("archive", {}).get("stats", {})
        return {key: int(stats.get(key, 0)) for key in
                ("original_size", "compressed_size", "deduplicated_size", "nfiles")}

    def as_json(self, finished_at: str) -> dict[str, Any]:
        return {"archive": self.archive, "finished_at": finished_at,
                "seconds": round(self.seconds, 2),
                "pauses": {k: round(v, 3) for k, v in self.pauses.items()},
                "skipped": self.skipped, "pruned": self.pruned, **self.totals(),
                **({"preread": {"changed": self.preread.changed,
                                "seconds": round(self.preread.seconds, 2),
                                "failed": self.preread.failed}} if self.preread else {})}

    def summary(self) -> str:
        t = self.totals()
        ratio = t["original_size"] / t["deduplicated_size"] if t["deduplicated_size"] else 0.0
        pauses = ", ".join(f"{k} paused {v:.2f} s" for k, v in self.pauses.items()) or "no pause"
        skipped = (f"; NOT backed up (a carriage return in the name): {', '.join(self.skipped)}"
                   if self.skipped else "")
        read = self.preread
        before = ("" if read is None else
                  f" (read live first: {', '.join(sorted(read.changed))}, {read.seconds:.1f} s"
                  f"{'; that pre-read failed' if read.failed else ''})")
        return (f"{self.archive}: {t['nfiles']} files, {t['original_size'] >> 20} MiB, "
                f"{t['deduplicated_size'] >> 10} KiB new (dedup {ratio:.1f}x), "
                f"{self.seconds:.1f} s; {pauses}{before}{skipped}")


def snapshot_config(ctx: FirstbootContext) -> None:
    """The validated config the box runs, into /srv/arkbox/config (carried by the archive)."""
    source = ctx.config.source_path
    if source is None:
        return
    target = ctx.paths.data / CONFIG_DIR / "appliance.yaml"
    ensure_dir(target.parent, 0o700)
    content = Path(source).read_bytes()
    if not target.exists() or target.read_bytes() != content:
        atomic_write(target, content, mode=0o600)


def run_backup(ctx: FirstbootContext, *, prune: bool = True,
               preread_min_bytes: int = preread.MIN_CHANGED_BYTES) -> BackupReport:
    """One backup now; each part's stats and each service's pause time in the report.

    A paused service with at least `preread_min_bytes` changed since the last backup is
    read live first (firstboot.backup.preread), so that its pause lasts as long as borg
    reads what changed after that, not all of it."""
    started = time.monotonic()
    data = ctx.paths.data
    if not (data / "manifest.json").exists() and not any(data.glob("*")):
        raise BackupError(f"nothing to back up: {data} is empty",
                          hint="run arkbox-installer firstboot first")
    snapshot_config(ctx)
    where = BackupPaths(ctx.paths)
    plan = feed.plan_backup(ctx.config, lambda s, v: (data / "volumes" / s / v).is_dir())
    report = BackupReport(borg.archive_stamp(ctx.config.appliance.name, ctx.now()))
    leftover = preread.leftover_possible(where)
    decide = preread.decision(data, plan, preread.read_since(where), preread_min_bytes)
    with Borg.shared(ctx) as runner:  # one SSH connection for every borg run of it
        reading_from = time.time_ns()
        try:
            _make_archive(ctx, runner, plan, report, decide)
        except preread.ReadLiveFirst as first:  # borg was stopped while it started
            report.preread = preread.run_preread(ctx, runner, plan, report.archive,
                                                 first.changed, first.since_ns)
            reading_from = time.time_ns()
            _make_archive(ctx, runner, plan, report)
        if report.preread or leftover:  # after the archive: it holds the pre-read's chunks
            cleanup_started = time.monotonic()
            preread.delete_leftovers(ctx, runner)
            report.cleanup_seconds = time.monotonic() - cleanup_started
        if prune:
            prune_archives(ctx, runner)
            report.pruned = True
    report.seconds = time.monotonic() - started
    preread.record_since(where, reading_from, report.archive)
    record_stats(ctx.paths, report.as_json(ctx.now().isoformat(timespec="seconds")))
    record_repository(ctx.paths, runner.remote.repository, ctx.now(), "backup")
    return report


def _make_archive(ctx: FirstbootContext, runner: Borg, plan: feed.Plan,
                  report: BackupReport, decide: Callable[[], None] | None = None) -> None:
    data = ctx.paths.data
    config = ctx.config
    run_dir = data / feed.RUN_DIR
    shutil.rmtree(run_dir, ignore_errors=True)  # a killed run's FIFOs
    ensure_dir(run_dir, 0o700)
    feeder = _Feeder(ctx, plan, report, decide)
    comment = json.dumps(plan.comment(config.appliance.name))
    argv = borg.in_private_view(data, borg.with_lock_wait(borg.create_from_stdin_argv(
        report.archive, compression=config.backup.compression, comment=comment)))
    try:
        report.stats = runner.json(argv, cwd=data, what="backup", feed=feeder)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@dataclass
class _Feeder:
    """Writes the archive's paths to borg (firstboot.backup.feed) and pauses, unpauses and
    dumps as borg gets to each; runs in a thread beside borg."""

    ctx: FirstbootContext
    plan: feed.Plan
    report: BackupReport
    # Called while borg starts, before anything is paused: may stop this archive for a
    # pre-read (firstboot.backup.preread.decision).
    decide: Callable[[], None] | None = None

    def __call__(self, out: IO[bytes], alive: Callable[[], bool]) -> None:
        data = self.ctx.paths.data
        writer = feed.PathWriter(out)
        found = feed.Walked()
        naming = Naming.for_root(self.ctx.paths.root)
        if self.plan.paused:  # no pause while borg starts and opens the repository
            gate = self._write_gate(writer, "start")
            if self.decide is not None:
                self.decide()
            os.close(feed.open_when_read(gate, alive))
        for part in self.plan.paused:
            self._read_paused(writer, alive, naming.container(part.service), part, found)
        writer.path(feed.RUN_DIR)
        for rel in feed.walk(data, ".", self.plan.skip, found):
            writer.path(rel)
        writer.path(feed.specials_file(data, found))
        for dump in self.plan.dumps:
            self._dump(writer, alive, naming.container(dump.service), dump)
        self.report.skipped = found.skipped

    def _read_paused(self, writer: feed.PathWriter, alive: Callable[[], bool], container: str,
                     part: feed.Paused, found: feed.Walked) -> None:
        data = self.ctx.paths.data
        paused = _pause(self.ctx, container)
        paused_at = time.monotonic()
        try:
            for top in part.paths:
                for rel in feed.walk(data, top, frozenset({feed.RUN_DIR}), found):
                    writer.path(rel)
            self._to_gate(writer, alive, part.service)
        finally:
            if paused:
                _unpause(self.ctx, container)
        self.report.pauses[part.service] = time.monotonic() - paused_at if paused else 0.0
        self.ctx.log.info("%s paused %.2f s while borg read %s", container,
                          self.report.pauses[part.service], ", ".join(part.paths))

    def _to_gate(self, writer: feed.PathWriter, alive: Callable[[], bool], name: str) -> None:
        """Returns once borg has read every path written before (see feed)."""
        os.close(feed.open_when_read(self._write_gate(writer, name), alive))

    def _write_gate(self, writer: feed.PathWriter, name: str) -> Path:
        """The gate, listed after every path written before: borg opens it after them."""
        rel = f"{feed.RUN_DIR}/gate-{name}"
        gate = self.ctx.paths.data / rel
        feed.make_fifo(gate)
        writer.path(rel)
        writer.flush_to_borg()
        return gate

    def _dump(self, writer: feed.PathWriter, alive: Callable[[], bool], container: str,
              dump: feed.Dump) -> None:
        fifo = self.ctx.paths.data / dump.path
        feed.make_fifo(fifo)
        writer.path(dump.path)
        writer.flush_to_borg()
        fd = feed.open_when_read(fifo, alive)
        os.set_blocking(fd, True)  # the dump command writes as fast as borg reads
        try:
            self.ctx.run(borg.docker_exec_argv(container, dump.command), stdout_fd=fd)
        except CommandError as err:
            raise BackupError(f"the dump of {dump.service} failed: {err.message}",
                              hint=f"check the service's backup.dump_command and that "
                              f"{container} runs; nothing was stored") from err
        finally:
            os.close(fd)


# Pause and unpause through the Engine API: a `docker` CLI run costs more than the call,
# and every millisecond of it is paused time.
def _pause(ctx: FirstbootContext, container: str) -> bool:
    """Pause the container; False when it cannot be (not running): its volumes are read as
    they are. A container left paused by a killed backup is read so, and unpaused after."""
    try:
        ctx.docker.api.pause(container)
    except docker.errors.APIError as err:
        if "already paused" not in str(err):
            ctx.log.warning("could not pause %s (%s); reading its volumes live", container,
                            err.explanation or err)
            return False
        ctx.log.warning("%s was left paused by an interrupted backup; unpausing it after "
                        "this read", container)
    return True


def _unpause(ctx: FirstbootContext, container: str) -> None:
    try:
        ctx.docker.api.unpause(container)
    except docker.errors.APIError as err:
        raise BackupError(f"could not unpause {container}: {err.explanation or err}",
                          hint=f"unpause it now: docker unpause {container}") from err


def prune_archives(ctx: FirstbootContext, runner: Borg | None = None) -> None:
    """Prune by the retention. On an append-only server this only marks: the space comes
    back when the server's operator compacts (docs/backup.md)."""
    runner = runner or Borg(ctx)
    glob = borg.archive_glob(ctx.config.appliance.name)
    runner.run(borg.with_lock_wait(borg.prune_argv(glob, ctx.config.backup.retention)),
               what="prune")


def list_archives(ctx: FirstbootContext) -> list[dict[str, Any]]:
    raw = Borg(ctx).json(borg.list_argv(), what="listing the archives")
    archives = raw.get("archives", []) if isinstance(raw, dict) else []
    return [a for a in archives if isinstance(a, dict)]


def archives_with_sizes(ctx: FirstbootContext) -> list[dict[str, Any]]:
    """This appliance's archives (checkpoints too), oldest first, with borg's stats."""
    glob = f"{ctx.config.appliance.name}-*"
    raw = Borg(ctx).json(borg.info_archives_argv(glob), what="reading the archives")
    archives = raw.get("archives", []) if isinstance(raw, dict) else []
    return [a for a in archives if isinstance(a, dict)]


def check_repository(ctx: FirstbootContext, verify_data: bool = False) -> str:
    result = Borg(ctx).run(borg.with_lock_wait(borg.check_argv(verify_data)),
                           what="borg check")
    return (result.stderr or result.stdout).strip() or "repository and archives consistent"


__all__ = ["BackupError", "BackupPaths", "BackupReport", "archives_with_sizes",
           "check_repository", "list_archives", "prune_archives", "run_backup"]
