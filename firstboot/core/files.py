"""Writing files so that a power cut leaves either the old content or the new, never half.

Every file the installer owns is written here: to a temporary file in the same
directory, flushed to disk, then renamed over the target (rename is atomic on
one filesystem), and the directory is synced so the rename itself survives.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path, mode: int = 0o755) -> Path:
    """Create `path` (and parents) if missing, and set its mode."""
    path.mkdir(parents=True, exist_ok=True)
    if (path.stat().st_mode & 0o7777) != mode:
        path.chmod(mode)
    return path


# A file's owner as (uid, gid); None leaves it as the writing process makes it.
Owner = tuple[int, int] | None


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644, owner: Owner = None) -> None:
    """Replace `path` with `data` atomically; mode (and owner) are set before the rename,
    so the content is never visible with looser permissions."""
    content = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            if owner is not None:
                os.fchown(handle.fileno(), *owner)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            tmp.replace(path)
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise
            # `path` is a mount point (a container engine bind-mounts /etc/hostname and
            # /etc/hosts): it cannot be renamed over, only rewritten in place.
            _rewrite_in_place(path, content)
            tmp.unlink()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def _rewrite_in_place(path: Path, content: bytes) -> None:
    with path.open("r+b") as handle:
        handle.truncate(0)
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def write_if_changed(path: Path, data: bytes | str, mode: int = 0o644,
                     owner: Owner = None) -> bool:
    """Write `data` unless `path` already holds it with that mode (and owner).

    Returns True when something was written or fixed.
    """
    content = data.encode() if isinstance(data, str) else data
    try:
        info = path.stat()
        same = path.read_bytes() == content and (info.st_mode & 0o7777) == mode and (
            owner is None or (info.st_uid, info.st_gid) == owner)
    except FileNotFoundError:
        same = False
    if same:
        return False
    atomic_write(path, content, mode, owner)
    return True


def atomic_symlink(path: Path, target: str) -> bool:
    """Point the symlink `path` at `target` (made next to it, then renamed over it).

    Returns True when the link was created or changed.
    """
    if path.is_symlink() and str(path.readlink()) == target:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    tmp.replace(path)
    fsync_dir(path.parent)
    return True


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes, or None when it does not exist (to compare with what it should be)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def read_text(path: Path) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
