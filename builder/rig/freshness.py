"""Is out/ stale? `arkbox try` builds only when it is, and says why.

out/ is up to date when its build-manifest.json is a build of the wanted role, of a config
with the same sha256, by the same arkbox version, with its root fs tar there. When `try`
built out/ itself it also records a digest of the arkbox sources in try-source.json (valid
only next to the manifest it was written with), and builds again when they changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.pipeline.build import build
from builder.pipeline.cache import digest_tree
from builder.pipeline.context import Role
from builder.pipeline.manifest import MANIFEST_NAME
from builder.rig.screens import Say, say
from firstboot import __version__
from firstboot.core.config import config_digest
from firstboot.core.errors import ArkboxError

SOURCE_DIR = Path(__file__).resolve().parents[2]
# What a build is made of besides the config: the pipeline, the installer, what is laid in.
SOURCE_PARTS = ("builder", "firstboot", "image", "pyproject.toml")
STAMP_NAME = "try-source.json"  # written by `arkbox try` next to the manifest it built


@dataclass(frozen=True)
class BuiltState:
    """What out/ holds, from its build-manifest.json (and the stamp `try` leaves)."""

    name: str
    role: str
    config_file: str
    config_sha256: str
    arkbox_version: str
    rootfs_tar_present: bool
    source_sha256: str | None  # None: built by plain `arkbox build`, sources not recorded


@dataclass(frozen=True)
class CurrentInputs:
    config_file: str
    config_sha256: str
    arkbox_version: str
    source_sha256: str


@dataclass(frozen=True)
class Freshness:
    stale: bool
    reason: str


def decide_freshness(built: BuiltState | None, now: CurrentInputs, out: str,
                     role: str = "appliance") -> Freshness:
    """Whether `out` must be built again for `now`, and why (pure: unit-tested)."""
    if built is None:
        return Freshness(True, f"no build in {out}/ (no {MANIFEST_NAME})")
    if built.role != role:
        return Freshness(True, f"{out}/ holds a build of the {built.role} role, not {role}")
    if not built.rootfs_tar_present:
        return Freshness(True, f"{out}/{built.name}-rootfs.tar is missing")
    if built.config_sha256 != now.config_sha256:
        return Freshness(True, f"the config changed since the build ({built.config_file} "
                               f"sha256 {built.config_sha256[:12]}… → {now.config_file} "
                               f"sha256 {now.config_sha256[:12]}…)")
    if built.arkbox_version != now.arkbox_version:
        return Freshness(True, f"built by arkbox {built.arkbox_version}, this is "
                               f"{now.arkbox_version}")
    if built.source_sha256 is not None and built.source_sha256 != now.source_sha256:
        return Freshness(True, "the arkbox sources (builder/, firstboot/, image/) changed "
                               "since the build")
    if built.source_sha256 is None:
        return Freshness(False, "same config and arkbox version (sources not recorded by "
                                "`arkbox build`; --rebuild to build anyway)")
    return Freshness(False, "same config, arkbox version and sources")


def source_digest(source_dir: Path = SOURCE_DIR) -> str:
    files: list[Path] = []
    for part in SOURCE_PARTS:
        path = source_dir / part
        files += [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return digest_tree(source_dir, [p for p in files if p.exists()])


def read_built_state(out_dir: Path) -> BuiltState | None:
    manifest_path = out_dir / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
        name = str(manifest["name"])
        state = BuiltState(
            name=name, role=str(manifest["role"]), config_file=str(manifest["config_file"]),
            config_sha256=str(manifest["config_sha256"]),
            arkbox_version=str(manifest["arkbox_version"]),
            rootfs_tar_present=(out_dir / f"{name}-rootfs.tar").is_file(),
            source_sha256=manifest.get("source_sha256"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if state.source_sha256 is None:
        stamp = _read_stamp(out_dir)
        # The stamp speaks only for the manifest it was written next to.
        if stamp and stamp.get("manifest_sha256") == _sha256(manifest_path):
            state = BuiltState(**{**state.__dict__, "source_sha256": stamp.get("source_sha256")})
    return state


def _read_stamp(out_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out_dir / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_stamp(out_dir: Path, source_sha256: str) -> None:
    stamp = {"source_sha256": source_sha256,
             "manifest_sha256": _sha256(out_dir / MANIFEST_NAME)}
    (out_dir / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n")


def ensure_built(config_path: Path, out_dir: Path, *, rebuild: bool, no_build: bool,
                 role: Role = "appliance", out: Say = say) -> BuiltState:
    """Build into out_dir unless it is up to date for this config and these sources."""
    now = CurrentInputs(str(config_path), config_digest(config_path), __version__,
                        source_digest())
    decision = decide_freshness(read_built_state(out_dir), now, str(out_dir), role)
    if rebuild:
        decision = Freshness(True, "--rebuild")
    if not decision.stale:
        out(f"{out_dir}/ is up to date: {decision.reason}")
    elif no_build:
        out(f"{out_dir}/ is stale ({decision.reason}); using it anyway (--no-build)")
    else:
        out(f"building into {out_dir}/: {decision.reason}")
        build(config_path, out_dir, role)
        write_stamp(out_dir, now.source_sha256)
    state = read_built_state(out_dir)
    if state is None or not state.rootfs_tar_present:
        raise ArkboxError(f"{out_dir}/ holds no {role} root fs tar",
                          hint=f"arkbox build {config_path} --role {role} --out {out_dir}")
    return state
