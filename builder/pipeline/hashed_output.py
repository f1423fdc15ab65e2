"""Outputs hashed while they are written: the manifest gets each sha256 without reading
gigabytes a second time (docs/build.md)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from pathlib import Path
from typing import BinaryIO

from firstboot.core.execute import Argv, run

_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named in the module only from Python 3.10 on Linux


class HashingWriter:
    """A write-only file object that hashes what goes through it (tarfile writes in order)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.sha256, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def tell(self) -> int:  # tarfile asks where the archive starts
        return self.size


def command_output_to_file(argv: Argv, dest: Path, *, timeout: float) -> str:
    """Run `argv`, which writes to its stdout, with that output written to `dest` and hashed
    on the way (a thread reads the pipe); returns the sha256. When writing `dest` fails, the
    command is cut off (its pipe closes) and that failure is raised."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, _F_SETPIPE_SZ, _CHUNK)  # fewer, larger reads than 64 KiB
    digest = hashlib.sha256()
    failures: list[BaseException] = []

    def copy() -> None:
        try:
            with os.fdopen(read_end, "rb", buffering=0) as source, dest.open("wb") as sink:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
        except BaseException as err:  # raised in the caller's thread below
            failures.append(err)

    thread = threading.Thread(target=copy, name=f"write {dest.name}", daemon=True)
    thread.start()
    try:
        run(argv, stdout_fd=write_end, timeout=timeout)
    except BaseException:
        _finish(thread, write_end)
        if failures:  # the command failed because its output could not be written
            raise failures[0] from None
        raise
    _finish(thread, write_end)
    if failures:
        raise failures[0]
    return digest.hexdigest()


def _finish(thread: threading.Thread, write_end: int) -> None:
    """Close our copy of the pipe's write end (the reader then sees its end) and wait."""
    os.close(write_end)
    thread.join()
