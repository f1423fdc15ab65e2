"""Applying specs to the Docker Engine through the docker SDK.

The hardening every container gets lives here, in one place: all capabilities
dropped and only the recipe's added back, no-new-privileges, the recipe's
read-only root fs and tmpfs mounts, memory/pids/CPU limits, restart
unless-stopped. Nothing is published except what a spec names (only the proxy's
spec names ports).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import docker
import docker.errors
from docker.types import Healthcheck, Mount
from docker.utils import version_gte

from firstboot.containers.naming import LABEL_CONFIG_HASH, LABEL_ROLE, LABEL_SERVICE, Naming
from firstboot.containers.plan import ActualContainer, ActualNetwork, DesiredNetwork
from firstboot.containers.spec import HealthSpec, ServiceSpec
from firstboot.core.step import StepFailed

log = logging.getLogger("arkbox.firstboot.engine")

NANOSECONDS = 1_000_000_000
# Engines from API 1.44 (Docker 25) run the check this often during start_period,
# so "healthy" comes seconds after start instead of one full interval later.
START_INTERVAL_S = 1
RESTART_POLICY = {"Name": "unless-stopped"}


def owned_containers(
    client: docker.DockerClient, naming: Naming, role: str | None
) -> list[ActualContainer]:
    """This box's containers of one role (None: of every role)."""
    found = client.containers.list(all=True, filters=naming.filters(role))
    return [_actual_container(c) for c in found]


def _actual_container(container: Any) -> ActualContainer:
    attrs = container.attrs  # the list inspects each container: state and networks are here
    started = parse_engine_time((attrs.get("State") or {}).get("StartedAt", ""))
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return ActualContainer(
        service=container.labels.get(LABEL_SERVICE, ""),
        container_id=str(container.id),
        name=str(container.name),
        config_hash=container.labels.get(LABEL_CONFIG_HASH, ""),
        running=container.status == "running",
        started_at=started.timestamp() if started else None,
        networks=frozenset(networks),
    )


def owned_networks(client: docker.DockerClient, naming: Naming) -> list[ActualNetwork]:
    """Every network of this box, of any role."""
    found = []
    for network in client.networks.list(filters=naming.filters()):
        attrs = network.attrs
        labels = attrs.get("Labels") or {}
        found.append(ActualNetwork(
            name=str(network.name), role=labels.get(LABEL_ROLE, ""),
            internal=bool(attrs.get("Internal")),
            ipv6=bool(attrs.get("EnableIPv6")) or labels.get(IPV6_LABEL) == "unavailable"))
    return found


def create_container(
    client: docker.DockerClient,
    spec: ServiceSpec,
    labels: Mapping[str, str],
    secret_env: Mapping[str, str],
) -> str:
    """Create (not start) the container of `spec`, attached to all its networks; its id."""
    api = client.api
    primary = spec.attachments[0]
    host_config = api.create_host_config(
        mounts=_mounts(spec),
        tmpfs=dict(spec.tmpfs),
        cap_drop=["ALL"],
        cap_add=list(spec.cap_add) or None,
        security_opt=["no-new-privileges:true"],
        read_only=spec.read_only,
        mem_limit=spec.memory_bytes,
        # No swap beyond the memory limit: a limit that swaps is no limit.
        memswap_limit=spec.memory_bytes,
        pids_limit=spec.pids_limit,
        nano_cpus=spec.nano_cpus,
        restart_policy=RESTART_POLICY,
        # Host port 0: any free port (None tells the engine to pick one).
        port_bindings={container: host or None for host, container in spec.published_ports}
        or None,
    )
    networking = api.create_networking_config(
        # types-docker says EndpointConfig; the SDK takes network name -> EndpointConfig.
        {primary.network: api.create_endpoint_config(aliases=list(primary.aliases))}  # type: ignore[arg-type]
    )
    try:
        created = api.create_container(
            image=spec.image_id,
            name=spec.container,
            hostname=spec.service,
            command=list(spec.command) if spec.command else None,
            environment={**dict(spec.environment), **secret_env} or None,
            labels=dict(labels),
            ports=[container for _, container in spec.published_ports] or None,
            host_config=host_config,
            networking_config=networking,
            healthcheck=_healthcheck(client, spec.healthcheck),
            stop_timeout=spec.stop_grace_seconds,
        )
        container_id = str(created["Id"])
        # API < 1.44 takes one network at creation: join the others before the start.
        for attachment in spec.attachments[1:]:
            api.connect_container_to_network(container_id, attachment.network,
                                             aliases=list(attachment.aliases))
    except docker.errors.APIError as e:
        raise StepFailed(
            f"{spec.service}: the engine refused to create {spec.container}: {_explain(e)}",
            hint="check `docker info` and the image (docker image inspect "
            f"{spec.image_ref})",
        ) from e
    return container_id


