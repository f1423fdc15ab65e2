"""build-manifest.json: what went into a build and what came out, with digests."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from builder.pipeline.cache import digest_file

MANIFEST_NAME = "build-manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StageRecord(_Strict):
    name: str
    seconds: float = Field(ge=0)
    note: str = ""


class ServiceImage(_Strict):
    name: str = Field(description="recipe name, e.g. proxy")
    tag: str = Field(description="tag in the engine, arkbox/NAME:KEY")
    id: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    size: int = Field(ge=0, description="bytes, as the engine reports")
    archive_state: dict[str, str] = Field(
        default_factory=dict,
        description="the Debian archive it was built from: dists URL -> InRelease Date:")


class OutputFile(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class BuildManifest(_Strict):
    schema_version: int = 1
    arkbox_version: str
    name: str
    role: str
    config_file: str
    config_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    suite: str
    source_date_epoch: int
    archive_state: dict[str, str] = Field(
        default_factory=dict,
        description="the Debian archive the build used: dists URL -> InRelease Date: "
                    "(builder/pipeline/archive_state.py)")
    stages: list[StageRecord]
    packages: dict[str, str] = Field(description="Debian package -> version in the root fs")
    service_images: list[ServiceImage]
    outputs: dict[str, OutputFile] = Field(description="file name in out/ -> digest")


def describe_outputs(paths: list[Path],
                     known: Mapping[str, str] | None = None) -> dict[str, OutputFile]:
    """Digest every output: from `known` (file name -> sha256, taken while the stage wrote
    it) or else read here, several at once (hashlib hashes without holding the GIL)."""
    known = known or {}
    ordered = sorted(paths)
    unknown = [p for p in ordered if p.name not in known]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        digests = {**known, **dict(zip((p.name for p in unknown),
                                       pool.map(digest_file, unknown), strict=True))}
    return {p.name: OutputFile(sha256=digests[p.name], size=p.stat().st_size) for p in ordered}


def write_manifest(manifest: BuildManifest, path: Path) -> None:
    path.write_text(json.dumps(manifest.model_dump(), indent=2, sort_keys=True) + "\n")


def read_manifest(path: Path) -> BuildManifest:
    return BuildManifest.model_validate_json(path.read_text())


def installed_packages(rootfs: Path) -> dict[str, str]:
    """Package -> version from the root fs's dpkg database (read as data, no chroot)."""
    status = rootfs / "var/lib/dpkg/status"
    packages: dict[str, str] = {}
    for stanza in status.read_text().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(packages.items()))
