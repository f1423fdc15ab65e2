"""What one backup archive holds, fed to `borg create --paths-from-stdin` in the order borg
reads it, with each paused service paused only while borg reads its volumes.

One borg process makes the whole archive (one start-up, one repository open, one commit).
The list of paths is written while borg runs:

    1. each `pause` service, then the mail store: pause the container, walk its volumes,
       write their paths, then a *gate*: a FIFO borg opens (--read-special) only when it
       has read everything before it. Borg's open of the gate unpauses the container.
    2. everything else under /srv/arkbox, walked live.
    3. .backup/specials.json: the FIFOs, device nodes and symlinks to them that were not
       handed to borg (with --read-special borg would read them as files: a FIFO without
       writer blocks, /dev/zero never ends). The restore recreates them from this list.
    4. each database dump: a FIFO at .backup/dumps/SVC/FILE that the dump command writes
       into while borg reads it (streamed: no copy on disk).

Borg reads the list in blocks of 4096 characters, so after a gate or a dump the list is
padded with at least 4096 characters (the `.backup` directory, named with `./` repeated),
or borg would wait for the rest of a block the feeder holds back until the gate opens.
Paths are NUL-separated; a name with a carriage return cannot pass borg's text reader
intact and is reported as skipped.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from firstboot.core import wait
from firstboot.core.config import Appliance
from firstboot.mail.container import VOLUMES as MAIL_VOLUMES
from firstboot.mail.names import MAIL_SERVICE

RUN_DIR = ".backup"  # under /srv/arkbox, only while a backup runs; in the archive
SPECIALS = f"{RUN_DIR}/specials.json"
FORMAT = 2  # 1 was one archive per part (before 2026-11-26): not restored by this version
BLOCK_CHARS = 4096  # borg's read size for --paths-from-stdin (helpers.iter_separated)
_PAD_LINE = 2048
POLL_MAX_S = 0.004  # how late a gate may be noticed; ~250 wake-ups/s during a long read


@dataclass(frozen=True)
class Paused:
    service: str
    paths: tuple[str, ...]  # relative to /srv/arkbox


@dataclass(frozen=True)
class Dump:
    service: str
    command: tuple[str, ...]
    path: str  # in the archive: .backup/dumps/SVC/FILE


@dataclass(frozen=True)
class Plan:
    paused: tuple[Paused, ...]
    dumps: tuple[Dump, ...]
    skip: frozenset[str]  # relative paths the live walk leaves out

    def comment(self, appliance: str) -> dict[str, Any]:
        """What the archive's comment says, read by the restore."""
        return {"arkbox": "backup", "format": FORMAT, "appliance": appliance,
                "paused": [p.service for p in self.paused],
                "dumps": {d.service: d.path for d in self.dumps}}


def plan_backup(config: Appliance, existing_volumes: Callable[[str, str], bool]) -> Plan:
    """What is paused, dumped and walked live. `existing_volumes(service, volume)` filters."""
    paused: list[Paused] = []
    dumps: list[Dump] = []
    skip = {RUN_DIR}
    for name, service in sorted(config.services.items()):
        policy = service.backup
        volumes = [v for v in sorted(service.volumes) if existing_volumes(name, v)]
        kept = [f"volumes/{name}/{v}" for v in volumes if v not in policy.exclude_volumes]
        skip.update(f"volumes/{name}/{v}" for v in volumes if v in policy.exclude_volumes)
        if policy.consistency == "dump" and policy.dump_command:
            dumps.append(Dump(name, tuple(policy.dump_command),
                              f"{RUN_DIR}/dumps/{name}/{policy.dump_file}"))
        if policy.consistency == "pause" and kept:
            paused.append(Paused(name, tuple(kept)))
            skip.update(kept)
    # The mail store: Postfix's queue and the Maildirs change under a live read (a message
    # moved from new/ to cur/ is in neither, or in both); arkbox-mail is paused while borg
    # reads them, like a `pause` service. Kept while mail is off too.
    mail = [f"volumes/{MAIL_SERVICE}/{v}" for v in sorted(MAIL_VOLUMES)
            if existing_volumes(MAIL_SERVICE, v)]
    if mail:
        paused.append(Paused(MAIL_SERVICE, tuple(mail)))
        skip.update(mail)
    return Plan(tuple(paused), tuple(dumps), frozenset(skip))


@dataclass
class Walked:
    """What a walk found that borg is not given: recreated at restore, or reported."""

    specials: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def walk(data: Path, top: str, skip: frozenset[str], found: Walked) -> Iterator[str]:
    """`top` and everything below it that borg may read, parents first, one file system.

    FIFOs, device nodes and symlinks to them go to `found.specials` instead; sockets are
    left out (borg leaves them out too: a socket is recreated by the program that listens).
    """
    root_dev = os.lstat(data).st_dev
    stack = [top]
    while stack:
        rel = stack.pop()
        if rel in skip:
            continue
        try:
            info = os.lstat(data / rel)
        except FileNotFoundError:
            continue  # removed since its directory was read
        if "\r" in rel:
            found.skipped.append(rel)
            continue
        mode = info.st_mode
        if stat.S_ISSOCK(mode):
            continue
        if _is_special(mode) or (stat.S_ISLNK(mode) and _points_to_special(data / rel)):
            found.specials.append(_special(data / rel, rel, info))
            continue
        yield rel
        if stat.S_ISDIR(mode) and info.st_dev == root_dev:
            try:
                with os.scandir(data / rel) as entries:
                    # Inode order reads faster; reversed because the stack pops the last.
                    children = sorted(entries, key=lambda e: e.inode(), reverse=True)
            except OSError:
                continue  # borg reports what it cannot read when it gets there
            stack.extend(f"{rel}/{e.name}" if rel != "." else e.name for e in children)


