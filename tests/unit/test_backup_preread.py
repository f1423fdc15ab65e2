"""The pre-read before the paused pass (firstboot.backup.preread): when it runs, what it
reads, the order of the borg runs, and that nothing takes its throwaway for a backup.
The same against a real repository: tests/integration/test_backup_preread_borg.py."""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from firstboot.backup import borg, feed, preread
from firstboot.backup.backup import run_backup
from firstboot.backup.cli import archive_table
from firstboot.backup.client import BackupPaths
from firstboot.backup.restore import complete_backups
from firstboot.core.config import load_config
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.execute import CommandError, Completed

REPO = Path(__file__).resolve().parents[2]
HOST = "arkbox-test"
BACKUP = f"{HOST}-2026-12-07T030000Z"


def test_the_throwaway_is_never_a_backup_and_its_glob_finds_only_throwaways() -> None:
    name = preread.archive_name(BACKUP)
    assert borg.parse_archive_name(name) is None
    assert complete_backups([{"name": name}, {"name": BACKUP}], HOST) == [
        complete_backups([{"name": BACKUP}], HOST)[0]]
    assert not fnmatch.fnmatchcase(name, borg.archive_glob(HOST))  # the prune's
    leftovers = preread.leftover_glob(HOST)
    assert fnmatch.fnmatchcase(name, leftovers)
    assert fnmatch.fnmatchcase(f"{name}.checkpoint", leftovers)
    assert not fnmatch.fnmatchcase(BACKUP, leftovers)
    assert not fnmatch.fnmatchcase(f"{BACKUP}.checkpoint", leftovers)
    assert borg.delete_glob_argv(leftovers) == ("borg", "delete", "--glob-archives", leftovers)
    with pytest.raises(ValueError):
        borg.delete_glob_argv("")  # a bare `borg delete` names the whole repository


def test_list_marks_a_leftover_throwaway() -> None:
    lines = archive_table([{"name": BACKUP}, {"name": preread.archive_name(BACKUP)}])
    assert "not a backup" in lines[-1] and "next backup deletes it" in lines[-1]
    assert "not a backup" not in "\n".join(archive_table([{"name": BACKUP}]))


def test_changed_bytes_counts_regular_files_changed_since(tmp_path: Path) -> None:
    vol = tmp_path / "volumes/svc/data"
    (vol / "sub").mkdir(parents=True)
    (vol / "old.bin").write_bytes(b"o" * 1000)
    since = time.time_ns()
    time.sleep(0.02)  # past the file system's ctime granularity
    (vol / "sub/new.bin").write_bytes(b"n" * 3000)
    (vol / "link").symlink_to("/dev/zero")
    os.mkfifo(vol / "pipe")
    tops = ["volumes/svc/data"]
    assert preread.changed_bytes(tmp_path, tops, since, 1 << 30) == 3000
    assert preread.changed_bytes(tmp_path, tops, None, 1 << 30) == 4000  # no record: all
    assert preread.changed_bytes(tmp_path, ["volumes/svc/gone"], None, 1 << 30) == 0
    assert preread.changed_bytes(tmp_path, tops, None, 1) in (1000, 3000, 4000)  # stops early


def test_only_services_with_enough_changed_are_chosen(tmp_path: Path) -> None:
    for service, size in (("big", 5000), ("small", 10)):
        folder = tmp_path / "volumes" / service / "data"
        folder.mkdir(parents=True)
        (folder / "f").write_bytes(b"x" * size)
    plan = feed.Plan((feed.Paused("big", ("volumes/big/data",)),
                      feed.Paused("small", ("volumes/small/data",))), (), frozenset())
    assert preread.choose(tmp_path, plan, None, min_bytes=4096) == {"big": 5000}
    assert preread.choose(tmp_path, plan, time.time_ns() + 10**9, min_bytes=4096) == {}


def test_the_preread_gives_borg_the_changed_files_as_the_paused_pass_names_them(
        tmp_path: Path) -> None:
    ctx = _context(tmp_path, lambda argv, **kw: Completed(tuple(argv), 0, ""))
    data = ctx.paths.data
    user = data / "volumes/calendar/collections/u"
    user.mkdir(parents=True)
    (user / "old.ics").write_text("x")
    since = time.time_ns()
    time.sleep(0.02)
    (user / "new.ics").write_text("y")
    (user / "link").symlink_to("new.ics")
    part = feed.Paused("calendar", ("volumes/calendar/collections",))

    def listed(since_ns: int | None) -> list[str]:
        out = io.BytesIO()
        preread._paths_of(ctx, [part], since_ns)(out, lambda: True)
        return out.getvalue().decode().split("\0")[:-1]

    # The files cache's key is the path borg is given: the paused pass's walk, as is.
    paused = list(feed.walk(data, part.paths[0], frozenset({feed.RUN_DIR}), feed.Walked()))
    files = [p for p in paused if p.endswith(".ics")]
    assert listed(None) == [*files, preread.STAMP]  # no record: every file
    assert listed(since) == ["volumes/calendar/collections/u/new.ics", preread.STAMP]
    newest = max((data / p).lstat().st_ctime_ns for p in paused)
    assert (data / preread.STAMP).lstat().st_ctime_ns >= newest


