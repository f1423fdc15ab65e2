"""Step `services`: the appliance's containers, reconciled with the config.

What each service becomes and how a re-run changes it: firstboot/containers/services.py.
"""

from __future__ import annotations

from firstboot.containers.services import converge_services, services_problem
from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.step import Outcome

NAME = "services"


def applies(config: Appliance) -> bool:
    # Even with no services: the reconcile removes containers of services dropped earlier.
    return True


def run(ctx: FirstbootContext) -> Outcome:
    report = converge_services(ctx)
    summary = report.summary(len(ctx.config.services))
    if report.changed:
        return Outcome.changed_(summary, report.details())
    return Outcome.unchanged(summary, report.details())


def verify(ctx: FirstbootContext) -> str | None:
    return services_problem(ctx)
