"""The rig: the built appliance and its neighbours as containers on a private network.

Used by `arkbox try` and by the integration tests alike (one implementation).
Each part is a small class in the style of testcontainers' DockerContainer:
configure, `start()`, wait for a real readiness signal (never a bare sleep),
`exec()`, `remove()`. Everything the rig creates carries the label
`arkbox.rig=<rig name>`, so `Rig.down()` (and Ctrl-C) removes exactly that.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import ImageNotFound, NotFound
from docker.models.containers import Container

from firstboot.errors import ArkboxError
from firstboot.execute import run

log = logging.getLogger("arkbox.rig")

RIG_LABEL = "arkbox.rig"
# systemd as PID 1 without --privileged (refused on these hosts): every
# capability but one, no seccomp/apparmor filter, the host's cgroup tree,
# tmpfs where systemd expects it.
SYSTEMD_CAPS_DROP = ["SYS_RESOURCE"]
SYSTEMD_SECURITY_OPT = ["seccomp=unconfined", "apparmor=unconfined"]
SYSTEMD_TMPFS = {"/run": "rw,mode=755", "/run/lock": "rw,mode=1777"}
SYSTEMD_ENV = {"container": "docker", "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE": "1"}


class RigError(ArkboxError):
    pass


def wait_until(what: str, check: Callable[[], str | None], timeout: float,
               interval: float = 1.0) -> None:
    """Poll `check` (None = ready, else the reason it is not) until ready or timeout."""
    deadline = time.monotonic() + timeout
    reason = "not checked yet"
    while time.monotonic() < deadline:
        result = check()
        if result is None:
            return
        reason = result
        time.sleep(interval)
    raise RigError(f"{what} not ready after {timeout:.0f} s: {reason}")


def docker_import_argv(tar: Path, tag: str) -> tuple[str, ...]:
    return ("docker", "import", "--change", 'CMD ["/sbin/init"]', str(tar), tag)


def image_from_rootfs_tar(client: docker.DockerClient, tar: Path, repository: str) -> str:
    """`docker import` a root fs tar once; the tag is its content digest, so reuse is exact."""
    digest = hashlib.sha256()
    with tar.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    tag = f"{repository}:{digest.hexdigest()[:16]}"
    try:
        client.images.get(tag)
        return tag
    except ImageNotFound:
        pass
    log.info("importing %s as %s", tar, tag)
    # The CLI streams a GiB-sized tar reliably; the SDK's chunked upload does not.
    run(docker_import_argv(tar, tag), timeout=900)
    client.images.get(tag)
    return tag


def files_tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    """An in-memory tar of `files` (absolute path -> content, mode), owned by root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(content), mode, int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@dataclass
class Part:
    """One container of the rig."""

    rig: Rig
    role: str
    image: str
    aliases: Sequence[str] = ()
    environment: dict[str, str] = field(default_factory=dict)
    command: Sequence[str] | None = None
    ports: dict[str, int | None] = field(default_factory=dict)  # "443/tcp" -> host port
    # Files laid into the container before it starts: path -> (content, mode).
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    container: Container | None = None

    @property
    def name(self) -> str:
        return f"{self.rig.name}-{self.role}"

    def run_kwargs(self) -> dict[str, Any]:
        return {}

    def start(self) -> Part:
        kwargs: dict[str, Any] = {
            "name": self.name, "hostname": self.aliases[0] if self.aliases else self.role,
            "detach": True, "labels": {RIG_LABEL: self.rig.name, "arkbox.rig.role": self.role},
            "environment": self.environment, "network": self.rig.network_name,
            "ports": self.ports or None,
        }
        kwargs.update(self.run_kwargs())
        command = kwargs.pop("command", list(self.command) if self.command else None)
        container = self.rig.client.containers.create(self.image, command, **kwargs)
        if self.files:
            container.put_archive("/", files_tar(self.files))
        network = self.rig.client.networks.get(self.rig.network_name)
        if self.aliases:
            network.disconnect(container)
            network.connect(container, aliases=list(self.aliases))
        container.start()
        self.container = container
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        wait_until(f"{self.role} container", self._running, 60)

    def _running(self) -> str | None:
        assert self.container is not None
        self.container.reload()
        status = str(self.container.status)
        return None if status == "running" else f"container is {status}"

    def exec(self, *argv: str, user: str = "root") -> tuple[int, str]:
        assert self.container is not None, f"{self.role} was not started"
        result = self.container.exec_run(list(argv), user=user, demux=False)
        output = result.output if isinstance(result.output, bytes) else b""
        return int(result.exit_code or 0), output.decode(errors="replace")

    def ip(self, family: int = 4) -> str:
        assert self.container is not None
        self.container.reload()
        net = self.container.attrs["NetworkSettings"]["Networks"][self.rig.network_name]
        return str(net["IPAddress"] if family == 4 else net["GlobalIPv6Address"])

    def host_port(self, port: str) -> int:
        assert self.container is not None
        self.container.reload()
        bindings = self.container.attrs["NetworkSettings"]["Ports"].get(port) or []
        return int(bindings[0]["HostPort"])


