"""The one container reconciler: observe → plan → apply → report, with a dry run.

Services, mail and the proxy each describe what should be (a `Desired`: their
containers' specs and hashes, the networks they use) and hand it here:

    report = reconcile(ctx.docker, naming, desired, checkpoint=ctx.checkpoint)
    plan = reconcile(client, naming, desired, dry_run=True).plan   # nothing is touched

`plan.plan` (pure) decides; `apply` carries the plan out in one order for all:
remove containers, shape networks, then per container in `connects_to` order create
(checkpoint `created-NAME`), join networks, start; or join/leave and restart. Each
step's verify() is "the plan is empty" plus what lies outside the engine (files).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import docker

from firstboot.containers import engine
from firstboot.containers.naming import LABEL_CONFIG_HASH, Naming
from firstboot.containers.plan import Actual, Desired, DesiredContainer, Plan, plan
from firstboot.containers.spec import start_order
from firstboot.core.files import read_bytes
from firstboot.core.step import StepFailed

DEFAULT_GRACE_S = 10  # for a container of a service gone from the config

log = logging.getLogger("arkbox.firstboot.reconcile")

Checkpoint = Callable[[str], None]


@dataclass(frozen=True)
class Report:
    """What a reconcile did (or, in a dry run, would do)."""

    plan: Plan
    applied: bool
    done: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return self.applied and not self.plan.is_empty


def observe(client: docker.DockerClient, naming: Naming, role: str) -> Actual:
    """The engine as it is: the role's containers and every network of this box."""
    return Actual(tuple(engine.owned_containers(client, naming, role)),
                  tuple(engine.owned_networks(client, naming)))


def plan_for(client: docker.DockerClient, naming: Naming, desired: Desired) -> Plan:
    return plan(desired, observe(client, naming, desired.role))


def reconcile(client: docker.DockerClient, naming: Naming, desired: Desired, *,
              checkpoint: Checkpoint | None = None, dry_run: bool = False) -> Report:
    """Bring the engine to `desired`; with `dry_run`, only say what that would take."""
    planned = plan_for(client, naming, desired)
    if dry_run:
        return Report(planned, applied=False)
    return apply(client, naming, planned, checkpoint)


def apply(client: docker.DockerClient, naming: Naming, planned: Plan,
          checkpoint: Checkpoint | None = None) -> Report:
    """Carry out `planned`; a failure raises with what went wrong (the next run resumes)."""
    point = checkpoint or (lambda name: None)
    if planned.missing:
        service, _ = planned.missing[0]
        raise StepFailed(
            f"{service} should join " + ", ".join(n for _, n in planned.missing)
            + ", which does not exist",
            hint="the services step creates each service's network: run first boot again "
            "(services runs before proxy)")
    done: list[str] = []
    for container in planned.remove:
        wanted = planned.desired.get(container.service)
        log.info("removing %s (%s)", container.name, container.service)
        engine.remove_container(client, container.container_id,
                                wanted.spec.stop_grace_seconds if wanted else DEFAULT_GRACE_S)
        done.append(f"removed {container.name}")
    point("containers-removed")
    done += _apply_networks(client, naming, planned)
    for name in start_order({n: d.spec for n, d in planned.desired.items()}):
        done += _apply_container(client, naming, planned, planned.desired[name], point)
    return Report(planned, applied=True, done=tuple(done))


def _apply_networks(client: docker.DockerClient, naming: Naming, planned: Plan) -> list[str]:
    for name in planned.remove_networks:
        engine.remove_network(client, naming, name)
    for network in planned.replace_networks:
        engine.remove_network(client, naming, network.name)
        engine.create_network(client, naming, network)
    for network in planned.create_networks:
        engine.create_network(client, naming, network)
    return planned.network_lines()


def _apply_container(client: docker.DockerClient, naming: Naming, planned: Plan,
                     wanted: DesiredContainer, point: Checkpoint) -> list[str]:
    name = wanted.service
    spec = wanted.spec
    if name in planned.create or name in planned.recreate:
        labels = {**naming.labels(planned.role, name), LABEL_CONFIG_HASH: wanted.config_hash}
        container_id = engine.create_container(client, spec, labels, wanted.secret_env)
        point(wanted.created_point or f"created-{name}")
    elif name in planned.current:
        container_id = planned.current[name]
    else:
        return []  # left out of a restricted plan
    aliases = {a.network: a.aliases for a in spec.attachments}
    for network in planned.joined(name):  # before a start: the first request finds them
        engine.connect_container(client, container_id, network, aliases.get(network, ()))
    for network in planned.left(name):
        engine.disconnect_container(client, container_id, network)
    done = [f"{name} joined {n}" for n in planned.joined(name)]
    done += [f"{name} left {n}" for n in planned.left(name)]
    if name in planned.create or name in planned.recreate or name in planned.start:
        engine.start_container(client, container_id, name)
        done.append(f"started {name}")
    elif name in planned.restart:
        # A mounted file replaced by rename is a new inode: only a restart shows it.
        engine.restart_container(client, container_id, spec.stop_grace_seconds)
        done.append(f"restarted {name}")
    return done


def files_changed_at(files: Iterable[tuple[Path, bytes | None]]) -> float | None:
    """For `DesiredContainer.files_changed_at`: the newest change of the files a container
    reads at start, given each with the content it should have (None: any content);
    math.inf when one differs (it is about to be rewritten); None when there are none."""
    newest: float | None = None
    for path, wanted in files:
        if wanted is not None and read_bytes(path) != wanted:
            return math.inf
        try:
            changed = path.stat().st_mtime
        except FileNotFoundError:
            continue
        newest = changed if newest is None else max(newest, changed)
    return newest
