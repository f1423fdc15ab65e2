"""Whether a verified bundle may update this box, and what it would change (pure but for
reading the box's own files).

Refused (exit 2): a bundle of another appliance or role, and a downgrade unless asked
for: an older arkbox version, or the same version built from an older Debian archive
(its newest InRelease date; docs/updates.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from firstboot.core.errors import BadInputError
from firstboot.updates.bundle import MANIFEST_PATH, VerifiedBundle

INSTALLER_DIR = "usr/local/lib/arkbox-installer/"


@dataclass
class UpdateCheck:
    """What `verify-update` reports."""

    bundle: str
    appliance: str
    version: tuple[str, str]  # (this box, the bundle)
    archive: tuple[str | None, str | None]  # newest InRelease date (this box, the bundle)
    downgrade: str | None  # why it is one, when it is
    images_changed: list[str] = field(default_factory=list)
    images_unchanged: list[str] = field(default_factory=list)
    installer_changed: bool = False
    config_changed: bool = False


def read_box_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_PATH
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BadInputError(f"cannot read this box's build manifest {path}: {e}",
                            hint="run it on an arkbox appliance (or backup server)") from e
    return manifest


def check_update(bundle: VerifiedBundle, root: Path, *, allow_downgrade: bool) -> UpdateCheck:
    box, new = read_box_manifest(root), bundle.manifest
    where = str(bundle.path)
    if (new.get("name"), new.get("role")) != (box.get("name"), box.get("role")):
        raise BadInputError(
            f"{where} is for {new.get('role')} {new.get('name')!r}; this box is "
            f"{box.get('role')} {box.get('name')!r}",
            hint="build the update from this box's own config (appliance.name)")
    result = UpdateCheck(
        bundle=where, appliance=str(box["name"]),
        version=(str(box.get("arkbox_version")), str(new.get("arkbox_version"))),
        archive=(newest_date(box.get("archive_state")), newest_date(new.get("archive_state"))),
        downgrade=None)
    result.downgrade = downgrade_reason(result.version, result.archive)
    if result.downgrade and not allow_downgrade:
        raise BadInputError(f"{where} is a downgrade: {result.downgrade}",
                            hint="--allow-downgrade when you mean to go back")
    before = {i["name"]: i["id"] for i in box.get("service_images") or []}
    for image in new.get("service_images") or []:
        same = before.get(image["name"]) == image["id"]
        (result.images_unchanged if same else result.images_changed).append(image["name"])
    result.config_changed = box.get("config_sha256") != new.get("config_sha256")
    result.installer_changed = any(
        _digest(root / name) != entry.sha256
        for name, entry in bundle.index.files.items() if name.startswith(INSTALLER_DIR)
    ) or bool(_installer_files(root) - set(bundle.index.files) - set(bundle.index.links))
    return result


def _installer_files(root: Path) -> set[str]:
    """The box's installer folder, as bundle paths: a file the bundle does not have
    makes the folder differ too (the swap replaces the folder whole)."""
    folder = root / INSTALLER_DIR
    return {str(path.relative_to(root)) for path in folder.rglob("*")
            if path.is_file() or path.is_symlink()}


def newest_date(state: object) -> str | None:
    """The newest Date: of a manifest's archive_state, or None when it has none."""
    if not isinstance(state, dict) or not state:
        return None
    return max((str(d) for d in state.values()), key=_when)


def downgrade_reason(version: tuple[str, str], archive: tuple[str | None, str | None]
                     ) -> str | None:
    try:
        box, new = Version(version[0]), Version(version[1])
    except InvalidVersion:
        return None if version[0] == version[1] else f"unknown version order {version}"
    if new < box:
        return f"arkbox {version[1]} is older than this box's {version[0]}"
    if new == box and archive[0] and archive[1] and _when(archive[1]) < _when(archive[0]):
        return (f"its Debian archive ({archive[1]}) is older than this box's ({archive[0]})")
    return None


def _when(date: str) -> float:
    try:
        return parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return 0.0


def _digest(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None
