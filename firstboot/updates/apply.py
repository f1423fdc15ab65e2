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

The record (record.py) is written at every phase. An update cut off (a power loss, a
kill) is dealt with at the next boot by arkbox-update-recover.service (`update
--recover`): once files have moved it rolls back as above, before that it records the
update as failed with nothing changed; `update --rollback` does the same by hand.

Test hook (core/kill_switch.py): ARKBOX_TEST_KILL_AT=update:<point> with the points
after-backup, swap-midway, apply-midway (when apply reports its services step) and
rollback-midway.
"""

from __future__ import annotations

import dataclasses
import os
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
from firstboot.core.kill_switch import KillSwitch
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
    RUNNING,
    UpdateRecord,
    load_record,
)
from firstboot.updates.swap import roll_back, stage, swap_in, update_dir

# First boot of a whole box under software emulation takes minutes; an apply that has
# not finished in an hour is stuck.
APPLY_TIMEOUT_S = 3600.0

Out = Callable[[str], None]


def say(line: str) -> None:
    """Progress as it comes: the journal of the units and `arkbox update` over SSH read
    stdout from a pipe, which print() would otherwise hold back to the end."""
    print(line, flush=True)


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
            out(f"kept the image {image_id[:19]} of the build left: {err.message}")
            continue
        if result.returncode == 0:
            out(f"removed the image {image_id[:19]} of the build left")
        elif "No such image" not in result.stderr:  # never loaded (a cut before apply)
            out(f"kept the image {image_id[:19]} of the build left: "
                f"{result.stderr.strip()}")


def update_lock(paths: Paths) -> AbstractContextManager[None]:
    """One update at a time; the lock is also how status tells running from cut off."""
    return held_or_refused(paths.state / LOCK_NAME, ArkboxError(
        "another update is running on this box", hint="wait for it: arkbox-installer status"))


def kill_switch(paths: Paths) -> KillSwitch:
    return KillSwitch.from_env(os.environ, paths.state)


def update(bundle_path: Path, paths: Paths, *, allow_downgrade: bool = False,
           out: Out = say, apply: ApplyFn = apply_installed,
           backup: BackupFn = backup_before,
           clean: CleanFn = remove_superseded_images) -> int:
    """Check, back up, swap, apply; roll back on a failed apply. Returns the exit code;
    BadInputError (exit 2) for a bundle this box must not take, before anything changed."""
    kill = kill_switch(paths)
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
        record.new_image_ids = sorted(image_ids(verified.manifest))
        out(f"update to arkbox {check.version[1]} · images changed: "
            f"{', '.join(check.images_changed) or 'none'} · installer "
            f"{'changed' if check.installer_changed else 'unchanged'} · config "
            f"{'changed' if check.config_changed else 'unchanged'}")
        before = image_ids(read_box_manifest(paths.root))
        code = _run(verified, paths, record, started, out, apply, backup, kill)
        # The images of the build the box left: the previous one's after a success, the
        # failed one's after a rollback.
        if record.result == OK:
            clean(paths, before, out)
        elif record.result == ROLLED_BACK:
            clean(paths, image_ids(verified.manifest), out)
        return code


def _run(verified: VerifiedBundle, paths: Paths, record: UpdateRecord, started: float,
         out: Out, apply: ApplyFn, backup: BackupFn, kill: KillSwitch) -> int:
    folder = update_dir(paths.root)
    try:
        record.phase = "backup"
        record.save(paths)
        record.backup_archive = backup(paths)
        out(f"backup before the update: {record.backup_archive}" if record.backup_archive
            else "no backup before the update: this box has no backup repository")
        kill("update", "after-backup")
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
        swap_in(paths.root, folder / "next", folder / "previous",
                midway=lambda: kill("update", "swap-midway"))
    except OSError as err:  # a full disk, say: what was moved so far goes back
        out(f"putting the new files in place failed: {err}; rolling back")
        return _roll_back(paths, record, started, out, apply,
                          Applied(False, f"putting the new files in place failed: {err}"),
                          kill)
    record.phase = "apply"
    record.save(paths)
    applied = apply(paths, _services_line_hook(out, lambda: kill("update", "apply-midway")))
    if applied.ok:
        # Recorded before previous/ goes: a cut between the two leaves a record that says
        # ok, and recovery then only removes the kept files.
        _finish(record, paths, started, OK, None, None)
        shutil.rmtree(folder / "previous", ignore_errors=True)
        out(f"{record.summary()} in {record.seconds:.0f} s")
        return EXIT_OK
    out(f"the update failed: {applied.failure}; rolling back")
    return _roll_back(paths, record, started, out, apply, applied, kill)


def _services_line_hook(out: Out, hook: Callable[[], None]) -> Out:
    """`out`, calling `hook` once when apply reports its services step: the containers are
    then on the new images while later steps have not run (the apply-midway cut)."""
    seen: list[bool] = []

    def passed_on(line: str) -> None:
        out(line)
        if not seen and line.split()[1:2] == ["services"]:
            seen.append(True)
            hook()
    return passed_on


def _roll_back(paths: Paths, record: UpdateRecord, started: float, out: Out,
               apply: ApplyFn, cause: Applied, kill: KillSwitch) -> int:
    record.phase = "rollback"
    record.save(paths)
    previous = update_dir(paths.root) / "previous"
    roll_back(paths.root, previous, midway=lambda: kill("update", "rollback-midway"))
    again = apply(paths, out)
    if again.ok:
        _finish(record, paths, started, ROLLED_BACK, f"{cause.failure}; rolled back",
                cause.hint)
    else:
        _finish(record, paths, started, FAILED,
                f"{cause.failure}; rolled back the files, but the previous build's apply "
                f"failed too: {again.failure}",
                again.hint or "run arkbox-installer apply and read what it says; the data "
                              "is untouched, and the backup before the update has it too")
    # The files are back either way: nothing is left to undo (and a kept folder would
    # refuse the next update). Removed after the record, as after a success.
    shutil.rmtree(previous, ignore_errors=True)
    shutil.rmtree(previous.parent / "next", ignore_errors=True)  # a swap cut off midway
    out(record.summary())
    return EXIT_FAILURE


def rollback_interrupted(paths: Paths, out: Out = say, apply: ApplyFn = apply_installed,
                         *, at_boot: bool = False,
                         clean: CleanFn = remove_superseded_images) -> int:
    """An update that was cut off: rolled back once its files had begun to move (files
    back, then the previous build's apply); recorded as failed, nothing changed, before.
    Exit 0 once the box is one build again (the record and the update_failed alert say
    what happened); 1 when the previous build's apply failed.

    `update --rollback` (by hand: an error when there is nothing to undo) and `update
    --recover` (at_boot, arkbox-update-recover.service: nothing to do is exit 0)."""
    with update_lock(paths):
        folder = update_dir(paths.root)
        record = _saved_record(paths)
        kept = (folder / "previous").is_dir()
        if kept and record is not None and record.result == OK:
            shutil.rmtree(folder / "previous", ignore_errors=True)  # cut while tidying up
            out("the last update had finished; removed the files it kept")
            return EXIT_OK
        if kept:
            phase = record.phase if record is not None else "?"
            record = record or UpdateRecord(
                bundle="?", started_at=utc_now().isoformat(timespec="seconds"),
                version=["?", "?"], archive=[None, None])
            out(f"an update was cut off in its {phase} phase: rolling back")
            cause = Applied(False, f"cut off in its {phase} phase")
            _roll_back(paths, record, time.monotonic(), out, apply, cause,
                       kill_switch(paths))
            if record.result != ROLLED_BACK:
                return EXIT_FAILURE  # the previous build's apply failed too: the record says
            clean(paths, set(record.new_image_ids), out)  # what the cut-off build loaded
            return EXIT_OK  # the box is its previous build, whole
        if record is not None and record.result == RUNNING:
            shutil.rmtree(folder / "next", ignore_errors=True)
            _finish(record, paths, None, FAILED,
                    f"cut off in its {record.phase} phase, before any file changed; "
                    "nothing was changed", "run the update again")
            out(record.summary())
            return EXIT_OK
        if at_boot:
            return EXIT_OK
        raise ArkboxError("nothing to roll back: no update was cut off",
                          hint="the last update finished or changed nothing: "
                               "arkbox-installer status")


def _saved_record(paths: Paths) -> UpdateRecord | None:
    """The saved record; one this installer cannot read (another version's fields)
    counts as none rather than stopping the recovery."""
    saved = load_record(paths)
    if saved is None:
        return None
    known = {f.name for f in dataclasses.fields(UpdateRecord)}
    try:
        return UpdateRecord(**{k: v for k, v in saved.items() if k in known})
    except TypeError:
        return None


def _start_record(check: UpdateCheck) -> UpdateRecord:
    return UpdateRecord(
        bundle=check.bundle, started_at=utc_now().isoformat(timespec="seconds"),
        version=list(check.version), archive=list(check.archive),
        images_changed=check.images_changed, installer_changed=check.installer_changed,
        config_changed=check.config_changed)


def _finish(record: UpdateRecord, paths: Paths, started: float | None, result: str,
            failure: str | None, hint: str | None) -> None:
    """Close the record in one write; `started` None: how long it ran is not known."""
    record.result, record.phase, record.failure, record.hint = result, "done", failure, hint
    record.finished_at = utc_now().isoformat(timespec="seconds")
    record.seconds = None if started is None else round(time.monotonic() - started, 1)
    record.save(paths)
