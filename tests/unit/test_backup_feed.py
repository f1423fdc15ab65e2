"""The backup's path list: what the walk hands to borg, what it sets aside and puts back,
the padding that makes borg read up to a gate, and a fed child that never sees a half
list as whole."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import IO

import pytest

from firstboot.backup import feed
from firstboot.core import execute


def make_tree(data: Path) -> None:
    (data / "vol/sub").mkdir(parents=True)
    (data / "vol/a.txt").write_text("a")
    (data / "vol/sub/b.txt").write_text("b")
    (data / "vol/link").symlink_to("a.txt")
    (data / "vol/dangling").symlink_to("/nonexistent/target")
    (data / "vol/null").symlink_to("/dev/null")  # borg --read-special would read it
    os.mkfifo(data / "vol/pipe", 0o640)
    os.chown(data / "vol/pipe", 1234, 2345)
    os.utime(data / "vol/pipe", ns=(1_600_000_000_000_000_001, 1_600_000_000_000_000_001))
    (data / "vol/cr\rname").write_text("x")
    (data / "skipped").mkdir()
    (data / "skipped/x").write_text("x")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(data / "vol/sock"))
    listener.close()


def test_walk_gives_borg_files_and_sets_specials_aside(tmp_path: Path) -> None:
    make_tree(tmp_path)
    found = feed.Walked()
    paths = list(feed.walk(tmp_path, ".", frozenset({"skipped"}), found))
    assert set(paths) == {".", "vol", "vol/sub", "vol/a.txt", "vol/sub/b.txt", "vol/link",
                          "vol/dangling"}
    assert paths.index("vol") < paths.index("vol/a.txt") < len(paths)  # parents first
    assert paths.index("vol/sub") < paths.index("vol/sub/b.txt")
    by_path = {s["path"]: s for s in found.specials}
    assert set(by_path) == {"vol/null", "vol/pipe"}  # the socket is left out, as borg does
    assert by_path["vol/null"]["kind"] == "symlink"
    assert by_path["vol/null"]["target"] == "/dev/null"
    assert by_path["vol/pipe"] | {"mode": 0} == {
        "path": "vol/pipe", "kind": "fifo", "mode": 0, "uid": 1234, "gid": 2345,
        "mtime_ns": 1_600_000_000_000_000_001}
    assert found.skipped == ["vol/cr\rname"]
    # A walk of a paused volume starts at the volume.
    assert list(feed.walk(tmp_path, "vol/sub", frozenset(), feed.Walked())) == [
        "vol/sub", "vol/sub/b.txt"]


def test_specials_come_back_as_they_were(tmp_path: Path) -> None:
    source, restored = tmp_path / "a", tmp_path / "b"
    source.mkdir()
    make_tree(source)
    found = feed.Walked()
    list(feed.walk(source, ".", frozenset(), found))
    if os.geteuid() == 0:
        os.mknod(source / "vol/zero", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
        found.specials.append(feed._special(source / "vol/zero", "vol/zero",
                                            os.lstat(source / "vol/zero")))
    restored.mkdir()
    made = feed.recreate_specials(restored, found.specials)
    assert made == len(found.specials)
    for entry in found.specials:
        before, after = os.lstat(source / entry["path"]), os.lstat(restored / entry["path"])
        assert (after.st_mode, after.st_uid, after.st_gid, after.st_mtime_ns, after.st_rdev) == (
            before.st_mode, before.st_uid, before.st_gid, before.st_mtime_ns, before.st_rdev)
    assert os.readlink(restored / "vol/null") == "/dev/null"


def test_padding_fills_borgs_read_block_with_the_run_directory_only(tmp_path: Path) -> None:
    out = tmp_path / "list"
    with out.open("wb") as stream:
        writer = feed.PathWriter(stream)
        writer.path("vol/é\nx")
        size_before = stream.tell()
        writer.flush_to_borg()
    raw = out.read_bytes()
    padding = raw[size_before:].split(b"\0")[:-1]
    assert len(raw) - size_before >= feed.BLOCK_CHARS  # the block holding the path is full
    assert {os.path.normpath(p.decode()) for p in padding} == {feed.RUN_DIR}
    assert max(len(p) for p in padding) < 4096  # each is a path stat() accepts
    assert raw.split(b"\0")[0].decode() == "vol/é\nx"  # NUL-separated: a newline is a name


def test_a_failed_feed_stops_the_child_before_it_sees_the_end(tmp_path: Path) -> None:
    marker = tmp_path / "committed"

    def broken(stdin: IO[bytes], alive: object) -> None:
        stdin.write(b"half a list\n")
        stdin.flush()
        raise RuntimeError("the dump failed")

    # The child "commits" on end of input; it must be stopped before it gets there.
    with pytest.raises(RuntimeError, match="the dump failed"):
        execute.run(("sh", "-c", f"cat >/dev/null && touch {marker}"), feed=broken)
    assert not marker.exists()


def test_a_child_that_dies_first_reports_its_own_failure(tmp_path: Path) -> None:
    def endless(stdin: IO[bytes], alive: object) -> None:
        while True:
            stdin.write(b"x" * 65536)

    with pytest.raises(execute.CommandError) as failure:
        execute.run(("sh", "-c", "echo 'repository locked' >&2; exit 2"), feed=endless)
    error = failure.value
    assert error.exit_code_of_command == 2 and "repository locked" in error.stderr_tail


def test_a_fed_child_gets_the_whole_list(tmp_path: Path) -> None:
    def lines(stdin: IO[bytes], alive: object) -> None:
        for index in range(10000):
            stdin.write(f"{index}\n".encode())

    result = execute.run(("wc", "-l"), feed=lines)
    assert result.stdout.strip() == "10000"


def test_open_when_read_waits_for_a_reader_and_gives_up_when_borg_is_gone(
        tmp_path: Path) -> None:
    fifo = tmp_path / "gate"
    feed.make_fifo(fifo)
    with pytest.raises(BrokenPipeError, match="borg exited"):
        feed.open_when_read(fifo, lambda: False)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        os.close(feed.open_when_read(fifo, lambda: True))
    finally:
        os.close(reader)


def _fifo(path: str) -> dict[str, object]:
    return {"path": path, "kind": "fifo", "mode": 0o600, "uid": 0, "gid": 0, "mtime_ns": 0}


@pytest.mark.parametrize("path", ["../escape", "/tmp/escape", "vol/../../escape", "vol//x",
                                  "./x", ""])
def test_an_entry_that_is_not_a_plain_relative_path_is_refused(tmp_path: Path,
                                                                path: str) -> None:
    restored = tmp_path / "restored"
    restored.mkdir()
    with pytest.raises(feed.UnsafeEntry, match="not a plain path"):
        feed.recreate_specials(restored, [_fifo(path)])
    assert not (tmp_path / "escape").exists()


def test_an_entry_below_an_archived_symlink_is_refused_and_nothing_is_made_outside(
        tmp_path: Path) -> None:
    """The archive put back `volumes/x -> VICTIM`; specials.json names `volumes/x/...`:
    following the link would make a FIFO and mask a unit outside the restored tree."""
    restored, victim = tmp_path / "restored", tmp_path / "victim"
    (restored / "volumes").mkdir(parents=True)
    victim.mkdir()
    (restored / "volumes/x").symlink_to(victim)
    (restored / "volumes/f").write_text("a file, not a directory")
    mask = {"path": "volumes/x/nftables.service", "kind": "symlink", "target": "/dev/null",
            "mode": 0o777, "uid": 0, "gid": 0, "mtime_ns": 0}
    for entry, hint in ((_fifo("volumes/x/pipe"), "x"), (mask, "x"),
                        (_fifo("volumes/x/deeper/pipe"), "x"), (_fifo("volumes/f/pipe"), "f")):
        with pytest.raises(feed.UnsafeEntry, match=f"'{hint}' on its way is not a directory"):
            feed.recreate_specials(restored, [entry])
    assert list(victim.iterdir()) == []
    # A made parent is a directory of the restored tree, never followed when met again.
    assert feed.recreate_specials(restored, [_fifo("volumes/new/sub/pipe")]) == 1
    assert stat.S_ISFIFO(os.lstat(restored / "volumes/new/sub/pipe").st_mode)


def test_an_entry_where_the_archive_put_a_file_fails_the_restore_clearly(
        tmp_path: Path) -> None:
    from firstboot.backup import restore
    from firstboot.backup.client import BackupError

    staging = tmp_path / "staging"
    (staging / feed.RUN_DIR).mkdir(parents=True)
    (staging / "taken").write_text("a file the archive holds")
    (staging / feed.SPECIALS).write_text(json.dumps({"specials": [_fifo("taken")]}))
    with pytest.raises(BackupError, match=r"recreating the archive's FIFOs.*File exists"):
        restore._recreate_specials(staging)
