"""A live read of a paused service's volumes before the paused pass, when much changed.

A `pause` service is paused while borg reads its volumes (firstboot.backup.feed), and borg
reads a file only when its files cache does not know it unchanged (same path, inode, size
and ctime). After a large change (a first backup, a restore, a big upload) the pause lasts
as long as borg reads all of it: seconds per GiB. So before the real archive, the volumes
of each service with at least `MIN_CHANGED_BYTES` changed since the last backup are read
live into a throwaway archive `<archive>.preread`; the paused pass then finds every file
that did not change since in the files cache and reads only what did.

Why it works, from borg's cache.py (1.2 and 1.4 alike):

* the files cache is saved only when a `borg create` commits: the pre-read is a whole
  archive of its own, not a dry run;
* its key is the path as borg got it joined to borg's working directory: both passes run
  in the same private view of /srv/arkbox, with the same walk's relative paths;
* a cached file is reused only while its chunks are in the repository: the throwaway is
  deleted after the real archive, which holds the same chunks;
* entries whose ctime is the newest of the run are not saved: a stamp file written after
  the walk is that newest, so a volume's last-written file is cached too;
* entries not seen by a run age by one; the real archive sees them again (the TTL is 20).

Nothing else takes the throwaway for a backup: its name does not end in the stamp's `Z`
(neither the restore's, the drill's nor the prune's patterns match it), and `list` marks
it. A marker file says one may be in the repository (a run killed after it was committed);
the next backup deletes every `<host>-*.preread*` after its own archive.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from firstboot.backup import borg, feed
from firstboot.backup.client import BackupError, BackupPaths, Borg
from firstboot.core.context import FirstbootContext
from firstboot.core.files import atomic_write, ensure_dir

SUFFIX = ".preread"
# Changed bytes from which a paused service is read live first. Below, read while paused,
# they add up to ~0.1 s to its pause (borg reads new data at 10-14 ms per MiB on the loaded
# bench machine); any change adds ~0.05 s anyway (borg's item metadata), and a pre-read of
# 4 MiB left pauses no shorter than a paused read of it (docs/backup.md "Benchmarks").
# Above, the pre-read's own cost (a borg start-up stopped, the pre-read, a delete: ~3 s,
# nothing paused) buys back more pause than it costs.
MIN_CHANGED_BYTES = 8 << 20
STAMP = f"{feed.RUN_DIR}/preread-stamp"
# The pre-read reads what changed: hours for a very large first backup, as the real one.
CREATE_TIMEOUT_S = 12 * 3600
DELETE_TIMEOUT_S = borg.LOCK_WAIT_S + 600


def archive_name(archive: str) -> str:
    """The throwaway of backup `archive` (not a backup name: it does not end in `Z`)."""
    return f"{archive}{SUFFIX}"


def leftover_glob(host: str) -> str:
    """Every pre-read of `host`, and a checkpoint of one (`NAME.preread.checkpoint`)."""
    return f"{host}-*{SUFFIX}*"


def is_preread(name: str) -> bool:
    return SUFFIX in name


def changed_bytes(data: Path, tops: Iterable[str], since_ns: int | None, enough: int) -> int:
    """Bytes of the regular files below `tops` (relative to `data`) whose ctime is at or
    after `since_ns` (every file when None): what borg would read. Stops at `enough`."""
    total = 0
    root_dev = os.lstat(data).st_dev
    stack = [str(data / top) for top in tops]
    while stack and total < enough:
        try:
            with os.scandir(stack.pop()) as entries:
                found = list(entries)
        except OSError:
            continue  # removed since, or unreadable: borg reports it when it gets there
        for entry in found:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                if info.st_dev == root_dev:
                    stack.append(entry.path)
            elif stat.S_ISREG(info.st_mode) and (since_ns is None
                                                 or info.st_ctime_ns >= since_ns):
                total += info.st_size
    return total


def choose(data: Path, plan: feed.Plan, since_ns: int | None,
           min_bytes: int = MIN_CHANGED_BYTES) -> dict[str, int]:
    """The paused services worth a pre-read, with the bytes changed in their volumes."""
    chosen = {}
    for part in plan.paused:
        changed = changed_bytes(data, part.paths, since_ns, min_bytes)
        if changed >= min_bytes:
            chosen[part.service] = changed
    return chosen


class ReadLiveFirst(Exception):
    """Raised in the real archive's feed while borg starts, before anything is paused or
    read: these services changed enough to be read live first. Borg is stopped unread."""

    def __init__(self, changed: dict[str, int], since_ns: int | None) -> None:
        super().__init__(", ".join(sorted(changed)))
        self.changed = changed
        self.since_ns = since_ns


def decision(data: Path, plan: feed.Plan, since_ns: int | None,
             min_bytes: int = MIN_CHANGED_BYTES) -> Callable[[], None]:
    """What the feed calls once borg is starting: a nightly backup's walk of the paused
    volumes then costs nothing (borg's start-up takes longer); a large change raises."""

    def decide() -> None:
        changed = choose(data, plan, since_ns, min_bytes)
        if changed:
            raise ReadLiveFirst(changed, since_ns)
    return decide


# ------------------------------------------------------------------ the record on disk


def read_since(paths: BackupPaths) -> int | None:
    """When the last successful backup started reading (ns): borg's files cache knows
    every file unchanged since. None when no backup was made here (or after a restore)."""
    try:
        raw = json.loads(paths.read_since.read_text())
        return int(raw["since_ns"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def record_since(paths: BackupPaths, since_ns: int, archive: str) -> None:
    ensure_dir(paths.read_since.parent, 0o700)
    atomic_write(paths.read_since,
                 json.dumps({"since_ns": since_ns, "archive": archive}) + "\n", mode=0o600)


def leftover_possible(paths: BackupPaths) -> bool:
    """A pre-read may be in the repository: one was started and never deleted, or this box
    has no record of its backups (a restored box: the marker was on the old one)."""
    return paths.preread_pending.exists() or read_since(paths) is None


# ------------------------------------------------------------------------- borg runs


@dataclass
class Preread:
    """What one pre-read did, for the report."""

    archive: str
    changed: dict[str, int]  # service -> bytes changed since the last backup
    seconds: float = 0.0
    failed: str | None = None


def run_preread(ctx: FirstbootContext, runner: Borg, plan: feed.Plan, archive: str,
                changed: dict[str, int], since_ns: int | None) -> Preread:
    """Read what changed since `since_ns` in the volumes of the `changed` services live
    into `archive`.preread. A failure is logged, not raised: the paused pass then reads
    everything, as without a pre-read."""
    result = Preread(archive_name(archive), changed)
    parts = [p for p in plan.paused if p.service in changed]
    where = BackupPaths(ctx.paths)
    ensure_dir(where.state, 0o700)
    # Before borg runs: a run killed after the commit still leaves the marker behind.
    atomic_write(where.preread_pending, result.archive + "\n", mode=0o600)
    comment = json.dumps({"arkbox": "preread", "of": archive,
                          "services": sorted(changed)})
    argv = borg.in_private_view(ctx.paths.data, borg.with_lock_wait(
        borg.create_from_stdin_argv(result.archive, compression=ctx.config.backup.compression,
                                    comment=comment)))
    started = time.monotonic()
    try:
        runner.run(argv, cwd=ctx.paths.data, what="the pre-read",
                   feed=_paths_of(ctx, parts, since_ns), timeout=CREATE_TIMEOUT_S)
    except BackupError as err:
        result.failed = err.message
        ctx.log.warning("the pre-read of %s failed; the paused pass reads all of it: %s",
                        ", ".join(sorted(changed)), err.message)
    finally:
        (ctx.paths.data / STAMP).unlink(missing_ok=True)
    result.seconds = time.monotonic() - started
    ctx.log.info("pre-read %s live in %.1f s (%s changed since the last backup)",
                 ", ".join(sorted(changed)), result.seconds,
                 ", ".join(f"{s} {b >> 20} MiB" for s, b in sorted(changed.items())))
    return result


def _paths_of(ctx: FirstbootContext, parts: Sequence[feed.Paused], since_ns: int | None
              ) -> Callable[[IO[bytes], Callable[[], bool]], None]:
    """The volumes' regular files changed since `since_ns` (all without a record), named
    exactly as the paused pass names them (the files cache's key), then the stamp (see the
    module's docstring). The files cache knows the others already: not listing them keeps
    the throwaway small."""
    data = ctx.paths.data

    def write(out: IO[bytes], alive: Callable[[], bool]) -> None:
        writer = feed.PathWriter(out)
        for part in parts:
            for top in part.paths:
                for rel in feed.walk(data, top, frozenset({feed.RUN_DIR}), feed.Walked()):
                    if _changed_file(data / rel, since_ns):
                        writer.path(rel)
        stamp = data / STAMP
        ensure_dir(stamp.parent, 0o700)
        stamp.write_bytes(b"")  # written now: newer than every file listed above
        writer.path(STAMP)
    return write


def _changed_file(path: Path, since_ns: int | None) -> bool:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(info.st_mode) and (since_ns is None or info.st_ctime_ns >= since_ns)


def delete_leftovers(ctx: FirstbootContext, runner: Borg) -> bool:
    """Delete every pre-read of this appliance (after the real archive, which holds their
    chunks). On an append-only server this marks them deleted, like a prune. False (and
    the marker kept, for the next run) when borg failed: the backup itself stands."""
    where = BackupPaths(ctx.paths)
    glob = leftover_glob(ctx.config.appliance.name)
    try:
        runner.run(borg.with_lock_wait(borg.delete_glob_argv(glob)),
                   what="deleting the pre-read", timeout=DELETE_TIMEOUT_S)
    except BackupError as err:
        ctx.log.warning("could not delete the pre-read archive(s) %s (the next backup "
                        "tries again; no restore takes them for a backup): %s", glob,
                        err.message)
        return False
    where.preread_pending.unlink(missing_ok=True)
    return True


__all__ = ["MIN_CHANGED_BYTES", "Preread", "ReadLiveFirst", "archive_name", "changed_bytes",
           "choose", "decision", "delete_leftovers", "is_preread", "leftover_glob",
           "leftover_possible", "read_since", "record_since", "run_preread"]
