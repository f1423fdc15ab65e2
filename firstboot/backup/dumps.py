"""After a restore, load each database dump before the services that use it start.

The restore left the dumps under /var/lib/arkbox/restore-dumps/<service>. `load_dumps`
starts only the dumped services and what they connect to (`first_wave`), feeds each
dump to its service's `restore_command` (`docker exec -i`) once the container is
healthy, then deletes it; the services step then starts the rest, so an application
never sees its database empty. Step `restore_dumps` runs it on a restored box; the
drill runs it in its throwaway root.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from firstboot.backup import borg
from firstboot.backup.restore import dumps_dir
from firstboot.containers.engine import container_state
from firstboot.containers.naming import Naming
from firstboot.containers.probe import container_problem
from firstboot.containers.services import converge_services
from firstboot.core import execute, wait
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.execute import CommandError
from firstboot.core.step import StepFailed
from firstboot.core.wait import NotYet

READY_TIMEOUT_S = 180.0
POLL_S, POLL_MAX_S = 0.25, 1.0  # each poll may exec the health check: not faster
LOAD_TIMEOUT_S = 3600


def pending_dumps(paths: Paths) -> list[Path]:
    """The dumps a restore left that are not loaded yet."""
    directory = dumps_dir(paths)
    return sorted(directory.glob("*")) if directory.is_dir() else []


def load_dumps(ctx: FirstbootContext) -> list[str]:
    """Start the dumped databases (and what they need), load each dump, delete it.

    Returns what was loaded ("db (1.2 s)"); empty when there was nothing to load.
    """
    pending = pending_dumps(ctx.paths)
    if not pending:
        return []
    naming = Naming.for_root(ctx.paths.root)
    for dump in pending:
        service = dump.name
        policy = ctx.config.services[service].backup if service in ctx.config.services else None
        if policy is None or not policy.restore_command:
            raise StepFailed(f"a dump of {service!r} was restored, but the config gives it no "
                             "backup.restore_command",
                             hint=f"add services.{service}.backup.restore_command")
    depends_on = {name: list(s.connects_to) for name, s in ctx.config.services.items()}
    wave = first_wave(depends_on, [d.name for d in pending])
    if not all(_running(ctx, naming.container(name)) for name in wave):
        ctx.log.info("starting %s before the other services, to load the dump(s) first",
                     " ".join(wave))
        converge_services(ctx, only=wave)
    loaded = []
    for dump in pending:
        service = dump.name
        command = ctx.config.services[service].backup.restore_command
        assert command  # checked above
        container = naming.container(service)
        _wait_healthy(ctx, container)
        started = time.monotonic()
        try:
            ctx.run(borg.docker_exec_argv(container, command, stdin=True),
                    feed=execute.from_file(dump), timeout=LOAD_TIMEOUT_S)
        except CommandError as err:
            raise StepFailed(f"loading the dump of {service} failed: {err.message}",
                             hint="see the journal; the dump stays in "
                             f"{dump} and is loaded again by the next run") from err
        dump.unlink()
        loaded.append(f"{service} ({time.monotonic() - started:.1f} s)")
    return loaded


def first_wave(depends_on: Mapping[str, Sequence[str]], dumped: Collection[str]) -> list[str]:
    """The services to start before the dumps are loaded: the dumped ones and, transitively,
    what they connect to; sorted. Every other service starts after the load."""
    wave: set[str] = set()
    todo = [name for name in dumped if name in depends_on]
    while todo:
        name = todo.pop()
        if name not in wave:
            wave.add(name)
            todo += [d for d in depends_on.get(name, ()) if d in depends_on]
    return sorted(wave)


def _running(ctx: FirstbootContext, container: str) -> bool:
    state = container_state(ctx.docker, container)
    return bool(state and state.get("State", {}).get("Running"))


def _wait_healthy(ctx: FirstbootContext, container: str) -> None:
    """Until the container's own health check passes, run now rather than when the engine
    gets round to it (every 30 s by default: the wait a restore would otherwise pay)."""

    def ready() -> bool | NotYet:
        problem = container_problem(ctx.docker, container)
        return True if problem is None else NotYet(problem)

    try:
        wait.until(f"{container} to be ready", ready, READY_TIMEOUT_S, interval_s=POLL_S,
                   max_interval_s=POLL_MAX_S)
    except wait.WaitTimedOut as err:
        raise StepFailed(f"{err.message}; cannot load its dump",
                         hint=f"docker logs {container} shows why; the dump stays and is "
                         "loaded by the next run") from err
