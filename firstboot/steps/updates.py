"""Step `updates`: the timer of unattended updates (`arkbox-installer update --fetch` at
updates.schedule) when the config turns them on, none when it does not (docs/updates.md).
"""

from __future__ import annotations

from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.step import Outcome
from firstboot.systemd_units import UNIT_DIR, install_timer, remove_timer
from firstboot.updates import timer

NAME = "updates"


def applies(config: Appliance) -> bool:
    return True  # also to remove the timer when the config turns updates off


def run(ctx: FirstbootContext) -> Outcome:
    settings = ctx.config.updates
    if not settings.enabled:
        if remove_timer(ctx, timer.SERVICE, timer.TIMER):
            return Outcome.changed_(f"{timer.TIMER} removed (updates are off)")
        return Outcome.unchanged("unattended updates are off (updates.enabled)")
    summary = f"{settings.schedule} from {settings.url}"
    if install_timer(ctx, timer.units(settings.schedule)):
        return Outcome.changed_(f"{timer.TIMER} installed: {summary}")
    return Outcome.unchanged(summary)


def verify(ctx: FirstbootContext) -> str | None:
    unit_dir = ctx.paths.at(UNIT_DIR)
    present = [unit for unit in (timer.SERVICE, timer.TIMER) if (unit_dir / unit).exists()]
    if ctx.config.updates.enabled and len(present) < 2:
        return f"{timer.TIMER} or its service is missing"
    if not ctx.config.updates.enabled and present:
        return f"{', '.join(present)} still installed though updates are off"
    return None