class Recorder:
    """Stands for execute.run: records the borg runs, fails those with an argument
    holding one of `failing`."""

    def __init__(self, failing: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.failing = failing

    def __call__(self, argv: Any, **kwargs: Any) -> Completed:
        argv = tuple(argv)
        self.calls.append(argv)
        if kwargs.get("feed") is not None:
            # As borg exiting at once: the feed runs up to its first gate (a pre-read's
            # decision included) and ends there, as execute.run ends it.
            with contextlib.suppress(BrokenPipeError):
                kwargs["feed"](io.BytesIO(), lambda: False)
        if any(f in arg for f in self.failing for arg in argv):
            raise CommandError(argv, 2, "Remote: Borg server: something went wrong")
        return Completed(argv, 0, "{}")

    def borg_runs(self) -> list[str]:
        """'create NAME' / 'delete' / 'prune' for each borg run, in order."""
        runs = []
        for argv in self.calls:
            if "borg" not in argv:
                continue
            command = argv[argv.index("borg") + 1]
            archive = next((a[2:] for a in argv if a.startswith("::")), "")
            runs.append(f"{command} {archive}".strip())
        return runs


def _context(tmp_path: Path, run: Any) -> FirstbootContext:
    shutil.copytree(REPO / "config/secrets", tmp_path / "config/secrets", dirs_exist_ok=True)
    config = tmp_path / "config/appliance.yaml"
    shutil.copy(REPO / "config/default.yaml", config)
    return FirstbootContext(config=load_config(config), paths=Paths(tmp_path / "root"), run=run)


def _box(tmp_path: Path, recorder: Recorder) -> FirstbootContext:
    ctx = _context(tmp_path, recorder)
    paused = [p.service for p in feed.plan_backup(ctx.config, lambda s, v: True).paused]
    assert paused, "the default config has a paused service"
    service = paused[0]
    for volume in ctx.config.services[service].volumes:
        folder = ctx.paths.data / "volumes" / service / volume
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "big.bin").write_bytes(os.urandom(64 << 10))
    (ctx.paths.data / "manifest.json").write_text("{}")
    return ctx


def test_a_large_change_is_read_live_first_and_its_throwaway_deleted_after_the_archive(
        tmp_path: Path) -> None:
    recorder = Recorder()
    ctx = _box(tmp_path, recorder)
    report = run_backup(ctx, preread_min_bytes=32 << 10)
    assert report.preread is not None and report.preread.failed is None
    throwaway = preread.archive_name(report.archive)
    # The archive's borg is stopped while it starts (the decision runs then), the pre-read
    # runs, then the archive's borg again; the throwaway is deleted after it.
    assert recorder.borg_runs() == [f"create {report.archive}", f"create {throwaway}",
                                    f"create {report.archive}", "delete", "prune"]
    where = BackupPaths(ctx.paths)
    assert not where.preread_pending.exists()
    assert preread.read_since(where) is not None
    assert "preread" in report.as_json("now")

    # The next night, nothing changed: no pre-read and no delete; the same borg runs as
    # before the pre-read existed.
    recorder.calls.clear()
    report = run_backup(ctx, preread_min_bytes=32 << 10)
    assert report.preread is None
    assert recorder.borg_runs() == [f"create {report.archive}", "prune"]


def test_a_failed_preread_leaves_the_backup_to_the_paused_pass_and_its_marker_behind(
        tmp_path: Path) -> None:
    recorder = Recorder(failing=("delete",))
    ctx = _box(tmp_path, recorder)
    where = BackupPaths(ctx.paths)
    report = run_backup(ctx, preread_min_bytes=32 << 10)
    assert recorder.borg_runs()[2:] == [f"create {report.archive}", "delete", "prune"]
    assert where.preread_pending.exists()  # the delete failed: the next run tries again

    # A run killed after its pre-read committed leaves the marker too: the next backup,
    # with nothing to pre-read, still deletes the leftovers after its archive.
    recorder.failing = ()
    recorder.calls.clear()
    report = run_backup(ctx, preread_min_bytes=1 << 30)
    assert report.preread is None
    assert recorder.borg_runs() == [f"create {report.archive}", "delete", "prune"]
    assert not where.preread_pending.exists()

    # The pre-read itself failing does not fail the backup.
    recorder.failing = (preread.SUFFIX,)
    recorder.calls.clear()
    where.read_since.unlink()
    report = run_backup(ctx, preread_min_bytes=32 << 10)
    assert report.preread is not None and report.preread.failed
    assert "pre-read failed" in report.summary()
