"""A service's resolved container spec: everything that decides how its container runs.

`service_specs` turns the config into one `ServiceSpec` per service (pure: no
engine, no file access); `spec_hash` fingerprints a spec. The hash is stored as
the container's `arkbox.config-hash` label, so a re-run recreates exactly the
containers whose spec changed. Secret *values* never enter a spec: env secrets
are fingerprinted separately (`spec_hash(spec, secret_digests)`), secret files
are mounted, and their content changes restart the container instead.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from firstboot.containers.images import BakedImage
from firstboot.containers.naming import Naming
from firstboot.containers.recipe import TMP, RecipeRuntime
from firstboot.core.config import Appliance, SecretRef
from firstboot.core.config.scalars import duration_seconds, size_bytes
from firstboot.core.config.services import Healthcheck, Service

HASH_CHARS = 24
TMPFS_SIZE = {TMP: "128m"}
DEFAULT_TMPFS_SIZE = "16m"
ENV_SECRET_DIR = "/run/arkbox-secrets"  # noqa: S105 -- a directory, not a password


@dataclass(frozen=True)
class VolumeSpec:
    name: str
    host_path: str
    container_path: str
    uid: int
    gid: int


@dataclass(frozen=True)
class SecretFileSpec:
    """A secret mounted read-only as a file, owned by the container's user, mode 0400."""

    container_path: str
    host_path: str
    ref: SecretRef
    uid: int
    gid: int


@dataclass(frozen=True)
class Attachment:
    network: str
    internal: bool
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class HealthSpec:
    test: tuple[str, ...]  # as the engine takes it: ("CMD", argv...)
    interval_s: float
    timeout_s: float
    retries: int
    start_period_s: float


@dataclass(frozen=True)
class RouteSpec:
    hostname: str
    path: str
    port: int
    max_body_size: str


@dataclass(frozen=True)
class ServiceSpec:
    service: str
    container: str
    recipe: str | None
    image_ref: str
    image_id: str
    command: tuple[str, ...] | None
    environment: tuple[tuple[str, str], ...]  # plain values, including NAME_FILE pointers
    secret_environment: tuple[tuple[str, SecretRef], ...]  # passed as env: the app needs it
    volumes: tuple[VolumeSpec, ...]
    secret_files: tuple[SecretFileSpec, ...]
    tmpfs: tuple[tuple[str, str], ...]  # container path -> mount options
    read_only: bool
    cap_add: tuple[str, ...]
    memory_bytes: int | None
    pids_limit: int
    nano_cpus: int | None
    healthcheck: HealthSpec | None  # None: the image's own HEALTHCHECK
    attachments: tuple[Attachment, ...]  # the first is the service's own network
    stop_grace_seconds: int
    depends_on: tuple[str, ...]
    # Not part of the container (the proxy uses it): excluded from the hash.
    route: RouteSpec | None
    # Only the proxy has these: host port -> container port, and read-only bind mounts
    # (host path, container path) of files arkbox renders.
    published_ports: tuple[tuple[int, int], ...] = ()
    binds: tuple[tuple[str, str], ...] = ()

    @property
    def network(self) -> str:
        return self.attachments[0].network


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    service: str
    internal: bool


def spec_hash(spec: ServiceSpec, secret_digests: Mapping[str, str] | None = None) -> str:
    """Fingerprint of what the container is made from (route excluded: it is the proxy's)."""
    data = asdict(spec)
    data.pop("route")
    data["secret_environment"] = [
        [name, (secret_digests or {}).get(name, "")] for name, _ in spec.secret_environment
    ]
    for secret_file in data["secret_files"]:
        secret_file.pop("ref")  # where it came from does not change the container
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def secret_digest(value: str) -> str:
    """What of an env secret enters the hash: the engine shows env values to root anyway."""
    return hashlib.sha256(value.encode()).hexdigest()


def service_specs(
    config: Appliance,
    naming: Naming,
    data_dir: Path,
    runtimes: Mapping[str, RecipeRuntime],
    images: Mapping[str, BakedImage],
) -> dict[str, ServiceSpec]:
    """service name -> spec. `runtimes` and `images` are keyed by service name."""
    # The config refuses the names of arkbox's own containers (proxy, mail) as services.
    internal = {name: not runtimes[name].egress for name in config.services}
    return {
        name: _service_spec(name, service, naming, data_dir, runtimes[name], images[name], internal)
        for name, service in config.services.items()
    }


def network_specs(specs: Mapping[str, ServiceSpec]) -> dict[str, NetworkSpec]:
    """network name -> spec: each service's own network."""
    return {
        spec.network: NetworkSpec(spec.network, spec.service, spec.attachments[0].internal)
        for spec in specs.values()
    }


def start_order(specs: Mapping[str, ServiceSpec]) -> list[str]:
    """Services sorted so that each starts after the services it connects to."""
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered or name in visiting:
            return  # a cycle: start in config order, the apps wait for each other
        visiting.add(name)
        for dependency in specs[name].depends_on:
            if dependency in specs:
                visit(dependency)
        ordered.append(name)

    for name in sorted(specs):
        visit(name)
    return ordered


