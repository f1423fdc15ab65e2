"""Reconcile planning: desired specs vs the containers arkbox owns -> what to do.

A pure function over plain data, so every case (a power cut mid-recreate left
two containers, a container exited, a service left the config) is unit-tested
without an engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ActualContainer:
    """A container arkbox owns, as the engine lists it."""

    service: str
    container_id: str
    name: str
    config_hash: str
    running: bool


@dataclass(frozen=True)
class Plan:
    create: tuple[str, ...] = ()  # services without a container
    recreate: tuple[str, ...] = ()  # services whose container runs an older spec
    remove: tuple[ActualContainer, ...] = ()  # services gone from the config, or duplicates
    start: tuple[str, ...] = ()  # unchanged but not running
    keep: tuple[str, ...] = ()  # unchanged and running

    @property
    def removed_services(self) -> tuple[str, ...]:
        """Services whose containers go away for good (not duplicates of a kept one)."""
        wanted = {*self.create, *self.recreate, *self.start, *self.keep}
        return tuple(sorted({c.service for c in self.remove} - wanted))

    @property
    def change_count(self) -> int:
        return len(self.create) + len(self.recreate) + len(self.removed_services) + len(self.start)

    @property
    def is_empty(self) -> bool:
        return not (self.create or self.recreate or self.remove or self.start)


def plan_containers(desired: Mapping[str, str], actual: Sequence[ActualContainer]) -> Plan:
    """desired: service -> spec hash. actual: every container arkbox owns (any service)."""
    by_service: dict[str, list[ActualContainer]] = {}
    for container in actual:
        by_service.setdefault(container.service, []).append(container)

    create: list[str] = []
    recreate: list[str] = []
    remove: list[ActualContainer] = []
    start: list[str] = []
    keep: list[str] = []
    for service in sorted(desired):
        found = by_service.pop(service, [])
        current = _best_match(found, desired[service])
        if current is None:
            remove.extend(found)
            (recreate if found else create).append(service)
            continue
        remove.extend(c for c in found if c is not current)
        (keep if current.running else start).append(service)
    for leftovers in by_service.values():
        remove.extend(leftovers)
    remove.sort(key=lambda c: (c.service, c.name))
    return Plan(tuple(create), tuple(recreate), tuple(remove), tuple(start), tuple(keep))


def _best_match(found: Sequence[ActualContainer], wanted_hash: str) -> ActualContainer | None:
    """The container to keep: one with the wanted hash, a running one first."""
    matching = [c for c in found if c.config_hash == wanted_hash]
    if not matching:
        return None
    return sorted(matching, key=lambda c: (not c.running, c.name))[0]
