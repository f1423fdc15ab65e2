"""Write `NAME-update.tar`: the arkbox-owned parts of the assembled root fs and their index.

The format and its reader are the installer's (`firstboot/updates/bundle.py`). Each file
is hashed while it is written, so the bundle costs one read of what it carries; the
index goes last (see there why). Reproducible: sorted, owner 0, mtimes clamped.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from builder.pipeline.hashed_output import HashingWriter
from firstboot.updates.bundle import INDEX_NAME, OWNED, BundleIndex, FileEntry, HashingReader


def bundle_name(name: str) -> str:
    return f"{name}-update.tar"


@dataclass(frozen=True)
class WrittenBundle:
    index: BundleIndex  # the full index, as written last into the bundle
    sha256: str  # of the bundle file, taken while it was written


def write_bundle(tree: Path, out_tar: Path, index: BundleIndex, *,
                 source_date_epoch: int) -> WrittenBundle:
    """Pack tree's OWNED parts into out_tar (via a .partial file), hashed as written."""
    partial = out_tar.with_name(out_tar.name + ".partial")
    try:
        with partial.open("wb") as raw:
            sink = HashingWriter(raw)
            with tarfile.open(fileobj=sink, mode="w",  # type: ignore[call-overload]
                              format=tarfile.PAX_FORMAT) as archive:
                for path in _owned_paths(tree):
                    _add(archive, tree, path, index, source_date_epoch)
                text = index.to_json().encode()
                info = _info(INDEX_NAME, source_date_epoch, 0o644)
                info.size = len(text)
                archive.addfile(info, io.BytesIO(text))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out_tar)
    return WrittenBundle(index, sink.sha256.hexdigest())


def _owned_paths(tree: Path) -> list[Path]:
    found: list[Path] = []
    for part in OWNED:
        top = tree / part
        if top.is_symlink() or top.is_file():
            found.append(top)
        elif top.is_dir():
            found.append(top)
            for root, dirs, files in os.walk(top):
                dirs.sort()
                found += [Path(root) / d for d in dirs]
                found += [Path(root) / f for f in sorted(files)]
    return sorted(found)


def _info(name: str, mtime: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = mtime, mode, 0, 0, "", ""
    return info


def _add(archive: tarfile.TarFile, tree: Path, path: Path, index: BundleIndex,
         epoch: int) -> None:
    name = path.relative_to(tree).as_posix()
    stat = path.lstat()
    info = _info(name, min(int(stat.st_mtime), epoch), stat.st_mode & 0o7777)
    if path.is_symlink():
        info.type, info.linkname = tarfile.SYMTYPE, str(path.readlink())
        archive.addfile(info)
        index.links[name] = info.linkname
    elif path.is_dir():
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
    else:
        info.size = stat.st_size
        with path.open("rb") as handle:
            reader = HashingReader(handle)
            archive.addfile(info, reader)
        index.files[name] = FileEntry(reader.sha256.hexdigest(), reader.size, info.mode)
