"""The first-boot steps, in the order the runner runs them.

Each name is a module of this package (core/step.py has the contract). An entry of
ORDER that is a tuple names steps that run at the same time, one thread each: the
next entry starts once all of them are done. Steps share a group only when none
reads what another writes and they touch different files, units and containers.
"""

from __future__ import annotations

import importlib
from typing import cast

from firstboot.core.errors import ArkboxError
from firstboot.core.step import Step

Entry = str | tuple[str, ...]

ORDER: tuple[Entry, ...] = (
    # First: the secrets come with the box's seed; nothing else may run half-configured.
    "seed",
    "system",
    "firewall",
    # Early: should a later step fail, the alert timer is there to tell the owner.
    "alerts",
    # Before `engine`: the archive is extracted while arkbox-images.service loads the
    # service images (the step then waits for that load); the restore needs no engine.
    "restore",
    "engine",
    "secrets",
    "tls",
    # At once: the mail container and the backup repository (on the backup server) share
    # nothing, and the backup step needs no container.
    ("mail", "backup"),
    # Before `services`: a restored database gets its dump before its users start.
    "restore_dumps",
    "services",
    "proxy",
    # At once, after the proxy that routes to the page: the page's server and the
    # containers' health checks are two waits of their own.
    ("status_page", "health"),
    # updates after backup (an update backs up first); acme after health: the certificate
    # it requests in the background must not swap under the health probes.
    ("updates", "acme"),
)
# Every step, in the order status lists them.
NAMES: tuple[str, ...] = tuple(
    name for entry in ORDER for name in ((entry,) if isinstance(entry, str) else entry))


def load_steps(order: tuple[Entry, ...] = ORDER) -> list[Step | tuple[Step, ...]]:
    """The step modules of each entry, a group as a tuple."""
    return [_load(entry) if isinstance(entry, str) else tuple(_load(name) for name in entry)
            for entry in order]


def _load(name: str) -> Step:
    """Import one step module by name; a missing one is an installer defect."""
    try:
        module = importlib.import_module(f"firstboot.steps.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"firstboot.steps.{name}":
            raise
        raise ArkboxError(f"step {name!r} is not part of this installer",
                          hint="the installer was built from an incomplete source tree: "
                          "rebuild it (arkbox build)") from err
    if getattr(module, "NAME", None) != name:
        raise ArkboxError(f"module firstboot.steps.{name} does not declare NAME = {name!r}")
    return cast(Step, module)
