"""Step `restore_dumps`: after a restore, load each database dump into its restarted service.

The restore step left the dumps under /var/lib/arkbox/restore-dumps/<service>;
once the services step has started the containers, each is fed to the service's
`restore_command` (`docker exec -i`), then deleted. On a fresh box there are none.
"""

from __future__ import annotations

import time

from firstboot.backup import borg
from firstboot.backup.client import enabled
from firstboot.backup.restore import dumps_dir
from firstboot.config import Appliance
from firstboot.containers.naming import Naming
from firstboot.context import FirstbootContext
from firstboot.execute import CommandError
from firstboot.steps.base import Outcome, StepFailed

NAME = "restore_dumps"
READY_TIMEOUT_S = 180.0


def applies(config: Appliance) -> bool:
    # Always: with backups off it says so in status ("unchanged"), rather than vanishing.
    return True


def run(ctx: FirstbootContext) -> Outcome:
    if not enabled(ctx.config):
        return Outcome.unchanged("backups are off: no backup.repository")
    pending = sorted(dumps_dir(ctx.paths).glob("*")) if dumps_dir(ctx.paths).is_dir() else []
    if not pending:
        return Outcome.unchanged("no database dump to load")
    naming = Naming.for_root(ctx.paths.root)
    loaded = []
    for dump in pending:
        service = dump.name
        policy = ctx.config.services[service].backup if service in ctx.config.services else None
        if policy is None or not policy.restore_command:
            raise StepFailed(f"a dump of {service!r} was restored, but the config gives it no "
                             "backup.restore_command",
                             hint=f"add services.{service}.backup.restore_command")
        container = naming.container(service)
        _wait_healthy(ctx, container)
        started = time.monotonic()
        try:
            ctx.run(borg.docker_exec_argv(container, policy.restore_command, stdin=True),
                    input_data=dump.read_bytes(), timeout=3600)
        except CommandError as err:
            raise StepFailed(f"loading the dump of {service} failed: {err.message}",
                             hint="see the journal; the dump stays in "
                             f"{dump} and is loaded again by the next run") from err
        dump.unlink()
        loaded.append(f"{service} ({time.monotonic() - started:.1f} s)")
    return Outcome.changed_("loaded " + ", ".join(loaded), {"dumps": loaded})


def _wait_healthy(ctx: FirstbootContext, container: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    state = "unknown"
    while time.monotonic() < deadline:
        attrs = ctx.docker.containers.get(container).attrs.get("State", {})
        health = (attrs.get("Health") or {}).get("Status")
        state = health or attrs.get("Status", "unknown")
        if state in ("healthy", "running") and attrs.get("Running"):
            return
        time.sleep(1.0)
    raise StepFailed(f"{container} is {state} after {READY_TIMEOUT_S:.0f} s: cannot load its dump")


def verify(ctx: FirstbootContext) -> str | None:
    if not enabled(ctx.config):
        return None
    if dumps_dir(ctx.paths).is_dir() and any(dumps_dir(ctx.paths).iterdir()):
        return "database dumps still waiting to be loaded"
    return None
