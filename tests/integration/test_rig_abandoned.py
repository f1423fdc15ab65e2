"""A rig left behind by a killed run (its network still holding the subnet) does not stop
the next run: `Rig.up()` removes it when nothing runs in it, and never a live one."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from builder.rig.parts import Rig
from builder.rig.removal import RIG_LABEL

V4, V6 = "172.30.251.0/24", "fd42:a7b0:fb::/64"


def _network(client: docker.DockerClient, name: str) -> None:
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=V4),
                                                 docker.types.IPAMPool(subnet=V6)])
    client.networks.create(f"{name}-net", driver="bridge", enable_ipv6=True, ipam=ipam,
                           labels={RIG_LABEL: name})


@pytest.fixture
def client() -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=60)
    yield client
    for network in client.networks.list(filters={"label": RIG_LABEL}):
        if network.name.startswith("arkbox-int-abandoned"):
            network.remove()


def test_an_abandoned_rig_on_the_subnet_is_removed(client: docker.DockerClient) -> None:
    _network(client, "arkbox-int-abandoned-old")
    rig = Rig(name="arkbox-int-abandoned-new", client=client, ipv4_subnet=V4, ipv6_subnet=V6)
    rig.up()
    try:
        names = {n.name for n in client.networks.list(filters={"label": RIG_LABEL})}
        assert "arkbox-int-abandoned-new-net" in names
        assert "arkbox-int-abandoned-old-net" not in names
    finally:
        assert rig.down()["networks"] == 1
