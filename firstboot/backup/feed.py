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
from firstboot.mail.container import MAIL_SERVICE
from firstboot.mail.container import VOLUMES as MAIL_VOLUMES

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


def recreate_specials(root: Path, specials: list[dict[str, Any]]) -> int:
    """Put back what `walk` set aside, under `root` (the restore's staging directory)."""
    made = 0
    for entry in specials:
        rel = str(entry["path"])
        if rel.startswith("/") or ".." in Path(rel).parts:
            continue  # never outside the restored tree
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        kind = entry["kind"]
        if kind == "symlink":
            target.symlink_to(str(entry["target"]))
        elif kind == "fifo":
            os.mkfifo(target, int(entry["mode"]))
        else:
            type_bit = stat.S_IFCHR if kind == "char" else stat.S_IFBLK
            os.mknod(target, int(entry["mode"]) | type_bit, int(entry["rdev"]))
        os.lchown(target, int(entry["uid"]), int(entry["gid"]))
        if kind != "symlink":
            target.chmod(int(entry["mode"]))
        mtime = int(entry["mtime_ns"])
        os.utime(target, ns=(mtime, mtime), follow_symlinks=False)
        made += 1
    return made


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
    "Walked",
    "make_fifo",
    "open_when_read",
    "plan_backup",
    "recreate_specials",
    "specials_file",
    "walk",
]
