"""The rig: the built appliance and its neighbours as containers on a private network.

Used by `arkbox try` and by the integration tests alike (one implementation).
Each part is a small class in the style of testcontainers' DockerContainer:
configure, `start()`, wait for a real readiness signal (never a bare sleep),
`exec()`, `remove()`. Everything the rig creates carries the label
`arkbox.rig=<rig name>`, so `Rig.down()` (and Ctrl-C) removes exactly that.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import io
import json
import logging
import socket
import ssl
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

from builder.pipeline.service_images import remove_older_imports
from builder.rig import seeding
from builder.rig.removal import RIG_LABEL, remove_abandoned_rigs, remove_rig
from firstboot.core import wait
from firstboot.core.context import Paths
from firstboot.core.errors import ArkboxError
from firstboot.core.execute import run

log = logging.getLogger("arkbox.rig")

# systemd as PID 1 without --privileged (refused on these hosts): every
# capability but one, no seccomp/apparmor filter, the host's cgroup tree,
# tmpfs where systemd expects it.
SYSTEMD_CAPS_DROP = ["SYS_RESOURCE"]
SYSTEMD_SECURITY_OPT = ["seccomp=unconfined", "apparmor=unconfined"]
SYSTEMD_TMPFS = {"/run": "rw,mode=755", "/run/lock": "rw,mode=1777"}
SYSTEMD_ENV = {"container": "docker", "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE": "1"}
# Where the installer keeps its files inside the appliance: absolute paths in the container.
BOX = Paths(root=Path("/"))
APPLIANCE_CONFIG = "/etc/arkbox/appliance.yaml"  # the config first boot reads
FIRSTBOOT_UNIT = "arkbox-firstboot"


class RigError(ArkboxError):
    pass


def wait_until(what: str, check: Callable[[], str | None], timeout: float,
               interval: float = 1.0) -> None:
    """Poll `check` (None = ready, else the reason it is not) with `wait.until`; a RigError
    saying what was awaited and the last reason when the time runs out."""

    def ready() -> wait.NotYet | None:
        reason = check()
        return None if reason is None else wait.NotYet(reason)

    try:
        wait.until(what, ready, timeout, interval_s=interval)
    except wait.WaitTimedOut as timed_out:
        raise RigError(timed_out.message, hint=timed_out.hint) from None


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
    # A fixed address on the rig network (e.g. one a DNS record must name before boot).
    ipv4_address: str | None = None
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
        if self.aliases or self.ipv4_address:
            network.disconnect(container)
            network.connect(container, aliases=list(self.aliases) or None,
                            ipv4_address=self.ipv4_address)
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
        docker_volume = self.labelled_volume("docker")
        return {
            "cap_add": ["ALL"], "cap_drop": SYSTEMD_CAPS_DROP,
            "security_opt": SYSTEMD_SECURITY_OPT, "tmpfs": SYSTEMD_TMPFS,
            "volumes": {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                        docker_volume: {"bind": "/var/lib/docker", "mode": "rw"},
                        **self.volumes},
            "environment": {**SYSTEMD_ENV, **self.environment},
            "stop_signal": "SIGRTMIN+3",
            "sysctls": RIG_SYSCTLS,
            "command": list(self.command) if self.command else ["/sbin/init"],
        }

    def labelled_volume(self, purpose: str) -> str:
        """The part's volume NAME-PURPOSE, made with the rig's label before the container
        is: `remove_rig` finds it even when the container never came to be."""
        volume = f"{self.name}-{purpose}"
        try:
            self.rig.client.volumes.get(volume)
        except NotFound:
            self.rig.client.volumes.create(volume, labels={RIG_LABEL: self.rig.name})
        return volume

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
            remove_abandoned_rigs(self.client, {self.ipv4_subnet, self.ipv6_subnet})
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


# ---------------------------------------------------------------- running a command live


def exec_streaming(part: Part, argv: Sequence[str], on_line: Callable[[str], None]) -> int:
    """Run argv in the part, handing each line of its output (stdout and stderr) to
    `on_line` as it comes; its exit code."""
    assert part.container is not None, f"{part.role} was not started"
    api = part.rig.client.api
    exec_id = api.exec_create(part.container.id, list(argv), stdout=True, stderr=True)["Id"]
    pending = b""
    for chunk in api.exec_start(exec_id, stream=True):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            on_line(line.decode(errors="replace"))
    if pending:
        on_line(pending.decode(errors="replace"))
    return int(api.exec_inspect(exec_id).get("ExitCode") or 0)


def rig_image(source_dir: Path, cache_dir: Path, recipe: str) -> str:
    """A rig-only image (client, rig-internet), built offline like every service image."""
    from builder.pipeline.service_images import build_service_images

    (image,) = build_service_images(source_dir / "image" / "recipes", [recipe], cache_dir,
                                    log=log.debug)
    return image.tag


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
    so one image serves many test configs. The image holds no secret: `seed_config`
    names the config file the box's config came from, and the box gets the seed made
    from `config` (or that file) with the secrets next to it. Without it, no seed.
    """

    config: str | None = None
    seed_config: Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.config is not None:
            self.files[APPLIANCE_CONFIG] = (self.config.encode(), 0o600)
        if self.seed_config is not None:
            text = self.config if self.config is not None else self.seed_config.read_text()
            self.files[seeding.SEED_FILE] = (seeding.seed_for(text, self.seed_config), 0o600)
        # Also a seed passed in `files`, e.g. the one `try disaster` keeps for the blank box.
        self.environment.update(seeding.environment_for(self.files))

    def wait_first_boot(self, timeout: float = 600) -> dict[str, Any]:
        """Wait until first boot finished (done marker); returns status.json. A failed first
        boot is retried by its unit, so a failure is waited out too: on time-out the message
        names the last failing steps and their reasons."""

        def finished() -> str | None:
            code, _ = self.exec("test", "-e", str(BOX.done_marker))
            if code == 0:
                return None
            status = self.read_json(str(BOX.status)) or {}
            failures = "; ".join(f"{f.get('step')}: {f.get('message')}"
                                 for f in status.get("failures") or [])[-600:]
            return (f"first boot result: {status.get('result', 'not started')}"
                    + (f" ({failures})" if failures else ""))

        wait_until("first boot", finished, timeout, interval=3)
        status: dict[str, Any] = self.read_json(str(BOX.status))
        return status

    def journal(self, unit: str = FIRSTBOOT_UNIT) -> str:
        return self.exec("journalctl", "-u", unit, "--no-pager", "-o", "cat")[1]


