"""Reconcile planning (pure): what should run vs what runs -> what to do.

`plan(desired, actual)` is the one place that decides, for services, mail and the
proxy alike: which containers to create, recreate (and why), start, restart, remove
or keep, which networks to create, replace or remove, and which networks a running
container joins or leaves. Plain data in, plain data out, so every case (a power cut
mid-recreate left two containers, a container exited, a service left the config, a
secret changed after the start) is unit-tested without an engine. `reconcile.apply`
carries a plan out; an empty plan is what each step's verify() checks.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from firstboot.containers.spec import ServiceSpec

DEFAULT_REASON = "spec changed"


@dataclass(frozen=True)
class DesiredContainer:
    """One container as it should be."""

    spec: ServiceSpec
    config_hash: str  # the spec's fingerprint, the container's arkbox.config-hash label
    secret_env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # When a file it reads only at start (a mounted secret) last changed: a container
    # started before that is restarted. math.inf: a file is out of date (rewritten now).
    files_changed_at: float | None = None
    # Networks joined and left while it runs, outside its spec (the proxy's routed services).
    live_networks: frozenset[str] = frozenset()
    recreate_reason: str = DEFAULT_REASON
    # The checkpoint between creating and starting it (power-cut tests); default created-NAME.
    created_point: str | None = None

    @property
    def service(self) -> str:
        return self.spec.service


@dataclass(frozen=True)
class DesiredNetwork:
    name: str
    role: str  # whose it is: a step replaces or removes only networks of its own role
    internal: bool
    service: str | None = None
    ipv6_subnet: str | None = None  # carry IPv6 (published ports answer on the host's IPv6)


@dataclass(frozen=True)
class Desired:
    """What one step wants of the engine: its role's containers and the networks they use."""

    role: str
    containers: Mapping[str, DesiredContainer]  # by service
    networks: tuple[DesiredNetwork, ...] = ()
    prune_networks: bool = False  # remove this role's networks that are not wanted


@dataclass(frozen=True)
class ActualContainer:
    """A container arkbox owns, as the engine lists it."""

    service: str
    container_id: str
    name: str
    config_hash: str
    running: bool
    started_at: float | None = None  # epoch seconds; None: never started
    networks: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ActualNetwork:
    name: str
    role: str
    internal: bool
    ipv6: bool  # carries IPv6, or is labelled as made where a bridge cannot


@dataclass(frozen=True)
class Actual:
    containers: tuple[ActualContainer, ...]  # of the desired role
    networks: tuple[ActualNetwork, ...]  # every network of this box (any role)


