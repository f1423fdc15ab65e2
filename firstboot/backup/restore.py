"""Restore: find the latest complete backup, extract it beside /srv/arkbox, verify, swap in.

Nothing is extracted into live data: the archive goes into /srv/arkbox.restoring
(same file system, so the final step is renames), is verified there (manifest,
config of the same appliance, secrets), and only then moved into place. A
failure anywhere removes the staging directory and leaves /srv/arkbox as it was.
Service parts are extracted two at a time (borg is single-threaded; readers
share the repository). A database dump is kept outside the data under
/var/lib/arkbox/restore-dumps until the `dumps` step feeds it to the restarted
database's restore_command.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firstboot.backup import borg
from firstboot.backup.backup import CONFIG_DIR, list_archives
from firstboot.backup.client import BackupError, Borg
from firstboot.context import FirstbootContext, Paths
from firstboot.files import ensure_dir

PARALLEL_EXTRACTS = 2
# What may already be in /srv/arkbox on a box a restore still counts as blank.
BLANK_ENTRIES = frozenset({"secrets"})


@dataclass(frozen=True)
class Backup:
    """One complete backup: its base archive and the parts its comment names."""

    stamp: str
    base: str
    parts: tuple[str, ...]
    time: str


def staging_dir(paths: Paths) -> Path:
    return paths.data.with_name(paths.data.name + ".restoring")


def dumps_dir(paths: Paths) -> Path:
    return paths.state / "restore-dumps"


def complete_backups(archives: Iterable[dict[str, Any]], host: str) -> list[Backup]:
    """The base archives of `host`, oldest first, with the parts present for each."""
    by_stamp: dict[str, list[str]] = {}
    bases: dict[str, dict[str, Any]] = {}
    for archive in archives:
        name = str(archive.get("name", ""))
        parsed = borg.parse_archive_name(name)
        if parsed is None or parsed.host != host:
            continue
        if parsed.part:
            by_stamp.setdefault(parsed.stamp, []).append(parsed.part)
        else:
            bases[parsed.stamp] = archive
    backups = [Backup(stamp, str(a["name"]), tuple(sorted(by_stamp.get(stamp, []))),
                      str(a.get("time", a.get("start", ""))))
               for stamp, a in bases.items()]
    return sorted(backups, key=lambda b: b.stamp)


def data_is_blank(paths: Paths) -> bool:
    data = paths.data
    if not data.exists():
        return True
    return all(entry.name in BLANK_ENTRIES and _only_backup_secrets(entry)
               for entry in data.iterdir())


def _only_backup_secrets(entry: Path) -> bool:
    # The backup step's own exports may exist (a box that was set up, then failed early).
    return all(child.name == "backup" for child in entry.iterdir()) if entry.is_dir() else False


@dataclass
class RestoreReport:
    archive: str
    seconds_by_part: dict[str, float] = field(default_factory=dict)
    dumps: list[str] = field(default_factory=list)
    config_matches: bool = True

    def summary(self) -> str:
        parts = len(self.seconds_by_part)
        extra = f", {len(self.dumps)} dump(s) to load" if self.dumps else ""
        note = "" if self.config_matches else " (its config differs from this box's: see status)"
        return f"restored {self.archive} ({parts} archive(s){extra}){note}"


def find_backup(ctx: FirstbootContext, archive: str | None = None) -> Backup | None:
    """The backup to restore: the named one, else the latest complete one; None when empty."""
    backups = complete_backups(list_archives(ctx), ctx.config.appliance.name)
    if archive is not None:
        for backup in backups:
            if archive in (backup.base, backup.stamp):
                return backup
        raise BackupError(f"no complete backup named {archive!r} in the repository",
                          hint="see the archives with: arkbox-installer list")
    return backups[-1] if backups else None


def restore(ctx: FirstbootContext, backup: Backup, *, force: bool = False) -> RestoreReport:
    """Extract `backup` and put it in place of /srv/arkbox, which must be blank unless force."""
    paths = ctx.paths
    if not data_is_blank(paths) and not force:
        raise BackupError(f"{paths.data} holds live data: not restoring over it",
                          hint="restore onto a blank box, or move the data away; "
                          "arkbox-installer restore --force replaces it")
    runner = Borg(ctx)
    info = runner.json(borg.info_archive_argv(backup.base), what=f"reading {backup.base}")
    expected = _parts_from_comment(info)
    missing = [p for p in expected if p not in backup.parts]
    if missing:
        raise BackupError(f"backup {backup.stamp} is incomplete: missing {', '.join(missing)}",
                          hint="restore an older one: arkbox-installer restore --archive NAME")
    staging = staging_dir(paths)
    shutil.rmtree(staging, ignore_errors=True)  # a previous attempt, cut short
    ensure_dir(staging, 0o755)
    report = RestoreReport(backup.base)
    try:
        files = [backup.base, *(backup.stamp + p for p in backup.parts
                                if p.startswith(borg.SERVICE_PART))]
        with ThreadPoolExecutor(PARALLEL_EXTRACTS) as pool:
            for name in pool.map(lambda a: _extract(ctx, a, staging, report), files):
                ctx.log.info("extracted %s", name)
        report.config_matches = verify_staging(ctx, staging)
        dumps = [p for p in backup.parts if p.startswith(borg.DUMP_PART)]
        _fetch_dumps(ctx, backup, dumps, report)
        _swap_in(paths, staging, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(dumps_dir(paths), ignore_errors=True)
        raise
    return report


def _parts_from_comment(info: Any) -> list[str]:
    try:
        comment = info["archives"][0].get("comment") or "{}"
        parts = json.loads(comment).get("parts", [])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return []
    return [str(p) for p in parts if p]


def _extract(ctx: FirstbootContext, archive: str, staging: Path, report: RestoreReport) -> str:
    import time

    started = time.monotonic()
    Borg(ctx).run(borg.extract_argv(archive), cwd=staging, what=f"extracting {archive}")
    report.seconds_by_part[archive] = round(time.monotonic() - started, 2)
    return archive


def verify_staging(ctx: FirstbootContext, staging: Path) -> bool:
    """The restored tree is a box of this appliance: manifest, config, secrets present.

    Returns whether the archived config is byte-identical to the one this box runs.
    """
    problems = [f"{what} missing" for what, path in (
        ("manifest.json", staging / "manifest.json"),
        ("config", staging / CONFIG_DIR / "appliance.yaml"),
        ("secrets/", staging / "secrets"),
    ) if not path.exists()]
    if problems:
        raise BackupError("the archive does not hold a complete arkbox: " + ", ".join(problems),
                          hint="it was not made by arkbox-installer backup, or is damaged; "
                          "restore another: arkbox-installer restore --archive NAME")
    try:
        manifest = json.loads((staging / "manifest.json").read_text())
    except ValueError as err:
        raise BackupError(f"the archived manifest.json is unreadable: {err}") from err
    name = ctx.config.appliance.name
    if manifest.get("appliance") not in (None, name):
        raise BackupError(f"the archive is of appliance {manifest.get('appliance')!r}, "
                          f"this box is {name!r}",
                          hint="use the config of the appliance being restored")
    source = ctx.config.source_path
    archived = (staging / CONFIG_DIR / "appliance.yaml").read_bytes()
    return source is not None and Path(source).read_bytes() == archived


def _fetch_dumps(ctx: FirstbootContext, backup: Backup, dumps: list[str],
                 report: RestoreReport) -> None:
    if not dumps:
        return
    target = dumps_dir(ctx.paths)
    shutil.rmtree(target, ignore_errors=True)
    ensure_dir(target, 0o700)
    runner = Borg(ctx)
    for part in dumps:
        service = part.removeprefix(borg.DUMP_PART)
        result = runner.run(borg.extract_stdout_argv(backup.stamp + part), binary=True,
                            what=f"extracting the dump of {service}")
        (target / service).write_bytes(result.stdout_bytes)
        (target / service).chmod(0o600)
        report.dumps.append(service)


def _swap_in(paths: Paths, staging: Path, force: bool) -> None:
    data = paths.data
    if data.exists():
        if force:
            aside = data.with_name(data.name + ".replaced")
            shutil.rmtree(aside, ignore_errors=True)
            data.rename(aside)
        else:
            # Only the backup step's exports can be here (data_is_blank); keep the restored.
            shutil.rmtree(data)
    staging.rename(data)
