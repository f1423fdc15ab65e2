"""Step `restore`: decide RESTORE or FRESH, and restore the latest backup onto a blank box.

Runs before every step that writes into /srv/arkbox (secrets, tls, services), so
a failed or refused restore leaves nothing a later restore would have to undo.

    backup.restore   repository has archives    no archives / no repository   unreachable,
                                                                              wrong passphrase
    auto             RESTORE                    FRESH                         fail (retried)
    required         RESTORE                    fail (retried by the unit)    fail (retried)
    never            FRESH (repository not asked)

"Fail (retried)": the step fails with the reason in status and the journal, and
arkbox-firstboot.service starts again with a back-off of up to 15 minutes.
A box whose /srv/arkbox already holds data is never restored over. A repository this box
backed up to or restored from (its record in /var/lib/arkbox/backup/repository.json) that
answers "does not exist" fails the step instead of FRESH, unless `apply --force`.
"""

from __future__ import annotations

import json
import time

from firstboot.backup import borg
from firstboot.backup.client import (
    BackupError,
    Borg,
    enabled,
    known_repository,
    prepare_client,
    record_repository,
    refuse_new_repository,
)
from firstboot.backup.restore import data_is_blank, find_backup, restore
from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext, Mode
from firstboot.core.files import atomic_write
from firstboot.core.step import Outcome, StepFailed

NAME = "restore"
# Inside one run, `required` retries this often before failing (the unit then backs off).
RETRY_DELAYS_S = (5.0, 15.0)


def applies(config: Appliance) -> bool:
    # Always: with backups off it says so in status ("unchanged"), rather than vanishing.
    return True


def _decided(ctx: FirstbootContext, mode: Mode, reason: str, **extra: object) -> Outcome:
    ctx.mode, ctx.mode_reason = mode, reason
    details = {"mode": str(mode), "reason": reason, **extra}
    atomic_write(ctx.paths.state / "restore.json", json.dumps(details, indent=2) + "\n")
    summary = f"{mode}: {reason}"
    return Outcome.changed_(summary, details) if mode is Mode.RESTORE else \
        Outcome.unchanged(summary, details)


def run(ctx: FirstbootContext) -> Outcome:
    if not enabled(ctx.config):
        return _decided(ctx, Mode.FRESH, "backups are off: no backup.repository")
    policy = ctx.config.backup.restore
    if policy == "never":
        return _decided(ctx, Mode.FRESH, "backup.restore: never")
    if not data_is_blank(ctx.paths):
        return _decided(ctx, Mode.FRESH, f"{ctx.paths.data} already holds data: not restoring "
                        "over it")
    if ctx.config.backup.ssh_key is None:
        reason = ("backup.ssh_key is not in the config: a blank box has no key the backup "
                  "server knows")
        if policy == "required":
            raise StepFailed(f"cannot restore: {reason}",
                             hint="put the client key in the config (backup.ssh_key)")
        return _decided(ctx, Mode.FRESH, reason)
    try:
        prepare_client(ctx)
    except BackupError as err:
        raise StepFailed(err.message, hint=err.hint) from err
    delays = list(RETRY_DELAYS_S) if policy == "required" else []
    while True:
        try:
            return _restore_or_fresh(ctx, policy)
        except BackupError as err:
            if not delays:
                raise StepFailed(f"restore: {err.message}", hint=err.hint) from err
            delay = delays.pop(0)
            ctx.log.warning("%s; retrying in %.0f s", err.message.splitlines()[0], delay)
            time.sleep(delay)


def _restore_or_fresh(ctx: FirstbootContext, policy: str) -> Outcome:
    runner = Borg(ctx)
    try:
        runner.run(borg.info_repo_argv(), what="opening the backup repository")
    except BackupError as err:
        if "does not exist" not in err.message:
            raise
        refuse_new_repository(known_repository(ctx.paths), runner.remote.repository,
                              ctx.force_new_repository)
        if policy == "required":
            raise BackupError("the repository does not exist yet, and backup.restore is "
                              "required: waiting for it",
                              hint="check backup.repository, or set backup.restore: auto "
                              "to allow a fresh install") from err
        return _decided(ctx, Mode.FRESH, "the backup repository does not exist yet")
    backup = find_backup(ctx)
    if backup is None:
        if policy == "required":
            raise BackupError("the repository holds no complete backup, and backup.restore "
                              "is required: not starting fresh",
                              hint="restore: required waits for a backup; set restore: auto "
                              "to start fresh")
        return _decided(ctx, Mode.FRESH, "the backup repository holds no archives")
    ctx.checkpoint("before-extract")
    report = restore(ctx, backup)
    record_repository(ctx.paths, runner.remote.repository, ctx.now(), "restore")
    return _decided(ctx, Mode.RESTORE, report.summary(), archive=backup.name,
                    seconds=report.seconds_by_part, dumps=report.dumps,
                    config_matches=report.config_matches)


def verify(ctx: FirstbootContext) -> str | None:
    if not enabled(ctx.config):
        return None
    path = ctx.paths.state / "restore.json"
    if not path.exists():
        return "no restore decision recorded"
    decision = json.loads(path.read_text())
    if decision.get("mode") == str(Mode.RESTORE) and not ctx.paths.manifest.exists():
        return f"restored, yet {ctx.paths.manifest} is missing"
    return None
