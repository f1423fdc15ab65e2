"""A cache for expensive build stages, keyed by a hash of each stage's inputs.

Each entry remembers the inputs it was made from, so a miss can say *why*
("changed: packages") instead of only "rebuilt".
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from firstboot.core.errors import ArkboxError

DEFAULT_CACHE_DIR = Path("/var/cache/arkbox")
_COMPLETE = "complete"
_INPUTS = "inputs.json"
_LAST = "last-inputs.json"
# How long a build waits for another build holding the same cache slot: longer than any
# stage takes (a cold base root fs and the service images take minutes, not hours).
LOCK_WAIT_S = 2 * 3600.0


def cache_dir_from_env() -> Path:
    return Path(os.environ.get("ARKBOX_CACHE", str(DEFAULT_CACHE_DIR)))


def inputs_key(inputs: Mapping[str, object]) -> str:
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


_BLOCK = 1 << 20
_ZEROS = bytes(_BLOCK)


def digest_file(path: Path) -> str:
    """sha256 of a file's bytes. Holes (a sparse raw disk image is mostly holes) are hashed
    from a buffer of zeros instead of being read: the same digest, without reading 4 GiB."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        fd, size, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < size:
            data = _next_data(fd, pos, size)
            _hash_zeros(h, data - pos)
            pos = data
            end = os.lseek(fd, data, os.SEEK_HOLE) if data < size else size
            f.seek(data)
            while pos < end:
                block = f.read(min(_BLOCK, end - pos))
                if not block:  # the file shrank while read: its digest is of what was read
                    return h.hexdigest()
                h.update(block)
                pos += len(block)
    return h.hexdigest()


def _next_data(fd: int, pos: int, size: int) -> int:
    try:
        return os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:  # ENXIO: nothing but a hole from pos to the end
        return size


def _hash_zeros(h: hashlib._Hash, count: int) -> None:
    view = memoryview(_ZEROS)
    while count > 0:
        h.update(view[:min(count, _BLOCK)])
        count -= _BLOCK


def digest_tree(root: Path, paths: Iterable[Path] | None = None) -> str:
    """One digest over file names, modes and contents below `root` (sorted, so stable)."""
    h = hashlib.sha256()
    candidates = paths if paths is not None else (p for p in root.rglob("*") if p.is_file())
    files = sorted(candidates)
    for path in files:
        if "__pycache__" in path.parts:
            continue
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(f"{path.stat().st_mode & 0o777:o}".encode() + b"\0")
        h.update(digest_file(path).encode() + b"\n")
    return h.hexdigest()


def changed_keys(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


@dataclass
class CacheEntry:
    """One stage's cache slot for one set of inputs."""

    stage: str
    key: str
    path: Path
    inputs: Mapping[str, object]
    hit: bool
    reason: str

    def commit(self) -> None:
        """Mark the entry complete, only after the stage's outputs are all in place."""
        normalized = json.loads(json.dumps(self.inputs, default=str))
        (self.path / _INPUTS).write_text(json.dumps(normalized, indent=2, sort_keys=True))
        (self.path / _COMPLETE).write_text("")
        (self.path.parent / _LAST).write_text(json.dumps(normalized, indent=2, sort_keys=True))

    def reset(self) -> None:
        """Start a miss from an empty directory: leftovers of a killed build are not trusted."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)


def lookup(cache_dir: Path, stage: str, inputs: Mapping[str, object]) -> CacheEntry:
    key = inputs_key(inputs)
    path = cache_dir / stage / key
    if (path / _COMPLETE).exists():
        return CacheEntry(stage, key, path, inputs, True, "cached (inputs unchanged)")
    last_file = cache_dir / stage / _LAST
    if last_file.exists():
        old = json.loads(last_file.read_text())
        new = json.loads(json.dumps(inputs, default=str))
        changed = changed_keys(old, new)
        reason = (f"rebuilt (changed: {', '.join(changed)})" if changed
                  else "rebuilt (cache entry incomplete)")
    else:
        reason = "built (no earlier build in the cache)"
    return CacheEntry(stage, key, path, inputs, False, reason)


def complete_entries(cache_dir: Path, stage: str) -> list[Path]:
    """Every complete entry of `stage` in the cache, newest first."""
    entries = [p for p in (cache_dir / stage).glob("*") if (p / _COMPLETE).is_file()]
    return sorted(entries, key=lambda p: (p / _COMPLETE).stat().st_mtime, reverse=True)


@contextmanager
def exclusive(lock_file: Path, what: str, on_wait: Callable[[str], None] | None = None,
              timeout_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (made if missing) while the body runs; say so
    when another build holds it, and give up after `timeout_s`."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as lock:
        deadline = time.monotonic() + timeout_s
        waiting = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting and on_wait is not None:
                    on_wait(f"waiting for another build using {what} ({lock_file})")
                waiting = True
                if time.monotonic() >= deadline:
                    raise ArkboxError(
                        f"gave up after {timeout_s:.0f} s waiting for another build "
                        f"using {what} (lock {lock_file})",
                        hint="let the other arkbox build finish or stop it, or give this "
                             "one its own --cache") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def claim(cache_dir: Path, stage: str, inputs: Mapping[str, object],
          on_wait: Callable[[str], None] | None = None) -> Iterator[CacheEntry]:
    """The stage's entry for `inputs`, held exclusively while the body fills or reads it.
    A second build of the same inputs waits, then finds the entry complete (a hit): without
    the lock its reset() removed the directory the first build was writing into."""
    key = inputs_key(inputs)
    with exclusive(cache_dir / stage / f"{key}.lock", f"the {stage} cache", on_wait):
        yield lookup(cache_dir, stage, inputs)
