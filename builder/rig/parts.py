"""The rig: the built appliance and its neighbours as containers on a private network.

Used by `arkbox try` and by the integration tests alike (one implementation). Each
container is a testcontainers `DockerContainer` subclass: configured in its constructor,
`start()` creates it on the rig's `Network` (fixed address, aliases), lays its files in
before it starts, then runs its `WaitStrategy` (a real readiness signal, never a bare
sleep). The waits poll with `firstboot.core.wait`, so giving up says what was awaited,
the last reason and the time limit. Everything the rig creates carries the label
`arkbox.rig=<rig name>`, so `Rig.down()` (and Ctrl-C) removes exactly that; each
container's `stop()` (and leaving its `with`) removes it and its volumes.
"""

from __future__ import annotations

import hashlib
import http.client
import imaplib
import io
import json
import logging
import socket
import ssl
import tarfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, Self

import docker
from docker.errors import ImageNotFound, NotFound
from docker.models.containers import Container
from docker.types import EndpointConfig
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.transferable import Transferable

from builder.pipeline.service_images import remove_older_imports
from builder.rig import seeding
from builder.rig.engine_preload import import_changes, preload_engine, service_image_ids
from builder.rig.network import Rig as Rig
from builder.rig.network import RigEngine, quiet_client_kw
from builder.rig.network import RigNetwork as RigNetwork
from builder.rig.removal import RIG_LABEL, remove_container, remove_volume
from builder.rig.waits import BOX as BOX
from builder.rig.waits import FIRSTBOOT_UNIT as FIRSTBOOT_UNIT
from builder.rig.waits import (
    CompositeWait,
    ContainerRunning,
    FirstBootDone,
    SystemdState,
    UnitActive,
)
from builder.rig.waits import FirstBootFailed as FirstBootFailed
from builder.rig.waits import RigError as RigError
from builder.rig.waits import RigWait as RigWait
from builder.rig.waits import wait_until as wait_until
from firstboot.core.execute import run
from firstboot.core.locations import INSTALLER_PROGRAM

log = logging.getLogger("arkbox.rig")

# systemd as PID 1 without --privileged (refused on these hosts): every
# capability but one, no seccomp/apparmor filter, the host's cgroup tree,
# tmpfs where systemd expects it.
SYSTEMD_CAPS_DROP = ["SYS_RESOURCE"]
SYSTEMD_SECURITY_OPT = ["seccomp=unconfined", "apparmor=unconfined"]
SYSTEMD_TMPFS = {"/run": "rw,mode=755", "/run/lock": "rw,mode=1777"}
SYSTEMD_ENV = {"container": "docker", "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE": "1"}
APPLIANCE_CONFIG = "/etc/arkbox/appliance.yaml"  # the config first boot reads
ROLE_LABEL = "arkbox.rig.role"


def docker_import_argv(tar: Path, tag: str, changes: Sequence[str] = ()) -> tuple[str, ...]:
    more = [arg for change in changes for arg in ("--change", change)]
    return ("docker", "import", "--change", 'CMD ["/sbin/init"]', *more, str(tar), tag)


def image_from_rootfs_tar(client: docker.DockerClient, tar: Path, repository: str) -> str:
    """`docker import` a root fs tar once; the tag is its content digest, so reuse is exact.
    The image is labelled with the build's service image IDs (builder/rig/engine_preload.py)."""
    changes = import_changes(service_image_ids(tar))
    digest = hashlib.sha256("\n".join(changes).encode())
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
    run(docker_import_argv(tar, tag, changes), timeout=900)
    client.images.get(tag)
    remove_older_imports(client, repository, keep=tag)
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


# ---------------------------------------------------------------- the reaper


def keep_reaper_off_unless_present(client: docker.DockerClient) -> None:
    """testcontainers' reaper (Ryuk) only where its image is already there: no registry is
    reachable from these machines, and pulling it would fail every start. The rig's label
    (`remove_rig`, each container's `remove()`) is the guarantee of clean-up either way."""
    if testcontainers_config.ryuk_disabled:
        return
    try:
        client.images.get(testcontainers_config.ryuk_image)
    except ImageNotFound:
        log.debug("no %s image here (none can be pulled): the reaper stays off",
                  testcontainers_config.ryuk_image)
        testcontainers_config.ryuk_disabled = True


# ---------------------------------------------------------------- the containers


