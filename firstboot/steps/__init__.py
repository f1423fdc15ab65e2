"""The first-boot steps, in the order the runner runs them.

Each name is a module of this package (see base.py for the contract). Steps for
backups and restore are inserted here by their issues.
"""

from __future__ import annotations

import importlib
from typing import cast

from firstboot.core.errors import ArkboxError
from firstboot.core.step import Step

ORDER: tuple[str, ...] = (
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
    "mail",
    # Before `services`: a restored database gets its dump before its users start.
    "restore_dumps",
    "services",
    "proxy",
    "status_page",  # after the proxy that routes to it
    "health",
    "backup",
    "updates",  # after backup: an update backs up first
    "acme",  # last: it starts the request in the background, after the proxy is up
)


def load_steps(names: tuple[str, ...] = ORDER) -> list[Step]:
    """Import the step modules by name; a missing one is an installer defect."""
    steps = []
    for name in names:
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
        steps.append(cast(Step, module))
    return steps