@dataclass(frozen=True)
class Plan:
    create: tuple[str, ...] = ()  # services without a container
    recreate: tuple[str, ...] = ()  # services whose container runs an older spec
    remove: tuple[ActualContainer, ...] = ()  # services gone from the config, or duplicates
    start: tuple[str, ...] = ()  # unchanged but not running
    keep: tuple[str, ...] = ()  # unchanged and running
    restart: tuple[str, ...] = ()  # kept, but a file it reads at start changed since
    join: tuple[tuple[str, str], ...] = ()  # (service, network), before any start
    leave: tuple[tuple[str, str], ...] = ()  # (service, network)
    missing: tuple[tuple[str, str], ...] = ()  # (service, network) to join that does not exist
    create_networks: tuple[DesiredNetwork, ...] = ()
    replace_networks: tuple[DesiredNetwork, ...] = ()  # wrong shape: removed and made again
    remove_networks: tuple[str, ...] = ()
    reasons: tuple[tuple[str, str], ...] = ()  # recreated service -> why
    role: str = ""
    # What apply needs, not what the plan says.
    desired: Mapping[str, DesiredContainer] = field(default_factory=dict, compare=False,
                                                    repr=False)
    current: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def removed_services(self) -> tuple[str, ...]:
        """Services whose containers go away for good (not duplicates of a kept one)."""
        wanted = {*self.create, *self.recreate, *self.start, *self.keep}
        return tuple(sorted({c.service for c in self.remove} - wanted))

    @property
    def change_count(self) -> int:
        return len(self.create) + len(self.recreate) + len(self.removed_services) + len(self.start)

    @property
    def networks_change(self) -> bool:
        return bool(self.create_networks or self.replace_networks or self.remove_networks)

    @property
    def is_empty(self) -> bool:
        return not (self.create or self.recreate or self.remove or self.start or self.restart
                    or self.join or self.leave or self.missing or self.networks_change)

    def reason(self, service: str) -> str:
        return dict(self.reasons).get(service, DEFAULT_REASON)

    def fresh(self, service: str) -> bool:
        """True when the service's container (re)starts under this plan: it reads its
        files as they are then."""
        return service in {*self.create, *self.recreate, *self.start, *self.restart}

    def joined(self, service: str) -> list[str]:
        return [network for name, network in self.join if name == service]

    def left(self, service: str) -> list[str]:
        return [network for name, network in self.leave if name == service]

    def network_lines(self) -> list[str]:
        return ([f"removed network {n}" for n in self.remove_networks]
                + [f"replaced network {n.name}" for n in self.replace_networks]
                + [f"created network {n.name}" for n in self.create_networks])

    def describe(self) -> list[str]:
        """The plan as a person reads it (the dry run); empty when nothing is to be done."""
        removed = set(self.removed_services)
        lines = [f"remove {c.name} ({c.service}: "
                 + ("gone from the config, volumes kept)" if c.service in removed
                    else "replaced)") for c in self.remove]
        lines += [f"remove network {n}" for n in self.remove_networks]
        lines += [f"replace network {n.name}" for n in self.replace_networks]
        lines += [f"create network {n.name}" for n in self.create_networks]
        lines += [f"create {s}" for s in self.create]
        lines += [f"recreate {s} ({self.reason(s)})" for s in self.recreate]
        lines += [f"start {s}" for s in self.start]
        lines += [f"restart {s} (a file it reads at start changed)" for s in self.restart]
        lines += [f"{s}: join {n}" for s, n in self.join]
        lines += [f"{s}: leave {n}" for s, n in self.leave]
        lines += [f"{s} should join {n}, which does not exist" for s, n in self.missing]
        return lines

    def restricted(self, services: Collection[str]) -> Plan:
        """Only what concerns `services` (networks all the same): the first wave of a restore."""
        def mine(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
            return tuple(p for p in pairs if p[0] in services)

        return replace(
            self, create=_only(self.create, services), recreate=_only(self.recreate, services),
            start=_only(self.start, services), restart=_only(self.restart, services),
            remove=tuple(c for c in self.remove if c.service in services),
            join=mine(self.join), leave=mine(self.leave), missing=mine(self.missing),
            reasons=mine(self.reasons))


def plan(desired: Desired, actual: Actual) -> Plan:
    """Everything to do to bring `actual` to `desired`."""
    wanted = desired.containers
    base, current = _match({n: d.config_hash for n, d in wanted.items()}, actual.containers)
    networks = _plan_networks(desired, actual.networks)
    restart = tuple(s for s in base.keep if _needs_restart(wanted[s], current[s]))
    gone = {*networks.remove_networks, *(n.name for n in networks.replace_networks)}
    available = ({n.name for n in actual.networks} - set(networks.remove_networks)) | {
        n.name for n in (*networks.create_networks, *networks.replace_networks)}
    join: list[tuple[str, str]] = []
    leave: list[tuple[str, str]] = []
    for service in sorted(wanted):
        container = current.get(service)
        attached = container.networks - gone if container is not None else None
        joins, leaves = _attachments(wanted[service], attached, {n.name for n in actual.networks})
        join += [(service, n) for n in joins]
        leave += [(service, n) for n in leaves]
    return replace(
        base, restart=restart,
        join=tuple(p for p in join if p[1] in available),
        missing=tuple(p for p in join if p[1] not in available), leave=tuple(leave),
        create_networks=networks.create_networks, replace_networks=networks.replace_networks,
        remove_networks=networks.remove_networks,
        reasons=tuple((s, wanted[s].recreate_reason) for s in base.recreate),
        role=desired.role, desired=dict(wanted),
        current={s: c.container_id for s, c in current.items()})


def plan_containers(desired: Mapping[str, str], actual: Sequence[ActualContainer]) -> Plan:
    """desired: service -> spec hash. actual: every container arkbox owns (any service)."""
    return _match(desired, actual)[0]


def _match(desired: Mapping[str, str], actual: Sequence[ActualContainer]
           ) -> tuple[Plan, dict[str, ActualContainer]]:
    """The container plan, and the container kept (or started) for each service."""
    by_service: dict[str, list[ActualContainer]] = {}
    for container in actual:
        by_service.setdefault(container.service, []).append(container)

    create: list[str] = []
    recreate: list[str] = []
    remove: list[ActualContainer] = []
    start: list[str] = []
    keep: list[str] = []
    current: dict[str, ActualContainer] = {}
    for service in sorted(desired):
        found = by_service.pop(service, [])
        match = _best_match(found, desired[service])
        if match is None:
            remove.extend(found)
            (recreate if found else create).append(service)
            continue
        current[service] = match
        remove.extend(c for c in found if c is not match)
        (keep if match.running else start).append(service)
    for leftovers in by_service.values():
        remove.extend(leftovers)
    remove.sort(key=lambda c: (c.service, c.name))
    return Plan(tuple(create), tuple(recreate), tuple(remove), tuple(start), tuple(keep)), current


def _best_match(found: Sequence[ActualContainer], wanted_hash: str) -> ActualContainer | None:
    """The container to keep: one with the wanted hash, a running one first."""
    matching = [c for c in found if c.config_hash == wanted_hash]
    if not matching:
        return None
    return sorted(matching, key=lambda c: (not c.running, c.name))[0]


def _needs_restart(wanted: DesiredContainer, container: ActualContainer) -> bool:
    """A file the container reads at start changed after it started (also after a power
    cut between writing the file and restarting: the times say so, no state needed)."""
    if wanted.files_changed_at is None or container.started_at is None:
        return False
    return math.isinf(wanted.files_changed_at) or wanted.files_changed_at > container.started_at


def _attachments(wanted: DesiredContainer, attached: frozenset[str] | None,
                 ours: set[str]) -> tuple[list[str], list[str]]:
    """Networks to join and to leave. A new container (attached None) is made on its spec's
    networks and joins only its live ones; a kept one rejoins what it lost (a network
    replaced under it) and leaves the live networks of ours it no longer wants."""
    live = sorted(wanted.live_networks)
    if attached is None:
        return live, []
    spec_networks = [a.network for a in wanted.spec.attachments]
    joins = [n for n in (*spec_networks, *live) if n not in attached]
    keep = {*spec_networks, *live}
    return list(dict.fromkeys(joins)), sorted((attached - keep) & ours)


def _plan_networks(desired: Desired, existing: Sequence[ActualNetwork]) -> Plan:
    by_name = {n.name: n for n in existing}
    create = []
    replace_ = []
    for network in sorted(desired.networks, key=lambda n: n.name):
        have = by_name.get(network.name)
        if have is None:
            create.append(network)
        elif have.role == desired.role and not _fits(have, network):
            replace_.append(network)
        # Another role's network that exists is its owner's to shape.
    wanted = {n.name for n in desired.networks}
    remove = sorted(n.name for n in existing if desired.prune_networks
                    and n.role == desired.role and n.name not in wanted)
    return Plan(create_networks=tuple(create), replace_networks=tuple(replace_),
                remove_networks=tuple(remove))


def _fits(have: ActualNetwork, wanted: DesiredNetwork) -> bool:
    return have.internal == wanted.internal and (wanted.ipv6_subnet is None or have.ipv6)


def _only(names: tuple[str, ...], services: Collection[str]) -> tuple[str, ...]:
    return tuple(n for n in names if n in services)
