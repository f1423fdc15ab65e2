"""The rig as a whole: its network (testcontainers' `Network` with the rig's subnets and
label) and `Rig`, which starts containers on it and removes everything it made."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self, TypeVar

import docker
from docker.errors import NotFound
from testcontainers.core.docker_client import DockerClient as EngineClient
from testcontainers.core.network import Network

from builder.rig.removal import RIG_LABEL, remove_abandoned_rigs, remove_rig

if TYPE_CHECKING:
    from builder.rig.parts import RigContainer

log = logging.getLogger("arkbox.rig")
ContainerT = TypeVar("ContainerT", bound="RigContainer")


class RigEngine(EngineClient):
    """testcontainers' engine wrapper around the rig's own client: one connection (and one
    timeout) for the rig and all its containers, instead of one per container."""

    def __init__(self, client: docker.DockerClient) -> None:  # no super(): no second client
        self.client = client


def quiet_client_kw(client: docker.DockerClient) -> dict[str, Any]:
    """For testcontainers' constructors, which make a client of their own before ours
    replaces it: with the API version given, that one never asks the engine."""
    return {"version": str(client.api.api_version)}


class RigNetwork(Network):
    """The rig's bridge: its name, IPv4 and IPv6 subnets, and the rig's label (so that
    `remove_rig` finds it). `create()` reuses the network when it is there already."""

    def __init__(self, rig: Rig) -> None:
        ipam = docker.types.IPAMConfig(pool_configs=[
            docker.types.IPAMPool(subnet=rig.ipv4_subnet),
            docker.types.IPAMPool(subnet=rig.ipv6_subnet),
        ])
        super().__init__(docker_client_kw=quiet_client_kw(rig.client), docker_network_kw={
            "driver": "bridge", "enable_ipv6": True, "ipam": ipam,
            "labels": {RIG_LABEL: rig.name}})
        self.name = f"{rig.name}-net"
        self._docker = RigEngine(rig.client)

    def exists(self) -> bool:
        try:
            self._network = self._docker.client.networks.get(self.name)
        except NotFound:
            return False
        return True

    def create(self) -> Self:
        if self.exists():
            return self
        return super().create()


@dataclass
class Rig:
    """A private network and the containers on it; `down()` removes all of it."""

    name: str = "arkbox-rig"
    client: docker.DockerClient = field(default_factory=lambda: docker.from_env(timeout=300))
    containers: list[RigContainer] = field(default_factory=list)
    ipv6_subnet: str = "fd42:a7b0:c5::/64"
    ipv4_subnet: str = "172.30.99.0/24"

    @functools.cached_property
    def network(self) -> RigNetwork:
        return RigNetwork(self)

    @property
    def network_name(self) -> str:
        return self.network.name

    def up(self) -> Rig:
        if not self.network.exists():
            remove_abandoned_rigs(self.client, {self.ipv4_subnet, self.ipv6_subnet})
            self.network.create()
        return self

    def add(self, container: ContainerT) -> ContainerT:
        """Start `container` on the rig (ready when this returns)."""
        self.containers.append(container)
        return container.start()

    def down(self) -> dict[str, int]:
        """Remove every container, volume and network labelled as this rig's (once more on
        a fresh connection when an interrupt cut the rig's client mid-request)."""
        try:
            return remove_rig(self.client, self.name)
        except Exception as e:  # any failure of the old connection
            log.debug("removing rig %s again on a fresh connection: %s", self.name, e)
            return remove_rig(docker.from_env(timeout=300), self.name)

    @contextmanager
    def running(self) -> Iterator[Rig]:
        self.up()
        try:
            yield self
        finally:
            self.down()
