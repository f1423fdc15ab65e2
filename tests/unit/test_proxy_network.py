"""The proxy's network: IPv6 where the host allows it, an IPv4-only fallback that says so.

The rig boots with IPv6 on its bridges (tests/e2e/test_firstboot_fresh.py proves the
IPv6 path end to end), so the fallback for hosts that cannot enable IPv6 on a bridge is
checked here, through the reconciler, against a stand-in for the engine's network API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import docker.errors
import pytest

from firstboot.containers import engine
from firstboot.containers.naming import ROLE_PROXY, Naming
from firstboot.containers.plan import Desired, DesiredNetwork
from firstboot.containers.reconcile import reconcile

NAMING = Naming()


@dataclass
class FakeNetwork:
    name: str
    attrs: dict[str, Any]
    removed: bool = False

    def reload(self) -> None:
        pass

    def disconnect(self, container_id: str, force: bool = False) -> None:
        pass

    def remove(self) -> None:
        self.removed = True


@dataclass
class FakeNetworks:
    ipv6_works: bool
    existing: list[FakeNetwork] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)

    def list(self, names: list[str] | None = None,
             filters: dict[str, Any] | None = None) -> list[FakeNetwork]:
        return [n for n in self.existing
                if (names is None or n.name in names) and not n.removed]

    def create(self, name: str, **kwargs: Any) -> FakeNetwork:
        if kwargs.get("enable_ipv6") and not self.ipv6_works:
            raise docker.errors.APIError(
                "failed to create network: could not enable IPv6 on bridge: "
                "open /proc/sys/net/ipv6/conf/br-1/disable_ipv6: read-only file system")
        self.created.append({"name": name, **kwargs})
        network = FakeNetwork(name, {"EnableIPv6": bool(kwargs.get("enable_ipv6")),
                                     "Labels": kwargs.get("labels") or {}})
        self.existing.append(network)
        return network


class NoContainers:
    def list(self, all: bool, filters: dict[str, Any]) -> list[Any]:
        return []


@dataclass
class FakeClient:
    networks: FakeNetworks
    containers: NoContainers = field(default_factory=NoContainers)


PROXY_NETWORK = DesiredNetwork(NAMING.proxy_network, ROLE_PROXY, internal=False,
                               ipv6_subnet=engine.PROXY_IPV6_SUBNET)


def ensure(client: FakeClient) -> bool:
    """Reconcile a desired state of just the proxy's network; True when it was made."""
    report = reconcile(client, NAMING, Desired(ROLE_PROXY, {}, (PROXY_NETWORK,)))  # type: ignore[arg-type]
    return bool(report.plan.create_networks or report.plan.replace_networks)


def test_ipv6_network_when_the_host_allows_it() -> None:
    client = FakeClient(FakeNetworks(ipv6_works=True))
    assert ensure(client) is True
    [made] = client.networks.created
    assert made["enable_ipv6"] is True
    assert engine.IPV6_LABEL not in made["labels"]
    assert ensure(client) is False  # a re-run leaves it alone


def test_ipv4_fallback_is_labelled_logged_and_not_retried(
        caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient(FakeNetworks(ipv6_works=False))
    assert ensure(client) is True
    [made] = client.networks.created
    assert "enable_ipv6" not in made
    assert made["labels"][engine.IPV6_LABEL] == "unavailable"
    assert "IPv4 only" in caplog.text
    assert ensure(client) is False
    assert len(client.networks.created) == 1


def test_a_network_made_before_ipv6_is_replaced() -> None:
    old = FakeNetwork(NAMING.proxy_network, {"EnableIPv6": False,
                                             "Labels": NAMING.labels(ROLE_PROXY)})
    client = FakeClient(FakeNetworks(ipv6_works=True, existing=[old]))
    assert ensure(client) is True
    assert old.removed
    assert client.networks.created[0]["enable_ipv6"] is True


def test_other_engine_errors_are_not_mistaken_for_missing_ipv6() -> None:
    class Broken(FakeNetworks):
        def create(self, name: str, **kwargs: Any) -> FakeNetwork:
            raise docker.errors.APIError("pool overlaps with other one on this address space")

    with pytest.raises(docker.errors.APIError, match="overlaps"):
        ensure(FakeClient(Broken(ipv6_works=True)))


def test_a_dry_run_plans_the_network_and_makes_nothing() -> None:
    client = FakeClient(FakeNetworks(ipv6_works=True))
    report = reconcile(client, NAMING, Desired(ROLE_PROXY, {}, (PROXY_NETWORK,)),  # type: ignore[arg-type]
                       dry_run=True)
    assert not report.applied and report.plan.describe() == [
        f"create network {NAMING.proxy_network}"]
    assert client.networks.created == []