class RigContainer(DockerContainer):
    """One container of the rig: named RIG-ROLE, labelled with the rig and its role, on
    the rig's network (aliases, a fixed address when given), `files` laid in before it
    starts. Ready when its wait strategy says so (by default: running)."""

    def __init__(self, rig: Rig, role: str, image: str, aliases: Sequence[str] = (),
                 environment: dict[str, str] | None = None,
                 command: Sequence[str] | None = None,
                 ports: dict[str, int | None] | None = None,
                 files: dict[str, tuple[bytes, int]] | None = None,
                 ipv4_address: str | None = None, *,
                 container: Container | None = None) -> None:
        super().__init__(image, docker_client_kw=quiet_client_kw(rig.client),
                         env=dict(environment or {}), name=f"{rig.name}-{role}")
        self._docker = RigEngine(rig.client)
        self.rig, self.role = rig, role
        self.aliases = list(aliases)
        self._command = list(command) if command else None
        # Files laid into the container before it starts: path -> (content, mode).
        self.files: dict[str, tuple[bytes, int]] = dict(files or {})
        # A fixed address on the rig network (e.g. one a DNS record must name before boot).
        self.ipv4_address = ipv4_address
        for port, host_port in (ports or {}).items():
            self.with_bind_ports(port, host_port)
        # An existing container of the rig (`try disaster` finds the old box by its label).
        self._container = container
        self.waiting_for(ContainerRunning(60))

    @property
    def name(self) -> str:
        return f"{self.rig.name}-{self.role}"

    @property
    def container(self) -> Container | None:
        """The engine's container (None before start)."""
        return self._container

    @property
    def environment(self) -> dict[str, str]:
        return self.env

    @property
    def labels(self) -> dict[str, str]:
        return {RIG_LABEL: self.rig.name, ROLE_LABEL: self.role}

    def start(self) -> Self:
        keep_reaper_off_unless_present(self.rig.client)
        return super().start()

    def with_dns(self, servers: Sequence[str]) -> Self:
        """The resolvers the container asks (e.g. the rig's own DNS server)."""
        self._kwargs = {**self._kwargs, "dns": list(servers)}
        return self

    def with_capabilities(self, *caps: str) -> Self:
        """Capabilities added to the engine's default set (e.g. NET_RAW for nmap)."""
        self._kwargs = {**self._kwargs, "cap_add": list(caps)}
        return self

    def _configure(self) -> None:
        """Called by `start()` just before the container is created."""
        if not self.rig.network.exists():
            raise RigError(f"the rig's network {self.rig.network.name} does not exist",
                           hint="start the rig first (Rig.up() or `with rig.running():`)")
        self.with_network(self.rig.network)
        for path, (content, mode) in sorted(self.files.items()):
            self.with_copy_into_container(content, path, mode)
        # testcontainers' endpoint config carries only aliases; ours adds the fixed address.
        endpoint = EndpointConfig(str(self.rig.client.api.api_version),
                                  aliases=self.aliases or None, ipv4_address=self.ipv4_address)
        self._kwargs = {"hostname": self.aliases[0] if self.aliases else self.role,
                        "labels": self.labels, "detach": True,
                        "networking_config": {self.rig.network.name: endpoint},
                        **self._kwargs}

    def _transfer_into_container(self, transferable: Transferable, destination_in_container: str,
                                 mode: int) -> None:
        """How `start()` lays each `with_copy_into_container` file in, between create and
        start. testcontainers' own tar leaves the mtime at 0 (1970), and nsd then takes a
        zone file for the one it already has (unchanged since 0) and serves SERVFAIL:
        ours are stamped now."""
        if not isinstance(transferable, bytes):
            super()._transfer_into_container(transferable, destination_in_container, mode)
            return
        self.put_files({destination_in_container: (transferable, mode)})

    def stop(self, force: bool = True, delete_volume: bool = True) -> None:
        """Remove the container and every volume labelled as this container's, also when
        it never started (the rig's client stays open for the rest of the rig)."""
        self.remove()

    def remove(self) -> dict[str, int]:
        """Remove the container and its labelled volumes; the counts of each. An interrupt
        may have cut the rig's client mid-request: then once more on a fresh connection."""
        try:
            return self._remove(self.rig.client)
        except Exception as e:  # any failure of the old connection
            log.debug("removing %s again on a fresh connection: %s", self.name, e)
            return self._remove(docker.from_env(timeout=300))

    def _remove(self, client: docker.DockerClient) -> dict[str, int]:
        removed = {"containers": 0, "volumes": 0}
        container = self._container
        if container is None:
            with suppress(NotFound):
                container = client.containers.get(self.name)
        if container is not None:
            with suppress(NotFound):
                container.reload()
                for kind, n in remove_container(client, container).items():
                    removed[kind] += n
        self._container = None
        label_filter: dict[str, str | list[str] | bool] = {
            "label": [f"{key}={value}" for key, value in self.labels.items()]}
        for volume in client.volumes.list(filters=label_filter):
            with suppress(NotFound):
                remove_volume(volume)
                removed["volumes"] += 1
        return removed

    def not_running(self) -> str | None:
        """None while the container runs, else its state."""
        if self._container is None:
            return "not created"
        self._container.reload()
        status = str(self._container.status)
        return None if status == "running" else f"container is {status}"

    # Ours returns (exit code, text): the shape every rig user reads; testcontainers'
    # returns bytes. Its wait strategies are not used on rig containers.
    def exec(self, *argv: str, user: str = "root",  # type: ignore[override]
             environment: dict[str, str] | None = None) -> tuple[int, str]:
        assert self._container is not None, f"{self.role} was not started"
        result = self._container.exec_run(list(argv), user=user, demux=False,
                                          environment=environment)
        output = result.output if isinstance(result.output, bytes) else b""
        return int(result.exit_code or 0), output.decode(errors="replace")

    def exec_streaming(self, argv: Sequence[str], on_line: Callable[[str], None]) -> int:
        """Run argv in the container, handing each line of its output (stdout and stderr)
        to `on_line` as it comes; its exit code."""
        assert self._container is not None, f"{self.role} was not started"
        api = self.rig.client.api
        exec_id = api.exec_create(self._container.id, list(argv), stdout=True,
                                  stderr=True)["Id"]
        pending = b""
        for chunk in api.exec_start(exec_id, stream=True):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                on_line(line.decode(errors="replace"))
        if pending:
            on_line(pending.decode(errors="replace"))
        return int(api.exec_inspect(exec_id).get("ExitCode") or 0)

    def put_files(self, files: dict[str, tuple[bytes, int]]) -> None:
        """Lay files into the running container (path -> content, mode)."""
        assert self._container is not None, f"{self.role} was not started"
        self._container.put_archive("/", files_tar(files))

    def read_json(self, path: str) -> Any:
        code, out = self.exec("cat", path)
        if code != 0:
            return None
        return json.loads(out)

    def ip(self, family: int = 4) -> str:
        assert self._container is not None
        self._container.reload()
        net = self._container.attrs["NetworkSettings"]["Networks"][self.rig.network.name]
        return str(net["IPAddress"] if family == 4 else net["GlobalIPv6Address"])

    def host_port(self, port: str) -> int:
        """The host port the engine published `port` ("443/tcp") on."""
        assert self._container is not None
        self._container.reload()
        bindings = self._container.attrs["NetworkSettings"]["Ports"].get(port) or []
        return int(bindings[0]["HostPort"])


