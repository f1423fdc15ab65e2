"""Removing rigs: everything a rig creates carries the label `arkbox.rig=<rig name>`, so
a rig (or one left by a killed run) is removed by that label alone."""

from __future__ import annotations

import docker
from docker.errors import NotFound
from docker.models.containers import Container
from docker.models.volumes import Volume

from builder.rig.engine_preload import remove_bound_directory

RIG_LABEL = "arkbox.rig"


def remove_abandoned_rigs(client: docker.DockerClient, subnets: set[str]) -> list[str]:
    """Remove rigs on these subnets that nothing runs in any more (left by a run that was
    killed before its clean-up): their network would refuse ours ("Pool overlaps").
    A rig with a running container is someone's live rig and is left alone."""
    removed = []
    for network in client.networks.list(filters={"label": RIG_LABEL}):
        network.reload()
        pools = {c.get("Subnet") for c in (network.attrs.get("IPAM") or {}).get("Config") or []}
        rig = (network.attrs.get("Labels") or {}).get(RIG_LABEL)
        if not rig or not pools & subnets:
            continue
        label: dict[str, str | list[str] | bool] = {"label": f"{RIG_LABEL}={rig}"}
        if any(c.status == "running" for c in client.containers.list(all=True, filters=label)):
            continue
        remove_rig(client, rig)
        removed.append(rig)
    return removed


def remove_rig(client: docker.DockerClient, name: str) -> dict[str, int]:
    """Remove the rig's containers with their volumes, labelled volumes left by a part that
    never started, and its networks; the counts of each."""
    label: dict[str, str | list[str] | bool] = {"label": f"{RIG_LABEL}={name}"}
    removed = {"containers": 0, "volumes": 0, "networks": 0}
    for container in client.containers.list(all=True, filters=label):
        for kind, n in remove_container(client, container).items():
            removed[kind] += n
    for volume in client.volumes.list(filters=label):
        remove_volume(volume)
        removed["volumes"] += 1
    for network in client.networks.list(filters=label):
        network.remove()
        removed["networks"] += 1
    return removed


def remove_container(client: docker.DockerClient, container: Container) -> dict[str, int]:
    """Remove one container and the named volumes it mounts (a part's whole state)."""
    mounts = container.attrs.get("Mounts", [])
    volumes = [m["Name"] for m in mounts if m.get("Type") == "volume"]
    container.remove(force=True, v=True)
    removed = {"containers": 1, "volumes": 0}
    for volume in volumes:
        try:
            remove_volume(client.volumes.get(volume))
            removed["volumes"] += 1
        except NotFound:
            pass
    return removed


def remove_volume(volume: Volume) -> None:
    """Remove a volume, and the directory it is bound to when that is a rig box's engine
    directory (builder/rig/engine_preload.py): the engine removes only its own volumes'
    data."""
    attrs = dict(volume.attrs)
    volume.remove(force=True)
    remove_bound_directory(attrs)