def _service_spec(
    name: str,
    service: Service,
    naming: Naming,
    data_dir: Path,
    runtime: RecipeRuntime,
    image: BakedImage,
    internal: Mapping[str, bool],
) -> ServiceSpec:
    environment, secret_env, secret_files = _environment(
        service, runtime, data_dir / "secrets" / "mounts" / name)
    own = Attachment(naming.network(name), internal[name], (name,))
    joined = [
        Attachment(naming.network(other), internal[other], (name,))
        for other in service.connects_to
    ]
    return ServiceSpec(
        service=name,
        container=naming.container(name),
        recipe=service.recipe,
        image_ref=image.tag,
        image_id=image.image_id,
        command=tuple(service.command) if service.command else None,
        environment=tuple(sorted(environment.items())),
        secret_environment=tuple(sorted(secret_env.items(), key=lambda item: item[0])),
        volumes=tuple(
            VolumeSpec(volume, str(data_dir / "volumes" / name / volume), path,
                       runtime.uid, runtime.gid)
            for volume, path in sorted(service.volumes.items())
        ),
        secret_files=tuple(sorted(secret_files, key=lambda s: s.container_path)),
        tmpfs=tuple((path, _tmpfs_options(path, runtime)) for path in runtime.tmpfs),
        read_only=runtime.read_only,
        cap_add=runtime.capabilities,
        memory_bytes=size_bytes(service.resources.memory) if service.resources.memory else None,
        pids_limit=service.resources.pids,
        nano_cpus=int(service.resources.cpus * 1e9) if service.resources.cpus else None,
        healthcheck=_health_spec(service),
        attachments=(own, *joined),
        stop_grace_seconds=runtime.stop_grace_seconds,
        depends_on=tuple(service.connects_to),
        route=RouteSpec(service.route.hostname, service.route.path, service.route.port,
                        service.route.max_body_size) if service.route else None,
    )


def _environment(service: Service, runtime: RecipeRuntime, secrets_dir: Path
                 ) -> tuple[dict[str, str], dict[str, SecretRef], list[SecretFileSpec]]:
    """Plain variables, secrets passed as variables, and secrets mounted as files."""
    environment: dict[str, str] = {}
    secret_env: dict[str, SecretRef] = {}
    secret_files = [
        SecretFileSpec(path, str(secrets_dir / _file_slug(path)), ref, runtime.uid, runtime.gid)
        for path, ref in sorted(service.secret_files.items())
    ]
    for var, value in sorted(service.environment.items()):
        if isinstance(value, str):
            environment[var] = value
        elif var in runtime.file_env:
            # The app reads NAME_FILE: keep the secret out of the environment.
            target = f"{ENV_SECRET_DIR}/{var}"
            secret_files.append(SecretFileSpec(target, str(secrets_dir / f"env-{var}"), value,
                                               runtime.uid, runtime.gid))
            environment[f"{var}_FILE"] = target
        else:
            secret_env[var] = value
    return environment, secret_env, secret_files


def _file_slug(container_path: str) -> str:
    return container_path.strip("/").replace("/", "_") or "root"


def _tmpfs_options(path: str, runtime: RecipeRuntime) -> str:
    size = TMPFS_SIZE.get(path, DEFAULT_TMPFS_SIZE)
    if path == TMP:
        return f"rw,nosuid,nodev,noexec,size={size},mode=1777"
    # Other scratch dirs (/run) belong to the app's user, like they would on a host.
    return f"rw,nosuid,nodev,noexec,size={size},mode=0755,uid={runtime.uid},gid={runtime.gid}"


def _health_spec(service: Service) -> HealthSpec | None:
    check = service.healthcheck
    if check is None:
        return None
    if check.command is not None:
        test: tuple[str, ...] = ("CMD", *check.command)
    else:
        assert check.http is not None  # the config allows exactly one of http, command
        port = check.port or (service.route.port if service.route else 80)
        test = ("CMD", "/bin/bash", "-c", http_check_script(check.http, port, check))
    return HealthSpec(
        test=test,
        interval_s=duration_seconds(check.interval),
        timeout_s=duration_seconds(check.timeout),
        retries=check.retries,
        start_period_s=duration_seconds(check.start_period),
    )


def http_check_script(path: str, port: int, check: Healthcheck) -> str:
    """A bash-only HTTP GET (service images have no curl): healthy on a 2xx or 3xx."""
    read_timeout = max(1, int(duration_seconds(check.timeout)))
    return (
        f"exec 3<>/dev/tcp/127.0.0.1/{port} || exit 1; "
        r"printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "
        f"{shlex.quote(path)} >&3; "
        f"IFS= read -r -t {read_timeout} status <&3 || exit 1; "
        r'[[ $status == HTTP/1.[01]\ [23][0-9][0-9]* ]]'
    )
