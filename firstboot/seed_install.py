"""Installing a box's secrets from its seed, all or nothing, and remembering where from.

The secrets go where the config references them, below its directory (/etc/arkbox):
`{file: secrets/x}` at secrets/x, `{env: NAME}` at env/NAME (core/seed.py:installed_name),
owned by root, files 0600 in directories 0700. Every file is written under a temporary
name first and renamed only when all are written, so a failure leaves nothing behind.
/var/lib/arkbox/seed.json records which source gave them and when (never a value).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from firstboot.core.config import Appliance, SecretRef
from firstboot.core.errors import ArkboxError
from firstboot.core.files import fsync_dir
from firstboot.core.seed import Seed, check_fits, decode, installed_name, needed_refs, ref_key
from firstboot.core.step import Outcome, StepFailed
from firstboot.seed_record import SeedRecord, load_record, save_record
from firstboot.seed_sources import Found, Source, find_seed

log = logging.getLogger("arkbox.seed")

DIR_MODE = 0o700
FILE_MODE = 0o600
TMP_SUFFIX = ".seed-tmp"
DEFAULT_ROLE = "appliance"


def read_role(build_manifest: Path) -> str:
    """The role this image was built for, from its build manifest."""
    try:
        raw = json.loads(build_manifest.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise StepFailed(f"the build manifest {build_manifest} is missing",
                         hint="it is written by `arkbox build`; this root fs was not built "
                         "by it") from err
    except (OSError, ValueError) as err:
        raise StepFailed(f"cannot read {build_manifest}: {err}") from err
    role = raw.get("role", DEFAULT_ROLE) if isinstance(raw, dict) else DEFAULT_ROLE
    return str(role)


def target(base_dir: Path, ref: SecretRef) -> Path:
    return base_dir / installed_name(ref)


def not_installed(base_dir: Path, needed: Sequence[SecretRef]) -> list[SecretRef]:
    """The needed secrets that are not on the box yet (missing or empty)."""
    absent = []
    for ref in needed:
        path = target(base_dir, ref)
        if not path.is_file() or path.stat().st_size == 0:
            absent.append(ref)
    return absent


def _owner() -> tuple[int, int] | None:
    # Only root can give files away; tests install as whoever runs them.
    return (0, 0) if os.geteuid() == 0 else None


@dataclass
class _Undo:
    """What an install did so far, to take back when it fails."""

    made_dirs: list[Path] = field(default_factory=list)
    modes: list[tuple[Path, int]] = field(default_factory=list)  # directories tightened
    temps: list[tuple[Path, Path]] = field(default_factory=list)  # (temp, target)
    renamed: list[Path] = field(default_factory=list)

    def undo(self) -> None:
        for path in self.renamed:  # only files that did not exist before are installed
            with contextlib.suppress(OSError):
                path.unlink()
        for temp, _ in self.temps:
            with contextlib.suppress(OSError):
                temp.unlink()
        for directory in reversed(self.made_dirs):
            with contextlib.suppress(OSError):
                directory.rmdir()
        for directory, mode in self.modes:
            with contextlib.suppress(OSError):
                directory.chmod(mode)


def _make_dirs(base_dir: Path, directory: Path, undo: _Undo) -> None:
    """Every directory from base_dir (exclusive) down to `directory`: 0700, root's."""
    current = base_dir
    owner = _owner()
    for part in directory.relative_to(base_dir).parts:
        current = current / part
        if not current.is_dir():
            current.mkdir(mode=DIR_MODE)
            undo.made_dirs.append(current)
        mode = current.stat().st_mode & 0o7777
        if mode != DIR_MODE:
            current.chmod(DIR_MODE)
            undo.modes.append((current, mode))
        if owner is not None:
            os.chown(current, *owner)


def _write_temp(path: Path, value: bytes) -> Path:
    temp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask
        owner = _owner()
        if owner is not None:
            os.fchown(fd, *owner)
        view = memoryview(value)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return temp


