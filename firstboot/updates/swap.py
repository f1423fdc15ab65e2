"""Putting a verified bundle's files in place, keeping what they replace, and putting that back.

Three folders below the box's state (/var/lib/arkbox/update, on the root fs):

  next/      the bundle's files, extracted and hashed again against the index (the
             bundle file could have changed since `verify_bundle` read it);
  previous/  what the swap moved out of the way, and `swap.json`: which paths it
             replaced, which it added (none before), which folders it replaced whole.

The installer's folder is replaced whole (a file the new installer no longer has must
not linger in it); everything else file by file, so /etc/arkbox keeps what no bundle
carries (the secrets the seed installed). `roll_back` undoes a swap from swap.json alone,
so it also works in a later process, after the one that swapped was cut off.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from firstboot.core.errors import ArkboxError, BadInputError
from firstboot.core.files import atomic_write
from firstboot.updates.bundle import INDEX_NAME, HashingReader, VerifiedBundle, owned

# Replaced whole rather than file by file.
WHOLE = ("usr/local/lib/arkbox-installer",)
SWAP_RECORD = "swap.json"
READ_BYTES = 1 << 20


@dataclass
class SwapRecord:
    """What a swap changed, enough to undo it."""

    whole: list[str] = field(default_factory=list)  # folders replaced whole
    replaced: list[str] = field(default_factory=list)  # files/links that existed before
    added: list[str] = field(default_factory=list)  # files/links that did not


def update_dir(root: Path) -> Path:
    return root / "var/lib/arkbox/update"


def stage(bundle: VerifiedBundle, next_dir: Path) -> None:
    """Extract the bundle's listed files and links into `next_dir`, each checked against
    the index again while written. BadInputError (nothing left behind) on any difference."""
    shutil.rmtree(next_dir, ignore_errors=True)
    next_dir.mkdir(parents=True, mode=0o700)
    where = str(bundle.path)
    written: set[str] = set()
    try:
        with tarfile.open(bundle.path, "r|") as archive:
            for member in archive:
                if member.name == INDEX_NAME or member.isdir():
                    continue
                if not owned(member.name):
                    raise BadInputError(f"{where}: {member.name!r} is not an arkbox path",
                                        hint="verify the bundle: arkbox-installer "
                                             "verify-update BUNDLE")
                target = next_dir / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                if member.issym():
                    if bundle.index.links.get(member.name) != member.linkname:
                        raise BadInputError(f"{where}: the link {member.name} changed since "
                                            "it was verified", hint="copy the bundle again")
                    target.symlink_to(member.linkname)
                else:
                    _write_checked(archive, member, target, bundle, where)
                written.add(member.name)
    except BaseException:
        shutil.rmtree(next_dir, ignore_errors=True)
        raise
    missing = (set(bundle.index.files) | set(bundle.index.links)) - written
    if missing:
        shutil.rmtree(next_dir, ignore_errors=True)
        raise BadInputError(f"{where}: {sorted(missing)[0]} is missing since it was verified",
                            hint="copy the bundle again")


def _write_checked(archive: tarfile.TarFile, member: tarfile.TarInfo, target: Path,
                   bundle: VerifiedBundle, where: str) -> None:
    entry = bundle.index.files.get(member.name)
    handle = archive.extractfile(member)
    if entry is None or handle is None:
        raise BadInputError(f"{where}: {member.name} is not in the index",
                            hint="copy the bundle again")
    reader = HashingReader(handle)
    with target.open("wb") as out:
        while data := reader.read(READ_BYTES):
            out.write(data)
    if (reader.sha256.hexdigest(), reader.size) != (entry.sha256, entry.size):
        raise BadInputError(f"{where}: {member.name} changed since it was verified",
                            hint="copy the bundle again")
    target.chmod(entry.mode)


def nothing() -> None:
    pass


def swap_in(root: Path, next_dir: Path, previous_dir: Path,
            midway: Callable[[], None] = nothing) -> SwapRecord:
    """Move the staged files into place; what they replace goes to `previous_dir`.

    swap.json is written first (empty), before each move and last, so a swap cut off
    anywhere is undone by `roll_back` as far as it went. `midway` is called halfway
    through the files (the power-cut tests cut there)."""
    shutil.rmtree(previous_dir, ignore_errors=True)
    previous_dir.mkdir(parents=True, mode=0o700)
    record = SwapRecord()
    _save(previous_dir, record)
    for folder in WHOLE:
        if (next_dir / folder).exists():
            if (root / folder).exists():
                _save(previous_dir, record, whole=folder)
                _move(root / folder, previous_dir / folder)
            _move(next_dir / folder, root / folder)
    staged = sorted(str(p.relative_to(next_dir)) for p in next_dir.rglob("*")
                    if p.is_symlink() or p.is_file())
    for number, name in enumerate(staged):
        if number == len(staged) // 2:
            midway()
        if os.path.lexists(root / name):
            record.replaced.append(name)
            _save(previous_dir, record)
            _move(root / name, previous_dir / name)
        else:
            record.added.append(name)
            _save(previous_dir, record)
        _move(next_dir / name, root / name)
    _save(previous_dir, record)
    shutil.rmtree(next_dir, ignore_errors=True)
    os.sync()  # the moves reach the disk before the update goes on to apply
    return record


def roll_back(root: Path, previous_dir: Path, midway: Callable[[], None] = nothing
              ) -> SwapRecord:
    """Undo the swap that `previous_dir/swap.json` describes; ArkboxError without one.

    Safe to repeat after it was cut off: what is back already is skipped."""
    record = load_swap(previous_dir)
    if record is None:
        raise ArkboxError(f"nothing to roll back: {previous_dir / SWAP_RECORD} is missing",
                          hint="the update was never put in place, or it finished")
    for name in record.added:
        _remove(root / name)
    midway()
    for name in record.replaced:
        if os.path.lexists(previous_dir / name):
            _remove(root / name)
            _move(previous_dir / name, root / name)
    for folder in record.whole:
        if (previous_dir / folder).exists():
            _remove(root / folder)
            _move(previous_dir / folder, root / folder)
    os.sync()
    return record


def load_swap(previous_dir: Path) -> SwapRecord | None:
    try:
        return SwapRecord(**json.loads((previous_dir / SWAP_RECORD).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as e:
        raise ArkboxError(f"{previous_dir / SWAP_RECORD} is damaged ({e})",
                          hint="restore the box from its backup (docs/backup.md)") from e


def _save(previous_dir: Path, record: SwapRecord, *, whole: str | None = None) -> None:
    if whole is not None:
        record.whole.append(whole)
    atomic_write(previous_dir / SWAP_RECORD, json.dumps(asdict(record), indent=2), 0o600)


def _move(source: Path, dest: Path) -> None:
    """Rename, or copy and remove where a rename cannot (a folder of a lower overlay layer,
    as in the container rig). The destination is replaced."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dest):
        _remove(dest)
    try:
        source.rename(dest)
    except OSError:
        shutil.move(str(source), str(dest))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
