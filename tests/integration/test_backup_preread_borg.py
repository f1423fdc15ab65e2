"""The pre-read (firstboot.backup.preread) with real borg over real SSH against the built
backup-server role, and real `docker pause` of stand-in containers (the rig of
tests/integration/test_backup_server.py): a large change is read live first and only what
changed since is read paused; a nightly change is not; a pre-read left by a killed run is
no backup for the restore, the drill, `list` or the prune, and the next backup deletes it.
How long the pauses are is measured by bench/backup.py, not here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from integration.test_backup_server import (
    Box,
    Server,
    fill_data,
    make_box,
    remove_standins,
    server_in_rig,
    start_standins,
)

from firstboot.backup import preread
from firstboot.backup.backup import (
    archives_with_sizes,
    list_archives,
    prune_archives,
    run_backup,
)
from firstboot.backup.cli import archive_table
from firstboot.backup.client import BackupError, BackupPaths, Borg
from firstboot.backup.restore import find_backup
from firstboot.steps import backup as backup_step

pytestmark = [pytest.mark.integration]

MIN_BYTES = 4 << 20  # the threshold these tests run with: small data, same behaviour


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    yield from server_in_rig("arkbox-pre", "172.30.156.0/24", "fd42:a7b0:c556::/64")


def names(box: Box) -> set[str]:
    return {str(a["name"]) for a in list_archives(box.ctx)}


def add_random(folder: Path, mib: int, prefix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(mib):
        (folder / f"{prefix}{index}").write_bytes(os.urandom(1 << 20))


def archived_paths(box: Box, archive: str) -> set[str]:
    out = Borg(box.ctx).run(("borg", "list", "--format", "{path}{NL}", f"::{archive}"),
                            what="listing").stdout
    return set(out.splitlines())


def test_a_large_change_is_read_live_first_and_a_nightly_one_is_not(
        server: Server, tmp_path: Path) -> None:
    box = make_box(tmp_path, server, "large")
    backup_step.run(box.ctx)
    fill_data(box.ctx.paths.root)
    calendar = box.ctx.paths.data / "volumes/calendar/collections"
    start_standins(box)
    try:
        first = run_backup(box.ctx, prune=False, preread_min_bytes=MIN_BYTES)
        assert first.preread is None  # a few bytes, all new: read paused as before

        add_random(calendar / "upload", 8, "big")
        large = run_backup(box.ctx, prune=False, preread_min_bytes=MIN_BYTES)
        assert large.preread is not None and large.preread.failed is None
        assert set(large.preread.changed) == {"calendar"}
        assert large.preread.changed["calendar"] >= 8 << 20
        assert large.pauses["calendar"] > 0  # still paused for its consistent read
        # The paused pass found the pre-read's chunks: 8 MiB of random bytes were read into
        # the repository once, by the pre-read.
        assert large.totals()["deduplicated_size"] < 1 << 20, large.stats
        assert {f"volumes/calendar/collections/upload/big{i}" for i in range(8)} <= (
            archived_paths(box, large.archive))
        # Its throwaway is gone, and so is the marker; the archive is a backup.
        in_repository = names(box)
        assert large.archive in in_repository
        assert not any(preread.is_preread(n) for n in in_repository), in_repository
        assert not BackupPaths(box.ctx.paths).preread_pending.exists()

        # A nightly change, below the threshold: no pre-read, no delete.
        (calendar / "user/tonight.ics").write_bytes(os.urandom(100 << 10))
        nightly = run_backup(box.ctx, prune=False, preread_min_bytes=MIN_BYTES)
        assert nightly.preread is None and nightly.cleanup_seconds == 0.0
        assert "volumes/calendar/collections/user/tonight.ics" in archived_paths(
            box, nightly.archive)
    finally:
        remove_standins(box)


def test_a_preread_left_by_a_killed_run_is_no_backup_and_the_next_backup_deletes_it(
        server: Server, tmp_path: Path) -> None:
    box = make_box(tmp_path, server, "killed")
    backup_step.run(box.ctx)
    fill_data(box.ctx.paths.root)
    start_standins(box)
    data = box.ctx.paths.data
    try:
        first = run_backup(box.ctx, prune=False)
        # More than the installer's threshold: `arkbox-installer backup` pre-reads calendar.
        add_random(data / "volumes/calendar/collections/upload", 20, "big")
        installer = str(Path(sys.executable).parent / "arkbox-installer")
        proc = subprocess.Popen(
            [installer, "backup", "--no-prune", "--root", str(box.ctx.paths.root),
             "--config", str(box.ctx.config.source_path)],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill it once the pre-read is committed: the archive's first gate is made again
        # (its first borg, stopped for the pre-read, removed it) while the marker is there.
        gate = data / ".backup/gate-start"
        marker = BackupPaths(box.ctx.paths).preread_pending
        deadline = time.monotonic() + 300
        while (not (marker.exists() and gate.exists()) and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.01)
        assert marker.exists() and gate.exists(), "the backup never got past its pre-read"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

        left = {n for n in names(box) if preread.is_preread(n)}
        assert len(left) == 1, names(box)
        leftover = left.pop()
        assert BackupPaths(box.ctx.paths).preread_pending.exists()
        # The restore and the drill (both choose with find_backup) take the real backup,
        # and refuse the leftover by name.
        chosen = find_backup(box.ctx)
        assert chosen is not None and chosen.name == first.archive
        with pytest.raises(BackupError):
            find_backup(box.ctx, leftover)
        # `list` shows it for what it is; the prune neither keeps nor deletes it.
        table = archive_table(archives_with_sizes(box.ctx))
        assert any(line.startswith(leftover) for line in table)
        assert "not a backup" in table[-1]
        prune_archives(box.ctx)
        assert leftover in names(box)

        # The next backup deletes it (after pre-reading the upload again, if it does: the
        # killed run recorded nothing, so the upload still counts as changed).
        report = run_backup(box.ctx, prune=False)
        after = names(box)
        assert leftover not in after and report.archive in after
        assert not any(preread.is_preread(n) for n in after)
        assert not BackupPaths(box.ctx.paths).preread_pending.exists()
    finally:
        remove_standins(box)