def _is_special(mode: int) -> bool:
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _points_to_special(path: Path) -> bool:
    try:
        return _is_special(path.stat().st_mode)
    except OSError:
        return False  # dangling: borg stores it as a symlink


def _special(path: Path, rel: str, info: os.stat_result) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": rel, "mode": stat.S_IMODE(info.st_mode),
                             "uid": info.st_uid, "gid": info.st_gid,
                             "mtime_ns": info.st_mtime_ns}
    if stat.S_ISLNK(info.st_mode):
        entry.update(kind="symlink", target=str(path.readlink()))
    elif stat.S_ISFIFO(info.st_mode):
        entry["kind"] = "fifo"
    else:
        entry.update(kind="char" if stat.S_ISCHR(info.st_mode) else "block",
                     rdev=info.st_rdev)
    return entry


class UnsafeEntry(ValueError):
    """A specials.json entry that would leave the restored tree (refused, never skipped)."""


def recreate_specials(root: Path, specials: list[dict[str, Any]]) -> int:
    """Put back what `walk` set aside, under `root` (the restore's staging directory).

    Every parent is opened with O_NOFOLLOW from `root` down, one component at a time: an
    archived symlink standing where a parent directory should be (`x -> /etc`, then an
    entry `x/p`) is refused, so nothing is ever made outside `root`. Raises UnsafeEntry.
    """
    made = 0
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        for entry in specials:
            parts = _safe_parts(str(entry.get("path", "")))
            parent = _open_parents(root_fd, parts[:-1], str(entry["path"]))
            try:
                _make_special(parent, parts[-1], entry)
            finally:
                os.close(parent)
            made += 1
    finally:
        os.close(root_fd)
    return made


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _safe_parts(rel: str) -> list[str]:
    parts = rel.split("/")
    if rel.startswith("/") or "\0" in rel or any(p in ("", ".", "..") for p in parts):
        raise UnsafeEntry(f"{SPECIALS} names {rel!r}: not a plain path below the restored "
                          "tree")
    return parts


def _open_parents(root_fd: int, parents: list[str], rel: str) -> int:
    """The directory holding `rel`'s last component, made where missing; never a symlink."""
    fd = os.dup(root_fd)
    for name in parents:
        with contextlib.suppress(FileExistsError):  # opened below: a symlink is refused
            os.mkdir(name, 0o755, dir_fd=fd)
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as err:  # ELOOP: a symlink; ENOTDIR: a file
            os.close(fd)
            raise UnsafeEntry(f"{SPECIALS} names {rel!r}, but {name!r} on its way is not a "
                              f"directory of the restored tree ({err.strerror})") from err
        os.close(fd)
        fd = child
    return fd


def _make_special(parent: int, name: str, entry: dict[str, Any]) -> None:
    kind, mode = entry["kind"], int(entry["mode"])
    if kind == "symlink":
        os.symlink(str(entry["target"]), name, dir_fd=parent)
    elif kind == "fifo":
        os.mkfifo(name, mode, dir_fd=parent)
    else:
        type_bit = stat.S_IFCHR if kind == "char" else stat.S_IFBLK
        os.mknod(name, mode | type_bit, int(entry["rdev"]), dir_fd=parent)
    # No follow: the node was just made in a directory opened without following links.
    os.chown(name, int(entry["uid"]), int(entry["gid"]), dir_fd=parent, follow_symlinks=False)
    if kind != "symlink":
        os.chmod(name, mode, dir_fd=parent)  # mknod/mkfifo applied the umask
    mtime = int(entry["mtime_ns"])
    os.utime(name, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)


class PathWriter:
    """Writes NUL-separated paths to borg's stdin; pads so borg reads up to the last one."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def path(self, rel: str) -> None:
        self.out.write(os.fsencode(rel) + b"\0")

    def flush_to_borg(self) -> None:
        """At least one block more: the block holding the last path is complete."""
        pad = _PAD_LINE - len(RUN_DIR) - 1
        line = ("./" * (pad // 2) + RUN_DIR + "/" * (pad % 2)).encode() + b"\0"
        self.out.write(line * (BLOCK_CHARS // _PAD_LINE + 1))
        self.out.flush()


def open_when_read(fifo: Path, alive: Callable[[], bool]) -> int:
    """The FIFO's write end, once borg has opened it to read (all before it is read).

    Raises BrokenPipeError if borg exits first: its own exit code says why. Polled often:
    borg waits in its open() until this returns.
    """

    def opened() -> int | wait.NotYet:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            if err.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        if not alive():
            raise BrokenPipeError(f"borg exited before reading {fifo}")
        return wait.NotYet("borg is still reading what comes before it")

    # No deadline here: borg reads everything before the FIFO first, however long that
    # takes; borg's exit (its command's timeout included) is what ends the wait.
    return wait.until(f"borg to open {fifo}", opened, math.inf, interval_s=POLL_MAX_S)


def make_fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.mkfifo(path, 0o600)


def specials_file(data: Path, found: Walked) -> str:
    target = data / SPECIALS
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"specials": found.specials}, out)
    return SPECIALS


__all__ = [
    "Dump",
    "PathWriter",
    "Paused",
    "Plan",
    "UnsafeEntry",
    "Walked",
    "make_fifo",
    "open_when_read",
    "plan_backup",
    "recreate_specials",
    "specials_file",
    "walk",
]