# The rig's outer container keeps /proc/sys read-only, so the inner dockerd
# (26+) cannot switch IPv6 off on IPv4-only container interfaces; tell it not
# to insist. Laid only into rig containers, never into the image.
RIG_DOCKERD_DROPIN = (
    "/etc/systemd/system/docker.service.d/arkbox-rig.conf",
    b"[Service]\nEnvironment=DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1\n",
)


# Set when the container is made, because /proc/sys stays read-only inside it.
# The inner dockerd runs with userland-proxy off, which needs local routing; and
# bridges it creates inherit IPv6 from `default` (it only writes the sysctl when
# IPv6 is off), so the proxy network gets IPv6 as on a real host.
RIG_SYSCTLS = {
    "net.ipv4.conf.default.route_localnet": "1",
    "net.ipv6.conf.all.disable_ipv6": "0",
    "net.ipv6.conf.default.disable_ipv6": "0",
    "net.ipv6.conf.all.forwarding": "1",
}


class SystemdContainer(RigContainer):
    """A container that boots systemd as PID 1 (the appliance, the backup server), with the
    rig's capability set and its own inner-engine volume. Ready at systemd running or
    degraded (within `boot_timeout`)."""

    def __init__(self, rig: Rig, role: str, image: str, aliases: Sequence[str] = (),
                 environment: dict[str, str] | None = None,
                 command: Sequence[str] | None = None,
                 ports: dict[str, int | None] | None = None,
                 files: dict[str, tuple[bytes, int]] | None = None,
                 ipv4_address: str | None = None, *,
                 volumes: dict[str, dict[str, str]] | None = None,
                 boot_timeout: float = 180,
                 container: Container | None = None) -> None:
        super().__init__(rig, role, image, aliases, {**SYSTEMD_ENV, **(environment or {})},
                         command or ["/sbin/init"], ports, files, ipv4_address,
                         container=container)
        path, content = RIG_DOCKERD_DROPIN
        self.files.setdefault(path, (content, 0o644))
        # How long systemd may take to reach running/degraded (first boot runs after it).
        self.boot_timeout = boot_timeout
        for volume, mount in (volumes or {}).items():
            self.with_volume_mapping(volume, mount["bind"], mount.get("mode", "rw"))
        self.tmpfs.update(SYSTEMD_TMPFS)
        self.with_kwargs(cap_add=["ALL"], cap_drop=SYSTEMD_CAPS_DROP,
                         security_opt=SYSTEMD_SECURITY_OPT, stop_signal="SIGRTMIN+3",
                         sysctls=RIG_SYSCTLS)
        self.waiting_for(self.readiness(boot_timeout))

    def readiness(self, boot_timeout: float) -> RigWait:
        """What `start()` waits for: systemd running or degraded."""
        return SystemdState(boot_timeout)

    def _configure(self) -> None:
        self.with_volume_mapping("/sys/fs/cgroup", "/sys/fs/cgroup", "rw")
        self.with_volume_mapping(self.labelled_volume("docker"), "/var/lib/docker", "rw")
        super()._configure()

    def volume_name(self, purpose: str) -> str:
        return f"{self.name}-{purpose}"

    def labelled_volume(self, purpose: str) -> str:
        """The container's volume NAME-PURPOSE, made with the rig's labels before the
        container is: `remove_rig` and `remove()` find it even when the container never
        came to be."""
        volume = self.volume_name(purpose)
        try:
            self.rig.client.volumes.get(volume)
        except NotFound:
            self.rig.client.volumes.create(volume, labels=self.labels)
        return volume

    def failed_units(self) -> list[str]:
        _, out = self.exec("systemctl", "list-units", "--failed", "--plain", "--no-legend")
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def journal(self, unit: str = FIRSTBOOT_UNIT) -> str:
        return self.exec("journalctl", "-u", unit, "--no-pager", "-o", "cat")[1]


