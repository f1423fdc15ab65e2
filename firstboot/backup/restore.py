"""Restore: find the latest backup, extract it beside /srv/arkbox, verify, swap in.

Nothing is extracted into live data: the archive goes into /srv/arkbox.restoring
(same file system, so the final step is renames), is verified there (manifest,
config of the same appliance, secrets, the dumps its comment names), and only then
moved into place. A failure anywhere removes the staging directory and leaves
/srv/arkbox as it was. Each paused service's volumes are extracted by their own borg
process beside the rest, as many at once as backup.restore_parallelism says (by default
one per core: borg is single-threaded; readers share the repository). A database dump is
kept outside the data under /var/lib/arkbox/restore-dumps until the `dumps` step feeds it
to the restarted database's restore_command.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firstboot.backup import archive_paths, borg, feed
from firstboot.backup.backup import CONFIG_DIR, list_archives
from firstboot.backup.client import BackupError, Borg
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.files import ensure_dir

# What may already be in /srv/arkbox on a box a restore still counts as blank.
BLANK_ENTRIES = frozenset({"secrets"})
_ANOTHER = "restore an older one: arkbox-installer restore --archive NAME"


@dataclass(frozen=True)
class Backup:
    """One backup: one archive."""

    name: str
    time: str


@dataclass(frozen=True)
class Contents:
    """What the archive's comment says is in it (firstboot.backup.feed.Plan.comment)."""

    paused: tuple[str, ...]
    dumps: dict[str, str]  # service -> path in the archive


def staging_dir(paths: Paths) -> Path:
    return paths.data.with_name(paths.data.name + ".restoring")


def dumps_dir(paths: Paths) -> Path:
    return paths.state / "restore-dumps"


def complete_backups(archives: Iterable[dict[str, Any]], host: str) -> list[Backup]:
    """The backups of `host`, oldest first (checkpoints of runs cut short are not)."""
    backups = []
    for archive in archives:
        name = str(archive.get("name", ""))
        parsed = borg.parse_archive_name(name)
        if parsed is not None and parsed.host == host:
            backups.append(Backup(name, str(archive.get("time", archive.get("start", "")))))
    return sorted(backups, key=lambda b: b.name)


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
    seconds_by_part: dict[str, float] = field(default_factory=dict)  # one per borg extract
    dumps: list[str] = field(default_factory=list)
    config_matches: bool = True

    def summary(self) -> str:
        extra = f", {len(self.dumps)} dump(s) to load" if self.dumps else ""
        note = "" if self.config_matches else " (its config differs from this box's: see status)"
        return (f"restored {self.archive} ({len(self.seconds_by_part)} extract(s) in parallel"
                f"{extra}){note}")


def find_backup(ctx: FirstbootContext, archive: str | None = None) -> Backup | None:
    """The backup to restore: the named one, else the latest; None when there is none."""
    backups = complete_backups(list_archives(ctx), ctx.config.appliance.name)
    if archive is not None:
        for backup in backups:
            if backup.name == archive:
                return backup
        raise BackupError(f"no backup named {archive!r} in the repository",
                          hint="see the archives with: arkbox-installer list")
    return backups[-1] if backups else None


