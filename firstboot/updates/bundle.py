"""The update bundle's format, and reading one back with every byte checked.

`arkbox build` writes `NAME-update.tar`: the arkbox-owned files of the new root fs, at
their paths in it (the installer folder, /etc/arkbox, /usr/share/arkbox with the service
images, their recipes and the build manifest), and last an index, `arkbox-update.json`,
with the sha256 and size of every file. The index comes last because the builder hashes
each file while writing it; a truncated bundle therefore has no index and is refused.
The build manifest in out/ holds the sha256 of the whole bundle.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from firstboot.core.errors import BadInputError

INDEX_NAME = "arkbox-update.json"
FORMAT = 1
# Where a bundle may put files: the parts of the root fs that arkbox owns.
OWNED = ("etc/arkbox", "usr/local/lib/arkbox-installer", "usr/local/sbin/arkbox-installer",
         "usr/share/arkbox")
MANIFEST_PATH = "usr/share/arkbox/build-manifest.json"
_BLOCK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int
    mode: int


@dataclass
class BundleIndex:
    """arkbox-update.json."""

    appliance: str
    role: str
    arkbox_version: str
    config_sha256: str
    archive_state: dict[str, str]
    files: dict[str, FileEntry] = field(default_factory=dict)  # regular files by path
    links: dict[str, str] = field(default_factory=dict)  # symlinks: path -> target
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> BundleIndex:
        try:
            raw: dict[str, Any] = json.loads(text)
            files = {p: FileEntry(**e) for p, e in raw.pop("files").items()}
            return cls(files=files, **raw)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise BadInputError(f"{where}: the index {INDEX_NAME} is not one this installer "
                                f"reads ({e})", hint=_REBUILD) from e


_REBUILD = "use the NAME-update.tar that `arkbox build` wrote, copied whole"


def owned(path: str) -> bool:
    """Whether a bundle may write `path` (relative, normalised, below an OWNED part)."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or str(pure) != path.rstrip("/"):
        return False
    return any(path == part or path.startswith(part + "/") for part in OWNED)


class HashingReader:
    """A file object that hashes what is read through it (the builder hashes as it writes)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.sha256, self.size = raw, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data


@dataclass(frozen=True)
class VerifiedBundle:
    path: Path
    index: BundleIndex
    manifest: dict[str, Any]  # the new build's manifest, as the box will have it


def verify_bundle(path: Path) -> VerifiedBundle:
    """Read the whole bundle once: every member is owned and listed, every file's sha256
    and size match the index, the index is last and nothing is missing. BadInputError
    (exit 2) says what is wrong; nothing is written."""
    where = str(path)
    try:
        index, seen, links, manifest_text = _read_members(path, where)
    except FileNotFoundError as e:
        raise BadInputError(f"{path}: no such file", hint=_REBUILD) from e
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BadInputError(f"{path} is not a whole tar archive ({e}): truncated or "
                            "damaged", hint=_REBUILD) from e
    if index is None:
        raise BadInputError(f"{where} ends before its index {INDEX_NAME}: the bundle is "
                            "truncated or not an arkbox update", hint=_REBUILD)
    _compare(where, index, seen, links)
    try:
        manifest = json.loads(manifest_text)
    except ValueError as e:
        raise BadInputError(f"{where}: {MANIFEST_PATH} is not JSON", hint=_REBUILD) from e
    return VerifiedBundle(path, index, manifest)


def _read_members(path: Path, where: str
                  ) -> tuple[BundleIndex | None, dict[str, FileEntry], dict[str, str], bytes]:
    """One pass over the tar: each file hashed, links noted, the index parsed."""
    seen: dict[str, FileEntry] = {}
    links: dict[str, str] = {}
    index: BundleIndex | None = None
    manifest_text = b""
    with tarfile.open(path, "r|") as archive:  # a stream: read once, front to back
        for member in archive:
            if index is not None:
                raise BadInputError(f"{where}: {member.name} follows the index", hint=_REBUILD)
            handle = archive.extractfile(member) if member.isfile() else None
            if member.name == INDEX_NAME and handle is not None:
                index = BundleIndex.from_json(handle.read().decode("utf-8", "replace"), where)
                continue
            if not owned(member.name):
                raise BadInputError(f"{where}: {member.name!r} is outside what an update may "
                                    f"replace ({', '.join(OWNED)})", hint=_REBUILD)
            if member.issym():
                links[member.name] = member.linkname
            elif handle is not None:
                reader = HashingReader(handle)
                kept: list[bytes] | None = [] if member.name == MANIFEST_PATH else None
                while data := reader.read(_BLOCK):
                    if kept is not None:
                        kept.append(data)
                if kept is not None:
                    manifest_text = b"".join(kept)
                seen[member.name] = FileEntry(reader.sha256.hexdigest(), reader.size,
                                              member.mode & 0o7777)
            elif not member.isdir():
                raise BadInputError(f"{where}: {member.name!r} is neither a file, a folder "
                                    "nor a link", hint=_REBUILD)
    return index, seen, links, manifest_text


def _compare(where: str, index: BundleIndex, seen: dict[str, FileEntry],
             links: dict[str, str]) -> None:
    if index.format != FORMAT:
        raise BadInputError(f"{where}: bundle format {index.format}, this installer reads "
                            f"{FORMAT}", hint="update with a bundle of a matching arkbox")
    for name, entry in sorted(index.files.items()):
        got = seen.get(name)
        if got is None:
            raise BadInputError(f"{where}: {name} is listed in the index but missing",
                                hint=_REBUILD)
        if (got.sha256, got.size) != (entry.sha256, entry.size):
            raise BadInputError(f"{where}: {name} does not match its digest in the index "
                                f"(sha256 {got.sha256[:12]}…, expected {entry.sha256[:12]}…)",
                                hint=_REBUILD)
    extra = sorted(set(seen) - set(index.files)) + sorted(
        n for n in links if index.links.get(n) != links[n])
    if extra or set(index.links) != set(links):
        names = extra or sorted(set(index.links) ^ set(links))
        raise BadInputError(f"{where}: {', '.join(names[:3])} not as the index lists",
                            hint=_REBUILD)
    if MANIFEST_PATH not in index.files:
        raise BadInputError(f"{where}: no {MANIFEST_PATH} in the bundle", hint=_REBUILD)