def rig_image(source_dir: Path, cache_dir: Path, recipe: str) -> str:
    """A rig-only image (client, rig-internet), built offline like every service image."""
    from builder.pipeline.service_images import build_service_images

    (image,) = build_service_images(source_dir / "image" / "recipes", [recipe], cache_dir,
                                    log=log.debug)
    return image.tag


class BackupServerContainer(SystemdContainer):
    """The backup-server role: ready when systemd is up and its sshd (the forced
    `borg serve`) is active."""

    def readiness(self, boot_timeout: float) -> RigWait:
        return CompositeWait(SystemdState(boot_timeout), UnitActive("ssh", 60))


class ApplianceContainer(SystemdContainer):
    """The built appliance (its root fs tar) booting with systemd; first boot runs by itself.

    `config` (YAML text) replaces the baked /etc/arkbox/appliance.yaml before boot,
    so one image serves many test configs. The image holds no secret: `seed_config`
    names the config file the box's config came from, and the box gets the seed made
    from `config` (or that file) with the secrets next to it. Without it, no seed.
    Ready at systemd running/degraded; `wait_first_boot()` then waits for first boot.
    """

    def __init__(self, rig: Rig, role: str, image: str, aliases: Sequence[str] = (),
                 environment: dict[str, str] | None = None,
                 command: Sequence[str] | None = None,
                 ports: dict[str, int | None] | None = None,
                 files: dict[str, tuple[bytes, int]] | None = None,
                 ipv4_address: str | None = None, *,
                 config: str | None = None, seed_config: Path | None = None,
                 volumes: dict[str, dict[str, str]] | None = None,
                 boot_timeout: float = 180, preload_images: bool = True,
                 container: Container | None = None) -> None:
        super().__init__(rig, role, image, aliases, environment, command, ports, files,
                         ipv4_address, volumes=volumes, boot_timeout=boot_timeout,
                         container=container)
        self.config, self.seed_config = config, seed_config
        # The engine starts with the service images in place, as on a flashed disk;
        # False leaves its volume empty, so first boot loads images.tar.
        self.preload_images = preload_images
        if config is not None:
            self.files[APPLIANCE_CONFIG] = (config.encode(), 0o600)
        if seed_config is not None:
            text = config if config is not None else seed_config.read_text()
            self.files[seeding.SEED_FILE] = (seeding.seed_for(text, seed_config), 0o600)
        # Also a seed passed in `files`, e.g. the one `try disaster` keeps for the blank box.
        self.env.update(seeding.environment_for(self.files))

    def _configure(self) -> None:
        if self.preload_images:  # else labelled_volume makes it empty
            log.info("%s: %s", self.name, preload_engine(
                self.rig.client, self.volume_name("docker"), self.image, self.labels))
        super()._configure()

    def wait_first_boot(self, timeout: float = 600, *,
                        retry_failures: bool = False) -> dict[str, Any]:
        """Wait until first boot finished (done marker); returns status.json.

        A failed run raises FirstBootFailed at once with the failing steps and their
        messages. Its unit retries a failed first boot: with `retry_failures` the retries
        are waited out (a test that mends the box meanwhile), and on time-out the message
        names the last failing steps and their reasons."""
        FirstBootDone(timeout, retry_failures=retry_failures).wait_until_ready(self)
        return self.status_json()

    # ------------------------------------------------------------ what an operator does

    def installer(self, *args: str, environment: dict[str, str] | None = None
                  ) -> tuple[int, str]:
        """`arkbox-installer ARGS` in the box: its exit code and output (stdout and
        stderr, interleaved as they came)."""
        return self.exec(INSTALLER_PROGRAM, *args, environment=environment)

    def status_json(self) -> dict[str, Any]:
        """The box's status.json (what `arkbox-installer status --json` reports from);
        empty before first boot wrote one. (Not `status`: testcontainers' `status` is the
        container's state, which its own waits read.)"""
        data = self.read_json(str(BOX.status))
        return dict(data) if isinstance(data, dict) else {}

    def https(self, host: str, path: str = "/", *, ca_pem: bytes | None = None,
              timeout: float = 30) -> tuple[int, str]:
        """A GET of https://HOST/PATH at the box's rig address as a client on the rig
        network makes it (SNI and Host: HOST); its status and body. The certificate is
        verified against `ca_pem` when given (e.g. the box's fullchain, the test CA's
        root), else not checked (the fallback certificate is the box's own)."""
        if ca_pem is None:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cadata=ca_pem.decode())
        connection = NamedHTTPSConnection(self.ip(), 443, host, context=context,
                                           timeout=timeout)
        try:
            connection.request("GET", path, headers={"Host": host})
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            connection.close()

    def imap_login(self, mailbox: str, password: str, timeout: float = 30) -> bool:
        """Whether `mailbox` logs in with `password` over IMAPS (993) at the box's rig
        address (certificate not checked: the login is what is tried)."""
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with imaplib.IMAP4_SSL(self.ip(), 993, ssl_context=context, timeout=timeout) as imap:
            try:
                imap.login(mailbox, password)
            except imaplib.IMAP4.error:
                return False
            imap.logout()
            return True

    def backup_now(self, on_line: Callable[[str], None] | None = None) -> str:
        """`arkbox-installer backup` in the box, as its timer runs it; its output. With
        `on_line`, verbosely, each line handed over as it comes. A RigError when it fails."""
        if on_line is None:
            code, output = self.installer("backup")
        else:
            lines: list[str] = []

            def keep(line: str) -> None:
                lines.append(line)
                on_line(line)

            code = self.exec_streaming([INSTALLER_PROGRAM, "backup", "-v"], keep)
            output = "\n".join(lines)
        if code != 0:
            raise RigError(f"arkbox-installer backup in {self.name} exited {code}: "
                           f"{output.strip()[-600:]}",
                           hint=f"docker exec {self.name} arkbox-installer backup --debug")
        return output

    def destroy_keep_backups(self) -> dict[str, int]:
        """Remove the box: its container and its volumes, as a lost VPS is gone. The
        backup server (its own container and volumes) keeps the repository."""
        return self.remove()


class NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address, verified for the name the server's certificate carries."""

    def __init__(self, address: str, port: int, server_name: str, *,
                 context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(address, port, context=context, timeout=timeout)
        self._server_name = server_name
        self._ssl_context = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._ssl_context.wrap_socket(sock, server_hostname=self._server_name)
