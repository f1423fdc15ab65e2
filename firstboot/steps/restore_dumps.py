"""Step `restore_dumps`: after a restore, load each database dump before its users start.

Runs before `services`: the dumped databases (and what they connect to) are started
and fed their dumps (firstboot/backup/dumps.py); step `services` then starts the rest.
On a fresh box there are no dumps and nothing is started here.
"""

from __future__ import annotations

from firstboot.backup.client import enabled
from firstboot.backup.dumps import load_dumps, pending_dumps
from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.step import Outcome

NAME = "restore_dumps"


def applies(config: Appliance) -> bool:
    # Always: with backups off it says so in status ("unchanged"), rather than vanishing.
    return True


def run(ctx: FirstbootContext) -> Outcome:
    if not enabled(ctx.config):
        return Outcome.unchanged("backups are off: no backup.repository")
    loaded = load_dumps(ctx)
    if not loaded:
        return Outcome.unchanged("no database dump to load")
    return Outcome.changed_("loaded " + ", ".join(loaded), {"dumps": loaded})


def verify(ctx: FirstbootContext) -> str | None:
    if enabled(ctx.config) and pending_dumps(ctx.paths):
        return "database dumps still waiting to be loaded"
    return None
