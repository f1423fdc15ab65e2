"""`arkbox-installer update BUNDLE`: become the bundle's build, with a backup first and a
rollback when anything fails (docs/updates.md).

  check     the bundle read whole against its index; this box's appliance; no downgrade
            unless asked. Refused: exit 2, nothing changed.
  backup    a normal backup archive, before anything changes (when backups are set up).
            A failed backup stops the update: exit 1, nothing changed.
  swap      the bundle's files staged and hashed again, then put in place; what they
            replace is kept (swap.py).
  apply     the new installer's `apply`: only what differs is touched (the reconciler
            recreates the containers whose image changed), then every health check.
  rollback  on a failed apply: the kept files back, then the previous installer's
            `apply` puts the services back on their previous images. The data is never
            touched by any of this. Exit 1, and the record says what failed.

The record (record.py) is written at every phase; `update --rollback` undoes a swap
that an interrupted update left behind.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firstboot.core.config import load_config
from firstboot.core.context import FirstbootContext, Paths, utc_now
from firstboot.core.errors import EXIT_FAILURE, EXIT_OK, ArkboxError, BadInputError
from firstboot.core.execute import CommandError, run
from firstboot.core.locations import INSTALLED_CONFIG, INSTALLER_PROGRAM
from firstboot.core.locks import held_or_refused
from firstboot.status import Status
from firstboot.updates.bundle import VerifiedBundle, verify_bundle
from firstboot.updates.check import UpdateCheck, check_update, read_box_manifest
from firstboot.updates.record import (
    FAILED,
    LOCK_NAME,
    OK,
    ROLLED_BACK,
    UpdateRecord,
    load_record,
)
from firstboot.updates.swap import roll_back, stage, swap_in, update_dir

# First boot of a whole box under software emulation takes minutes; an apply that has
# not finished in an hour is stuck.
APPLY_TIMEOUT_S = 3600.0

Out = Callable[[str], None]


@dataclass(frozen=True)
class Applied:
    ok: bool
    failure: str | None = None  # the failing step and its message
    hint: str | None = None


ApplyFn = Callable[[Paths, Out], Applied]
BackupFn = Callable[[Paths], str | None]
CleanFn = Callable[[Paths, set[str], Out], None]


def apply_installed(paths: Paths, out: Out) -> Applied:
    """Run the installer now in place (new after a swap, previous after a rollback) as
    `apply`, its progress passed on; what failed is read from the status it records."""
    argv = (str(paths.at(INSTALLER_PROGRAM)), "apply", str(paths.at(INSTALLED_CONFIG)))
    try:
        result = run(argv, check=False, timeout=APPLY_TIMEOUT_S, on_line=out)
    except CommandError as err:  # it could not start, or it ran past the timeout
        return Applied(False, f"apply: {err.message}", err.hint)
    if result.returncode == 0:
        return Applied(True)
    status = Status.load(paths.status)
    if status is not None and status.failures:
        first = status.failures[0]
        return Applied(False, f"{first.step}: {first.message}", first.hint)
    return Applied(False, f"apply exited with {result.returncode}")


def backup_before(paths: Paths) -> str | None:
    """A normal backup archive now; its name, or None when this box has no backups."""
    ctx = FirstbootContext(config=load_config(paths.at(INSTALLED_CONFIG)), paths=paths)
    if ctx.config.backup.repository is None:
        return None
    from firstboot.backup.backup import run_backup
    from firstboot.backup.client import clear_failure, prepare_client

    prepare_client(ctx)
    report = run_backup(ctx, prune=False)  # the update is no time to thin the history
    clear_failure(ctx.paths)
    return report.archive


def image_ids(manifest: dict[str, Any]) -> set[str]:
    """The service images a build manifest names, by ID."""
    return {str(i["id"]) for i in manifest.get("service_images") or []}


def remove_superseded_images(paths: Paths, left: set[str], out: Out) -> None:
    """The images of the build the box left (`left`) that its build now does not name go,
    or every update would leave hundreds of MB behind. One still used stays (the engine
    refuses); that is not a failure of the update."""
    for image_id in sorted(left - image_ids(read_box_manifest(paths.root))):
        try:
            result = run(("docker", "image", "rm", image_id), check=False, timeout=120)
        except CommandError as err:
            out(f"kept the previous image {image_id[:19]}: {err.message}")
            continue
        out(f"removed the previous image {image_id[:19]}" if result.returncode == 0 else
            f"kept the previous image {image_id[:19]}: {result.stderr.strip()}")


def update_lock(paths: Paths) -> AbstractContextManager[None]:
    """One update at a time; the lock is also how status tells running from cut off."""
    return held_or_refused(paths.state / LOCK_NAME, ArkboxError(
        "another update is running on this box", hint="wait for it: arkbox-installer status"))


def update(bundle_path: Path, paths: Paths, *, allow_downgrade: bool = False,
           out: Out = print, apply: ApplyFn = apply_installed,
           backup: BackupFn = backup_before,
           clean: CleanFn = remove_superseded_images) -> int:
    """Check, back up, swap, apply; roll back on a failed apply. Returns the exit code;
    BadInputError (exit 2) for a bundle this box must not take, before anything changed."""
    with update_lock(paths):
        if (update_dir(paths.root) / "previous").is_dir():
            raise ArkboxError("an earlier update was cut off before it finished or rolled "
                              "back (its kept files are still there)",
                              hint="arkbox-installer update --rollback, then update again")
        verified = verify_bundle(bundle_path)
        check = check_update(verified, paths.root, allow_downgrade=allow_downgrade)
        if not (check.images_changed or check.installer_changed or check.config_changed):
            out(f"this box is already the build of {bundle_path}: nothing to do")
            return EXIT_OK
        started = time.monotonic()
        record = _start_record(check)
        out(f"update to arkbox {check.version[1]} · images changed: "
            f"{', '.join(check.images_changed) or 'none'} · installer "
            f"{'changed' if check.installer_changed else 'unchanged'} · config "
            f"{'changed' if check.config_changed else 'unchanged'}")
        before = image_ids(read_box_manifest(paths.root))
        code = _run(verified, paths, record, started, out, apply, backup)
        # The images of the build the box left: the previous one's after a success, the
        # failed one's after a rollback.
        if record.result == OK:
            clean(paths, before, out)
        elif record.result == ROLLED_BACK:
            clean(paths, image_ids(verified.manifest), out)
        return code


def _run(verified: VerifiedBundle, paths: Paths, record: UpdateRecord, started: float,
         out: Out, apply: ApplyFn, backup: BackupFn) -> int:
    folder = update_dir(paths.root)
    try:
        record.phase = "backup"
        record.save(paths)
        record.backup_archive = backup(paths)
        out(f"backup before the update: {record.backup_archive}" if record.backup_archive
            else "no backup before the update: this box has no backup repository")
        record.phase = "swap"
        record.save(paths)
        stage(verified, folder / "next")
    except ArkboxError as err:
        _finish(record, paths, started, FAILED, f"{err.message}; nothing was changed",
                err.hint)
        out(f"update failed before changing anything: {err.message}")
        if isinstance(err, BadInputError):
            raise
        return EXIT_FAILURE
    try:
        swap_in(paths.root, folder / "next", folder / "previous")
    except OSError as err:  # a full disk, say: what was moved so far goes back
        out(f"putting the new files in place failed: {err}; rolling back")
        return _roll_back(paths, record, started, out, apply,
                          Applied(False, f"putting the new files in place failed: {err}"))
    record.phase = "apply"
    record.save(paths)
    applied = apply(paths, out)
    if applied.ok:
        _finish(record, paths, started, OK, None, None)
        shutil.rmtree(folder / "previous", ignore_errors=True)
        out(f"{record.summary()} in {record.seconds:.0f} s")
        return EXIT_OK
    out(f"the update failed: {applied.failure}; rolling back")
    return _roll_back(paths, record, started, out, apply, applied)


def _roll_back(paths: Paths, record: UpdateRecord, started: float, out: Out,
               apply: ApplyFn, cause: Applied) -> int:
    record.phase = "rollback"
    record.save(paths)
    previous = update_dir(paths.root) / "previous"
    roll_back(paths.root, previous)
    again = apply(paths, out)
    if again.ok:
        shutil.rmtree(previous, ignore_errors=True)
        _finish(record, paths, started, ROLLED_BACK, f"{cause.failure}; rolled back",
                cause.hint)
    else:
        _finish(record, paths, started, FAILED,
                f"{cause.failure}; rolled back the files, but the previous build's apply "
                f"failed too: {again.failure}",
                again.hint or "run arkbox-installer apply and read what it says; the data "
                              "is untouched, and the backup before the update has it too")
    out(record.summary())
    return EXIT_FAILURE


def rollback_interrupted(paths: Paths, out: Out = print, apply: ApplyFn = apply_installed
                         ) -> int:
    """`update --rollback`: undo the swap an interrupted update left behind, then apply."""
    with update_lock(paths):
        if not (update_dir(paths.root) / "previous").is_dir():
            raise ArkboxError("nothing to roll back: no update left kept files behind",
                              hint="the last update finished or changed nothing: "
                                   "arkbox-installer status")
        saved = load_record(paths)
        record = UpdateRecord(**saved) if saved else UpdateRecord(
            bundle="?", started_at=utc_now().isoformat(timespec="seconds"),
            version=["?", "?"], archive=[None, None])
        cause = Applied(False, f"interrupted in its {record.phase} phase")
        return _roll_back(paths, record, time.monotonic(), out, apply, cause)


def _start_record(check: UpdateCheck) -> UpdateRecord:
    return UpdateRecord(
        bundle=check.bundle, started_at=utc_now().isoformat(timespec="seconds"),
        version=list(check.version), archive=list(check.archive),
        images_changed=check.images_changed, installer_changed=check.installer_changed,
        config_changed=check.config_changed)


def _finish(record: UpdateRecord, paths: Paths, started: float, result: str,
            failure: str | None, hint: str | None) -> None:
    record.result, record.phase, record.failure, record.hint = result, "done", failure, hint
    record.finished_at = utc_now().isoformat(timespec="seconds")
    record.seconds = round(time.monotonic() - started, 1)
    record.save(paths)