# The rig's outer container keeps /proc/sys read-only, so the inner dockerd
# (26+) cannot switch IPv6 off on IPv4-only container interfaces; tell it not
# to insist. Laid only into rig containers, never into the image.
RIG_DOCKERD_DROPIN = (
    "/etc/systemd/system/docker.service.d/arkbox-rig.conf",
    b"[Service]\nEnvironment=DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1\n",
)


@dataclass
class SystemdPart(Part):
    """A container that boots systemd as PID 1 (the appliance, the backup server)."""

    volumes: dict[str, dict[str, str]] = field(default_factory=dict)
    # How long systemd may take to reach running/degraded (first boot runs after it).
    boot_timeout: float = 180

    def __post_init__(self) -> None:
        path, content = RIG_DOCKERD_DROPIN
        self.files.setdefault(path, (content, 0o644))

    def run_kwargs(self) -> dict[str, Any]:
        docker_volume = f"{self.name}-docker"
        return {
            "cap_add": ["ALL"], "cap_drop": SYSTEMD_CAPS_DROP,
            "security_opt": SYSTEMD_SECURITY_OPT, "tmpfs": SYSTEMD_TMPFS,
            "volumes": {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                        docker_volume: {"bind": "/var/lib/docker", "mode": "rw"},
                        **self.volumes},
            "environment": {**SYSTEMD_ENV, **self.environment},
            "stop_signal": "SIGRTMIN+3",
            # The inner dockerd runs with userland-proxy off, which needs local routing.
            "sysctls": {"net.ipv4.conf.default.route_localnet": "1"},
            "command": list(self.command) if self.command else ["/sbin/init"],
        }

    def wait_ready(self) -> None:
        wait_until(f"{self.role} systemd", self._system_up, self.boot_timeout, interval=2)

    def _system_up(self) -> str | None:
        if (reason := self._running()) is not None:
            return reason
        _, state = self.exec("systemctl", "is-system-running")
        state = state.strip()
        return None if state in {"running", "degraded"} else f"systemd is {state or 'starting'}"

    def failed_units(self) -> list[str]:
        _, out = self.exec("systemctl", "list-units", "--failed", "--plain", "--no-legend")
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def read_json(self, path: str) -> Any:
        code, out = self.exec("cat", path)
        if code != 0:
            return None
        return json.loads(out)


