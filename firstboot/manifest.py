"""The resolved environment manifest, /srv/arkbox/manifest.json.

What the box runs, resolved: each service's image (by ID), networks, volumes,
routes, environment variable names and secret mounts — never a secret value.
Backups archive it next to the config; a restore rebuilds the same containers
from it. Written atomically and only when it changed, so a converged box keeps
a byte-identical file (no timestamps in it, on purpose).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from firstboot.containers.spec import ServiceSpec
from firstboot.core.files import write_if_changed

SCHEMA_VERSION = 1
MANIFEST_MODE = 0o640


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestImage(_Frozen):
    ref: str = Field(description="tag or reference, for people: arkbox/NAME:KEY")
    id: str = Field(description="the image ID the container was created from")


class ManifestNetwork(_Frozen):
    name: str
    service: str
    internal: bool


class ManifestAttachment(_Frozen):
    network: str
    aliases: list[str]


class ManifestVolume(_Frozen):
    name: str
    host_path: str
    container_path: str
    uid: int
    gid: int


class ManifestSecretFile(_Frozen):
    container_path: str
    host_path: str


class ManifestRoute(_Frozen):
    hostname: str
    path: str
    port: int
    max_body_size: str


class ManifestRuntime(_Frozen):
    """How the container is confined and checked (for people, and for change reasons)."""

    command: list[str] | None
    cap_add: list[str]
    read_only: bool
    tmpfs: dict[str, str]
    memory_bytes: int | None
    pids_limit: int
    nano_cpus: int | None
    healthcheck: list[str] | None = Field(description="None: the image's own check")
    stop_grace_seconds: int


class ManifestService(_Frozen):
    name: str
    container: str
    recipe: str | None
    image: ManifestImage
    config_hash: str
    networks: list[ManifestAttachment]
    volumes: list[ManifestVolume]
    secret_files: list[ManifestSecretFile]
    environment: dict[str, str] = Field(description="plain values (not secrets)")
    secret_environment: list[str] = Field(description="names only: values are never stored")
    runtime: ManifestRuntime
    route: ManifestRoute | None


class ManifestProxy(_Frozen):
    container: str
    image: ManifestImage
    config_hash: str
    networks: list[str]
    published_ports: list[int]


class EnvironmentManifest(_Frozen):
    schema_version: int = SCHEMA_VERSION
    appliance: str
    config_sha256: str | None
    services: list[ManifestService]
    networks: list[ManifestNetwork]
    proxy: ManifestProxy | None = None


def manifest_service(spec: ServiceSpec, config_hash: str) -> ManifestService:
    return ManifestService(
        name=spec.service,
        container=spec.container,
        recipe=spec.recipe,
        image=ManifestImage(ref=spec.image_ref, id=spec.image_id),
        config_hash=config_hash,
        networks=[ManifestAttachment(network=a.network, aliases=list(a.aliases))
                  for a in spec.attachments],
        volumes=[ManifestVolume(name=v.name, host_path=v.host_path,
                                container_path=v.container_path, uid=v.uid, gid=v.gid)
                 for v in spec.volumes],
        secret_files=[ManifestSecretFile(container_path=s.container_path, host_path=s.host_path)
                      for s in spec.secret_files],
        environment=dict(spec.environment),
        secret_environment=[name for name, _ in spec.secret_environment],
        runtime=ManifestRuntime(
            command=list(spec.command) if spec.command else None,
            cap_add=list(spec.cap_add),
            read_only=spec.read_only,
            tmpfs=dict(spec.tmpfs),
            memory_bytes=spec.memory_bytes,
            pids_limit=spec.pids_limit,
            nano_cpus=spec.nano_cpus,
            healthcheck=list(spec.healthcheck.test) if spec.healthcheck else None,
            stop_grace_seconds=spec.stop_grace_seconds,
        ),
        route=ManifestRoute(hostname=spec.route.hostname, path=spec.route.path,
                            port=spec.route.port, max_body_size=spec.route.max_body_size)
        if spec.route else None,
    )


def changed_fields(old: ManifestService, new: ManifestService) -> list[str]:
    """Which parts of a service differ ("image", "environment", ...), for change reasons."""
    before = old.model_dump(exclude={"config_hash", "route"})
    after = new.model_dump(exclude={"config_hash", "route"})
    fields = [k for k in after if before.get(k) != after[k]]
    fields += [f"runtime.{k}" for k in after["runtime"]
               if before["runtime"].get(k) != after["runtime"][k]]
    return [f for f in fields if f != "runtime"]


def render_manifest(manifest: EnvironmentManifest) -> bytes:
    return (json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()


def write_manifest(path: Path, manifest: EnvironmentManifest) -> bool:
    """Write atomically; True when the content changed."""
    return write_if_changed(path, render_manifest(manifest), MANIFEST_MODE)


def read_manifest(path: Path) -> EnvironmentManifest | None:
    """The manifest, or None when there is none yet (a fresh box)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return EnvironmentManifest.model_validate_json(text)