def install(seed: Seed, refs: Sequence[SecretRef], base_dir: Path) -> list[str]:
    """Write each of `refs` from the seed below base_dir, all or nothing; returns their
    names (relative paths, never values)."""
    undo = _Undo()
    try:
        for ref in refs:
            path = target(base_dir, ref)
            _make_dirs(base_dir, path.parent, undo)
            undo.temps.append((_write_temp(path, seed.secrets[ref_key(ref)]), path))
        for temp, path in undo.temps:
            temp.replace(path)
            undo.renamed.append(path)
        for directory in {path.parent for _, path in undo.temps}:
            fsync_dir(directory)
    except OSError as err:
        undo.undo()
        raise StepFailed(f"cannot install the secrets below {base_dir}: {err.strerror} "
                         f"({err.filename}); nothing was installed",
                         hint=f"make {base_dir} writable for root (a full disk?), then "
                         "first boot retries by itself") from err
    except BaseException:
        undo.undo()
        raise
    return [str(installed_name(ref)) for ref in refs]


# ----------------------------------------------------------------- the whole job


def provide_secrets(config: Appliance, *, role: str, sources: Sequence[Source],
                    record_path: Path, now: Callable[[], datetime],
                    checkpoint: Callable[[str], None] = lambda point: None) -> Outcome:
    """Install the secrets this box needs from its seed, unless they are all in place."""
    needed = needed_refs(config, role)
    if not needed:
        return Outcome.unchanged(f"no secrets needed ({role})")
    base_dir = config.base_dir
    absent = not_installed(base_dir, needed)
    if not absent:
        previous = load_record(record_path)
        if previous is None:  # installed, then a power cut before the wipe: finish it
            return _finish_wipe(config, role, needed, sources, record_path, now)
        return Outcome.unchanged(f"{len(needed)} secrets in place", previous)
    found = find_seed(sources, [ref_key(ref) for ref in absent])
    _check(config, role, needed, found)
    names = install(seed_of(found), absent, base_dir)
    log.info("seed: installed %d secrets from %s: %s", len(names), found.where,
             ", ".join(names))
    checkpoint("installed")
    record = _wipe_and_record(found, names, record_path, now)
    wiped = record.wiped
    kept = len(needed) - len(names)
    summary = f"{len(names)} secrets from {found.where}" + (f", {kept} kept" if kept else "")
    return Outcome.changed_(f"{summary}; {wiped}", asdict(record))


def seed_of(found: Found) -> Seed:
    return decode(found.data, found.where)


def _check(config: Appliance, role: str, needed: list[SecretRef], found: Found) -> None:
    check_fits(seed_of(found), appliance=config.appliance.name, role=role,
               config_sha256=config.config_sha256 or "", needed=needed, source=found.where)


def _wipe_and_record(found: Found, names: list[str], record_path: Path,
                     now: Callable[[], datetime]) -> SeedRecord:
    wiped, warnings = found.source.wipe(found)
    for warning in warnings:
        log.warning("seed: %s", warning)
    record = SeedRecord(source=found.source.kind, where=found.where,
                        installed_at=now().isoformat(timespec="seconds"), installed=names,
                        wiped=wiped, warnings=warnings)
    save_record(record_path, record)
    return record


def _finish_wipe(config: Appliance, role: str, needed: list[SecretRef],
                 sources: Sequence[Source], record_path: Path,
                 now: Callable[[], datetime]) -> Outcome:
    """Every secret is in place but no record says where from: a seed may still be there
    (a power cut between install and wipe). Wipe it when it is this box's; else note that
    the secrets were in place, so later runs need not look again."""
    try:
        found = find_seed(sources)
        _check(config, role, needed, found)
    except ArkboxError as err:
        log.info("seed: secrets in place, no seed of this box left to wipe (%s)", err)
        record = SeedRecord(source="none", where="the secrets were in place",
                            installed_at=now().isoformat(timespec="seconds"), installed=[],
                            wiped="nothing to wipe")
        save_record(record_path, record)
        return Outcome.unchanged(f"{len(needed)} secrets in place", asdict(record))
    record = _wipe_and_record(found, [], record_path, now)
    return Outcome.changed_(f"{len(needed)} secrets in place; {record.wiped}", asdict(record))


def verify_installed(config: Appliance, role: str) -> str | None:
    """None when every secret the box needs is installed; else which one is not."""
    for ref in not_installed(config.base_dir, needed_refs(config, role)):
        return f"{ref_key(ref)} is not installed at {target(config.base_dir, ref)}"
    return None
