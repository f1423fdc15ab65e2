"""Alerts from inside other jobs (backup, check --verify-data): never in their way.

Whatever goes wrong here (a destination refusing, a broken state file, a bug) is
logged and swallowed: the job has already recorded its own result, and its exit
code must not depend on whether anyone could be told.
"""

from __future__ import annotations

import logging

from firstboot.alerts.check import run_check
from firstboot.alerts.delivery import Sender
from firstboot.alerts.state import Event
from firstboot.core.context import FirstbootContext

log = logging.getLogger("arkbox.alerts")


def backup_ping(ctx: FirstbootContext, ok: bool) -> Event:
    at = ctx.now().isoformat(timespec="seconds")
    if ok:
        return Event("ping-success", "backup", "backup succeeded", at=at)
    return Event("ping-fail", "backup", "backup failed", at=at)


def after_backup(ctx: FirstbootContext, ok: bool, sender: Sender | None = None) -> None:
    """The success or fail ping, then a check (which raises or resolves backup_failed)."""
    _check_quietly(ctx, [backup_ping(ctx, ok)], sender)


def after_job(ctx: FirstbootContext, sender: Sender | None = None) -> None:
    """A check right after a job whose record an alert reads (check --verify-data)."""
    _check_quietly(ctx, [], sender)


def _check_quietly(ctx: FirstbootContext, extra: list[Event], sender: Sender | None) -> None:
    try:
        report = run_check(ctx, extra, sender=sender)
    except Exception as err:  # an alert never fails the job that raised it
        log.warning("alert check after the job failed (the job's own result stands): %s",
                    err)
        return
    for result in report.results:
        if not result["ok"]:
            log.warning("alert not delivered to %s: %s (retried by arkbox-alerts.timer)",
                        result["shown"], result["error"])
