"""Run-at-most-once locks on files below the box's state (first boot and apply, updates).

A lock is held by an open file with flock: the kernel drops it when the holder ends, so a
record saying "running" while nobody holds its lock tells of a run that was cut off.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from firstboot.core.errors import ArkboxError
from firstboot.core.files import ensure_dir


@contextmanager
def held_or_refused(lock_file: Path, busy: ArkboxError) -> Iterator[None]:
    """Hold `lock_file` while the body runs; raise `busy` at once when another holds it."""
    ensure_dir(lock_file.parent, 0o755)
    with lock_file.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        yield


def lock_held(lock_file: Path) -> bool:
    """True while some process holds `lock_file`."""
    try:
        handle = lock_file.open("r")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False
