"""Step `backup`: the client key, the repository (created on a fresh box), its key exported,
and the timer that runs `arkbox-installer backup` on the config's schedule.

Host key: pinned from backup.host_key when given; otherwise trusted on first use
(StrictHostKeyChecking=accept-new) and recorded in /var/lib/arkbox/backup/known_hosts,
after which a changed key is refused. A missing repository is created, unless this box
used it before (then the step fails; `apply --force` creates it). The repository key
export and the client's public key go to /srv/arkbox/secrets/backup/; the operator must
copy the export and the passphrase off the box once: without them no restore is possible.
"""

from __future__ import annotations

from firstboot.backup import borg, timer
from firstboot.backup.client import (
    BackupError,
    BackupPaths,
    Borg,
    client_public_key,
    enabled,
    known_repository,
    prepare_client,
    refuse_new_repository,
)
from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.files import ensure_dir, write_if_changed
from firstboot.core.step import Outcome, StepFailed
from firstboot.systemd_units import install_timer, remove_timer

NAME = "backup"
KEY_EXPORT = "borg-key"
KEY_PAPER = "borg-key.txt"


def applies(config: Appliance) -> bool:
    # Always: with backups off it says so in status ("unchanged"), rather than vanishing.
    return True


def run(ctx: FirstbootContext) -> Outcome:
    if not enabled(ctx.config):
        return Outcome.unchanged("backups are off: no backup.repository")
    try:
        changes = prepare_client(ctx)
        changes += _repository(ctx)
    except BackupError as err:
        raise StepFailed(err.message, hint=err.hint) from err
    changes += _timer(ctx)
    details = {"repository": ctx.config.backup.repository,
               "client_key": client_public_key(ctx.paths),
               "key_export": str(BackupPaths(ctx.paths).exported / KEY_EXPORT),
               "schedule": ctx.config.backup.schedule,
               "drill": timer.drill_calendar(ctx.config.backup.drill) or "off"}
    if changes:
        return Outcome.changed_("; ".join(changes), details)
    return Outcome.unchanged("repository, key export and timer in place", details)


def _repository(ctx: FirstbootContext) -> list[str]:
    runner = Borg(ctx)
    changes = []
    try:
        runner.run(borg.info_repo_argv(), what="opening the backup repository")
    except BackupError as err:
        if "does not exist" not in err.message:
            raise
        refuse_new_repository(known_repository(ctx.paths), runner.remote.repository,
                              ctx.force_new_repository)
        runner.run(borg.init_argv(), what="creating the backup repository")
        changes.append("repository created (repokey-blake2)")
    exported = BackupPaths(ctx.paths).exported
    ensure_dir(exported.parent, 0o700)
    ensure_dir(exported, 0o700)
    for name, paper in ((KEY_EXPORT, False), (KEY_PAPER, True)):
        target = exported / name
        if changes:  # a new repository (apply --force): an older export is another's key
            target.unlink(missing_ok=True)
        if not target.exists():
            runner.run(borg.key_export_argv(target, paper), what="exporting the repository key")
            target.chmod(0o600)
            changes.append(f"key exported to {target}")
    if any(c.startswith("key exported") for c in changes):
        ctx.log.warning("COPY OFF THIS BOX, ONCE: %s and the backup passphrase: without both, "
                        "no restore is possible", exported / KEY_PAPER)
    public = client_public_key(ctx.paths)
    if public:
        write_if_changed(exported / "client-ssh-key.pub", public + "\n", mode=0o644)
    return changes


def _timer(ctx: FirstbootContext) -> list[str]:
    schedules = (ctx.config.backup.schedule, timer.CHECK_SCHEDULE)
    changes = [f"{pair.timer} ({schedule})"
               for pair, schedule in zip(timer.units(ctx.config.backup.schedule), schedules,
                                         strict=True)
               if install_timer(ctx, pair)]
    calendar = timer.drill_calendar(ctx.config.backup.drill)
    if calendar is None:
        if remove_timer(ctx, timer.DRILL_SERVICE, timer.DRILL_TIMER):
            changes.append(f"{timer.DRILL_TIMER} removed (backup.drill: off)")
    elif install_timer(ctx, timer.drill_units(calendar)):
        changes.append(f"{timer.DRILL_TIMER} ({calendar})")
    return changes


def verify(ctx: FirstbootContext) -> str | None:
    if not enabled(ctx.config):
        return None
    exported = BackupPaths(ctx.paths).exported
    if not (exported / KEY_EXPORT).exists():
        return "the repository key is not exported"
    wanted = [timer.TIMER, timer.CHECK_TIMER]
    if timer.drill_calendar(ctx.config.backup.drill) is not None:
        wanted.append(timer.DRILL_TIMER)
    for unit in wanted:
        if not ctx.paths.at(timer.UNIT_DIR).joinpath(unit).exists():
            return f"{unit} is missing"
    if not BackupPaths(ctx.paths).ssh_key.exists():
        return "the client SSH key is missing"
    return None