def pebble_image(source_dir: Path, cache_dir: Path) -> str:
    """The rig's test ACME CA (Debian's pebble), built offline like the client (cached)."""
    return rig_image(source_dir, cache_dir, "pebble")


@dataclass(frozen=True)
class HttpsIdentity:
    """A throw-away CA and a server certificate it signed (for Pebble's own HTTPS)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def https_identity(names: Sequence[str], days: int = 30) -> HttpsIdentity:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "arkbox rig test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return HttpsIdentity(
        ca.public_bytes(pem), cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


PEBBLE_ACME_PORT = 14000
PEBBLE_MANAGEMENT_PORT = 15000
CHALLTESTSRV_PORT = 8055
PEBBLE_DNS_PORT = 8053


@dataclass
class PebblePart(Part):
    """A test ACME CA: Pebble, with pebble-challtestsrv as the DNS its validator asks.

    Pebble serves its directory over HTTPS with `https` (a throw-away CA and a
    certificate for the aliases, e.g. "pebble"); the appliance trusts that CA
    through tls.ca_bundle. Host names resolve only as `add_a` says, so a test
    decides where the CA's HTTP-01 validation goes. Ready when the directory, the
    management endpoint and the DNS API accept connections.
    """

    https: HttpsIdentity | None = None  # None: made here for the aliases
    nonce_reject_percent: int = 5  # Pebble's own default: badNonce for 5% of requests
    validity_seconds: int | None = None  # None: Pebble's default (5 years)

    def __post_init__(self) -> None:
        if self.https is None:
            self.https = https_identity(list(self.aliases) or [self.role])
        config: dict[str, Any] = {
            "listenAddress": f"0.0.0.0:{PEBBLE_ACME_PORT}",
            "managementListenAddress": f"0.0.0.0:{PEBBLE_MANAGEMENT_PORT}",
            "certificate": "/etc/pebble/cert.pem", "privateKey": "/etc/pebble/key.pem",
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity_seconds is not None:
            config["certificateValidityPeriod"] = self.validity_seconds
        self.files.update({
            "/etc/pebble/config.json": (json.dumps({"pebble": config}).encode(), 0o644),
            "/etc/pebble/cert.pem": (self.https.cert_pem, 0o644),
            "/etc/pebble/key.pem": (self.https.key_pem, 0o600),
        })
        self.environment = {"PEBBLE_VA_NOSLEEP": "1",
                            "PEBBLE_WFE_NONCEREJECT": str(self.nonce_reject_percent),
                            **self.environment}
        # No default answers: a name resolves only once a test adds it.
        self.command = ["sh", "-c",
                        "pebble-challtestsrv -defaultIPv4 '' -defaultIPv6 '' -http01 '' "
                        "-https01 '' -tlsalpn01 '' -dns01 :8053 -management :8055 & "
                        f"exec pebble -config /etc/pebble/config.json "
                        f"-dnsserver 127.0.0.1:{PEBBLE_DNS_PORT}"]

    @property
    def directory(self) -> str:
        """The ACME directory URL as the rig's other parts reach it."""
        return f"https://{self.aliases[0]}:{PEBBLE_ACME_PORT}/dir"

    def wait_ready(self) -> None:
        super().wait_ready()
        for port in (PEBBLE_ACME_PORT, PEBBLE_MANAGEMENT_PORT, CHALLTESTSRV_PORT):
            wait_until(f"pebble port {port}", functools.partial(self._accepts, port), 60,
                       interval=0.5)

    def _accepts(self, port: int) -> str | None:
        if (reason := self._running()) is not None:
            return reason
        try:
            with socket.create_connection((self.ip(), port), timeout=2):
                return None
        except OSError as err:
            return f"port {port}: {err}"

    def add_a(self, host: str, address: str) -> None:
        """Make `host` resolve to `address` for Pebble's validator (challtestsrv's API)."""
        body = json.dumps({"host": host.rstrip(".") + ".", "addresses": [address]})
        connection = http.client.HTTPConnection(self.ip(), CHALLTESTSRV_PORT, timeout=10)
        try:
            connection.request("POST", "/add-a", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            if response.status != 200:
                raise RigError(f"pebble-challtestsrv refused {host} -> {address}: "
                               f"HTTP {response.status} {response.read()[:200]!r}")
        finally:
            connection.close()

    def root_pem(self) -> bytes:
        """Pebble's current root (it signs the issued chains), from its management endpoint."""
        assert self.https is not None
        context = ssl.create_default_context(cadata=self.https.ca_pem.decode())
        connection = _NamedHTTPSConnection(self.ip(), PEBBLE_MANAGEMENT_PORT,
                                           self.aliases[0], context=context, timeout=10)
        try:
            connection.request("GET", "/roots/0")
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200 or b"BEGIN CERTIFICATE" not in body:
            raise RigError(f"pebble's management endpoint gave no root: HTTP {response.status}")
        return body


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address, verified for the name the server's certificate carries."""

    def __init__(self, address: str, port: int, server_name: str, *,
                 context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(address, port, context=context, timeout=timeout)
        self._server_name = server_name
        self._ssl_context = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._ssl_context.wrap_socket(sock, server_hostname=self._server_name)