def restore(ctx: FirstbootContext, backup: Backup, *, force: bool = False) -> RestoreReport:
    """Extract `backup` and put it in place of /srv/arkbox, which must be blank unless force."""
    paths = ctx.paths
    if not data_is_blank(paths) and not force:
        raise BackupError(f"{paths.data} holds live data: not restoring over it",
                          hint="restore onto a blank box, or move the data away; "
                          "arkbox-installer restore --force replaces it")
    info = Borg(ctx).json(borg.info_archive_argv(backup.name), what=f"reading {backup.name}")
    contents = read_contents(info, backup.name)
    refuse_unsafe_paths(ctx, backup.name)
    staging = staging_dir(paths)
    shutil.rmtree(staging, ignore_errors=True)  # a previous attempt, cut short
    ensure_dir(staging, 0o755)
    report = RestoreReport(backup.name)
    try:
        jobs = extract_jobs(backup.name, contents)
        with ThreadPoolExecutor(extracts_at_once(ctx)) as pool:
            for label in pool.map(lambda job: _extract(ctx, job, staging, report), jobs):
                ctx.log.info("extracted %s", label)
        _recreate_specials(staging)
        report.config_matches = verify_staging(ctx, staging)
        _keep_dumps(ctx, staging, contents, report)
        shutil.rmtree(staging / feed.RUN_DIR)
        _swap_in(paths, staging, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(dumps_dir(paths), ignore_errors=True)
        raise
    return report


def extracts_at_once(ctx: FirstbootContext) -> int:
    """backup.restore_parallelism, else one borg extract per core (each is one process,
    CPU-bound by decryption and decompression)."""
    return ctx.config.backup.restore_parallelism or os.cpu_count() or 1


def read_contents(info: Any, name: str) -> Contents:
    try:
        comment = json.loads(info["archives"][0].get("comment") or "{}")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        comment = {}
    if not isinstance(comment, dict) or comment.get("arkbox") != "backup":
        raise BackupError(f"{name} was not made by arkbox-installer backup",
                          hint=_ANOTHER)
    if comment.get("format") != feed.FORMAT:
        raise BackupError(f"{name} is a backup of format {comment.get('format', 1)}; this "
                          f"version restores format {feed.FORMAT}",
                          hint="restore it with the arkbox version that made it")
    dumps = comment.get("dumps") or {}
    return Contents(tuple(str(s) for s in comment.get("paused") or ()),
                    {str(k): str(v) for k, v in dumps.items()} if isinstance(dumps, dict)
                    else {})


def refuse_unsafe_paths(ctx: FirstbootContext, archive: str) -> None:
    """Before extracting: no item of the archive may land outside the staging directory
    (firstboot.backup.archive_paths says why borg's listing is read first)."""
    listing = Borg(ctx).run(borg.list_items_argv(archive), what=f"listing {archive}").stdout
    problems = archive_paths.unsafe_paths(archive_paths.items_of(listing), feed.RUN_DIR)
    if problems:
        raise BackupError(archive_paths.refusal(archive, problems),
                          hint="nothing was extracted; a service raced the backup or the "
                          "archive was tampered with; " + _ANOTHER)


def extract_jobs(archive: str, contents: Contents) -> list[tuple[str, tuple[str, ...]]]:
    """(label, argv) per borg extract: the rest of the box (with the dumps and the
    specials list, not the gates), and each paused service's volumes on their own."""
    own = [f"volumes/{service}" for service in contents.paused]
    rest = borg.extract_argv(archive, patterns=(
        f"+pp:{feed.SPECIALS}", f"+pp:{feed.RUN_DIR}/dumps", f"-pp:{feed.RUN_DIR}",
        *(f"-pp:{path}" for path in own)))
    return [("the rest", rest), *((path, borg.extract_argv(archive, [path])) for path in own)]


def _extract(ctx: FirstbootContext, job: tuple[str, tuple[str, ...]], staging: Path,
             report: RestoreReport) -> str:
    label, argv = job
    started = time.monotonic()
    Borg(ctx).run(argv, cwd=staging, what=f"extracting {label} of {report.archive}")
    report.seconds_by_part[label] = round(time.monotonic() - started, 2)
    return label


def _recreate_specials(staging: Path) -> None:
    try:
        listed = json.loads((staging / feed.SPECIALS).read_text())["specials"]
    except (FileNotFoundError, ValueError, KeyError, TypeError) as err:
        raise BackupError(f"the archive's {feed.SPECIALS} is missing or unreadable ({err})",
                          hint=_ANOTHER) from err
    try:
        feed.recreate_specials(staging, list(listed))
    except feed.UnsafeEntry as err:
        raise BackupError(f"refusing the archive: {err}; nothing was made outside "
                          f"{staging}", hint="the archive was tampered with or a service "
                          "raced the backup; " + _ANOTHER) from err
    except OSError as err:  # e.g. the archive holds a file where an entry should be made
        raise BackupError(f"recreating the archive's FIFOs, devices and symlinks failed: "
                          f"{err}", hint=_ANOTHER) from err


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
                          hint="it is damaged; " + _ANOTHER)
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


def _keep_dumps(ctx: FirstbootContext, staging: Path, contents: Contents,
                report: RestoreReport) -> None:
    """The dumps, out of the data and aside for the `dumps` step."""
    if not contents.dumps:
        return
    target = dumps_dir(ctx.paths)
    shutil.rmtree(target, ignore_errors=True)
    ensure_dir(target, 0o700)
    for service, path in sorted(contents.dumps.items()):
        source = staging / path
        if not source.is_file():
            raise BackupError(f"the archive is incomplete: the dump of {service} ({path}) "
                              "is missing", hint=_ANOTHER)
        shutil.move(source, target / service)
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