def start_container(client: docker.DockerClient, container_id: str, service: str) -> None:
    try:
        client.api.start(container_id)
    except docker.errors.APIError as e:
        raise StepFailed(f"{service}: the container did not start: {_explain(e)}",
                         hint=f"docker logs {container_id[:12]}") from e


def restart_container(client: docker.DockerClient, container_id: str, grace_s: int) -> None:
    client.api.restart(container_id, timeout=grace_s)


def remove_container(client: docker.DockerClient, container_id: str, grace_s: int = 10) -> None:
    """Stop (with the app's grace time) and remove; a container already gone is fine."""
    try:
        client.api.stop(container_id, timeout=grace_s)
        client.api.remove_container(container_id)
    except docker.errors.NotFound:
        pass


def connect_container(client: docker.DockerClient, container_id: str, network: str,
                      aliases: tuple[str, ...] = ()) -> None:
    client.api.connect_container_to_network(container_id, network, aliases=list(aliases) or None)


def disconnect_container(client: docker.DockerClient, container_id: str, network: str) -> None:
    client.api.disconnect_container_from_network(container_id, network)


# The proxy's network also carries IPv6, so that with the daemon's ip6tables on
# its published 80/443 are reachable over IPv6 too (a ULA prefix: the host's own
# IPv6 address is what clients connect to; Docker NATs from it).
PROXY_IPV6_SUBNET = "fd61:726b:6278:1::/64"
MAIL_IPV6_SUBNET = "fd61:726b:6278:2::/64"  # the same, for the mail server's ports
IPV6_LABEL = "arkbox.ipv6"


def create_network(client: docker.DockerClient, naming: Naming, network: DesiredNetwork) -> None:
    """A bridge network, labelled as this box's; with IPv6 when asked and the host can."""
    labels = naming.labels(network.role, network.service)
    if network.ipv6_subnet is not None:
        ipam = docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet=network.ipv6_subnet)])
        try:
            client.networks.create(network.name, driver="bridge", internal=network.internal,
                                   check_duplicate=True, labels=labels, enable_ipv6=True,
                                   ipam=ipam)
            return
        except docker.errors.APIError as e:
            # A host whose /proc/sys is read-only (a container rig) cannot give a
            # bridge IPv6; serve IPv4 rather than nothing, and say so.
            if "ipv6" not in str(e).lower():
                raise
            log.warning("%s: no IPv6 on this host's bridges (%s): published ports are "
                        "IPv4 only", network.name, e.explanation or e)
        labels = {**labels, IPV6_LABEL: "unavailable"}  # so a re-run does not retry forever
    client.networks.create(network.name, driver="bridge", internal=network.internal,
                           check_duplicate=True, labels=labels)


def remove_network(client: docker.DockerClient, naming: Naming, name: str) -> None:
    """Remove one of this box's networks, disconnecting what is still on it (whoever owns
    those containers reattaches what they need)."""
    for network in client.networks.list(names=[name], filters=naming.filters()):
        _remove_network(network)


def _remove_network(network: Any) -> None:
    network.reload()
    for container_id in network.attrs.get("Containers") or {}:
        with contextlib.suppress(docker.errors.NotFound):
            network.disconnect(container_id, force=True)
    network.remove()


def _mounts(spec: ServiceSpec) -> list[Mount]:
    mounts = [Mount(v.container_path, v.host_path, type="bind") for v in spec.volumes]
    mounts += [Mount(s.container_path, s.host_path, type="bind", read_only=True)
               for s in spec.secret_files]
    mounts += [Mount(target, source, type="bind", read_only=True) for source, target in spec.binds]
    return mounts


def _healthcheck(client: docker.DockerClient, health: HealthSpec | None) -> Healthcheck | None:
    if health is None:
        return None
    check = Healthcheck(
        test=list(health.test),
        interval=int(health.interval_s * NANOSECONDS),
        timeout=int(health.timeout_s * NANOSECONDS),
        retries=health.retries,
        start_period=int(health.start_period_s * NANOSECONDS),
    )
    if version_gte(client.api.api_version, "1.44"):
        check["StartInterval"] = START_INTERVAL_S * NANOSECONDS
    return check


def _explain(error: docker.errors.APIError) -> str:
    return str(error.explanation or error)


def container_state(client: docker.DockerClient, name: str) -> dict[str, Any] | None:
    """`docker inspect` of a container by name, or None when there is none."""
    try:
        return dict(client.api.inspect_container(name))
    except docker.errors.NotFound:
        return None


def parse_engine_time(text: str) -> datetime | None:
    """The engine's RFC 3339 times carry nanoseconds, which datetime does not take."""
    if not text or text.startswith("0001-"):
        return None
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed)
