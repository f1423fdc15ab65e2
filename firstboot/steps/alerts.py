"""Step `alerts`: the timer that runs `arkbox-installer alert check` (docs/alerts.md).

Early in first boot, right after the firewall: if a later step fails, the timer is
already there to say so (the run_failed alert), by whatever destination works then.
"""

from __future__ import annotations

from firstboot.alerts import timer
from firstboot.alerts.destinations import destinations, email_unavailable_reason
from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.step import Outcome
from firstboot.systemd_units import UNIT_DIR, install_timer

NAME = "alerts"


def applies(config: Appliance) -> bool:
    return True


def run(ctx: FirstbootContext) -> Outcome:
    shown = [d.name for d in destinations(ctx.config)]
    details = {"destinations": shown, "every": ctx.config.alerts.check_every,
               "email": email_unavailable_reason(ctx.config) or "on"}
    summary = (f"checks every {ctx.config.alerts.check_every}; to "
               + (", ".join(shown) if shown else "no destination (status only)"))
    if install_timer(ctx, timer.units(ctx.config.alerts.check_every)):
        return Outcome.changed_(f"{timer.TIMER} installed: {summary}", details)
    return Outcome.unchanged(summary, details)


def verify(ctx: FirstbootContext) -> str | None:
    for unit in (timer.SERVICE, timer.TIMER):
        if not ctx.paths.at(UNIT_DIR).joinpath(unit).exists():
            return f"{unit} is missing"
    return None