@dataclass
class Rig:
    """A private network and the parts on it; `down()` removes all of it."""

    name: str = "arkbox-rig"
    client: docker.DockerClient = field(default_factory=lambda: docker.from_env(timeout=300))
    parts: list[Part] = field(default_factory=list)
    ipv6_subnet: str = "fd42:a7b0:c5::/64"
    ipv4_subnet: str = "172.30.99.0/24"

    @property
    def network_name(self) -> str:
        return f"{self.name}-net"

    def up(self) -> Rig:
        try:
            self.client.networks.get(self.network_name)
        except NotFound:
            ipam = docker.types.IPAMConfig(pool_configs=[
                docker.types.IPAMPool(subnet=self.ipv4_subnet),
                docker.types.IPAMPool(subnet=self.ipv6_subnet),
            ])
            self.client.networks.create(self.network_name, driver="bridge", enable_ipv6=True,
                                        ipam=ipam, labels={RIG_LABEL: self.name})
        return self

    def add(self, part: Part) -> Part:
        self.parts.append(part)
        return part.start()

    def down(self) -> dict[str, int]:
        """Remove every container, volume and network labelled as this rig's."""
        return remove_rig(self.client, self.name)

    @contextmanager
    def running(self) -> Iterator[Rig]:
        self.up()
        try:
            yield self
        finally:
            self.down()


def remove_rig(client: docker.DockerClient, name: str) -> dict[str, int]:
    label = f"{RIG_LABEL}={name}"
    removed = {"containers": 0, "volumes": 0, "networks": 0}
    for container in client.containers.list(all=True, filters={"label": label}):
        mounts = container.attrs.get("Mounts", [])
        volumes = [m["Name"] for m in mounts if m.get("Type") == "volume"]
        container.remove(force=True, v=True)
        removed["containers"] += 1
        for volume in volumes:
            try:
                client.volumes.get(volume).remove(force=True)
                removed["volumes"] += 1
            except NotFound:
                pass
    for network in client.networks.list(filters={"label": label}):
        network.remove()
        removed["networks"] += 1
    return removed


def client_image(source_dir: Path, cache_dir: Path) -> str:
    """The rig's outside client, built offline like every service image (cached)."""
    return rig_image(source_dir, cache_dir, "client")


def rig_image(source_dir: Path, cache_dir: Path, recipe: str) -> str:
    """A rig-only image (client, rig-internet), built offline like every service image."""
    from builder.service_images import build_service_images

    (image,) = build_service_images(source_dir / "image" / "recipes", [recipe], cache_dir,
                                    log=log.debug)
    return image.tag


@dataclass
class ClientPart(Part):
    """A client on the rig's network: curl, nmap, openssl, swaks, ssh, borg."""

    def run_kwargs(self) -> dict[str, Any]:
        return {"cap_add": ["NET_RAW"]}


@dataclass
class BackupServerPart(SystemdPart):
    """The backup-server role: ready when its sshd (the forced `borg serve`) is active."""

    def wait_ready(self) -> None:
        super().wait_ready()
        wait_until("sshd on the backup server", self._sshd_active, 60)

    def _sshd_active(self) -> str | None:
        state = self.exec("systemctl", "is-active", "ssh")[1].strip()
        return None if state == "active" else f"ssh.service is {state}"


@dataclass
class AppliancePart(SystemdPart):
    """The built appliance (its root fs tar) booting with systemd; first boot runs by itself.

    `config` (YAML text) replaces the baked /etc/arkbox/appliance.yaml before boot,
    so one image serves many test configs.
    """

    config: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.config is not None:
            self.files["/etc/arkbox/appliance.yaml"] = (self.config.encode(), 0o600)

    def wait_first_boot(self, timeout: float = 600) -> dict[str, Any]:
        """Wait until first boot finished (done marker) or failed for good; returns status.json."""

        def finished() -> str | None:
            code, _ = self.exec("test", "-e", "/var/lib/arkbox/firstboot.done")
            if code == 0:
                return None
            status = self.read_json("/var/lib/arkbox/status.json") or {}
            return f"first boot result: {status.get('result', 'not started')}"

        wait_until("first boot", finished, timeout, interval=3)
        status: dict[str, Any] = self.read_json("/var/lib/arkbox/status.json")
        return status

    def journal(self, unit: str = "arkbox-firstboot") -> str:
        return self.exec("journalctl", "-u", unit, "--no-pager", "-o", "cat")[1]
