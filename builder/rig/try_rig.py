"""The rig `arkbox try` runs: its name, subnets and state files, the appliance with ports
on localhost, taking it all down, and what `try` and `try disaster` both do after a first
boot (the certificate to hand out, the zone on the rig's DNS)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import docker
from docker.errors import DockerException
from docker.models.containers import Container

from builder.rig import dns as try_dns
from builder.rig.parts import BOX, ApplianceContainer, Rig, RigError
from builder.rig.pebble import TestCAContainer
from builder.rig.removal import RIG_LABEL, remove_rig
from builder.rig.screens import say
from builder.rig.waits import SystemdState
from firstboot.certs.certificate import LiveFiles
from firstboot.core.config import Appliance, ConfigInvalid, load_config
from firstboot.core.errors import ArkboxError
from firstboot.core.interrupts import terminate_as_interrupt

IMAGE_REPOSITORY = "arkbox/appliance"
BACKUP_REPOSITORY = "arkbox/backup-server-role"
FALLBACK_CHAIN = str(LiveFiles(BOX.tls / "live").chain)
CERTIFICATE_FILE = "fallback-certificate.pem"
# Published on 127.0.0.1 only, each to a free port the engine picks.
PUBLISHED_PORTS = ("80/tcp", "443/tcp", "22/tcp")
MAIL_PORTS = ("25/tcp", "465/tcp", "587/tcp", "993/tcp")  # when mail is on
# What a part that did not come up raises: the rig's own checks, or the engine.
RIG_FAILURES = (RigError, DockerException)


def rig_subnets(name: str) -> tuple[str, str]:
    """Private subnets derived from the rig's name: two rigs (try, tests) do not collide."""
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    return f"172.31.{100 + h % 150}.0/24", f"fd42:a7b1:{h % 0xffff:x}::/64"


def make_rig(name: str, client: docker.DockerClient) -> Rig:
    ipv4, ipv6 = rig_subnets(name)
    return Rig(name=name, client=client, ipv4_subnet=ipv4, ipv6_subnet=ipv6)


def state_dir_for(out_dir: Path, rig_name: str) -> Path:
    """Files `try` hands the operator (the certificate): removed by `down`."""
    return out_dir / rig_name


def published_for(config: Appliance) -> tuple[str, ...]:
    """The container ports `try` publishes on 127.0.0.1 for this config."""
    return PUBLISHED_PORTS + (MAIL_PORTS if config.mail.enabled else ())


def zone_domains(config: Appliance) -> list[str]:
    """The zones the rig's DNS serves: the mail domains and the appliance's host name."""
    return [*config.mail.domains, config.appliance.hostname]


def config_from_text(text: bytes) -> Appliance | None:
    """A config as an appliance holds it, through the model (its secret files stay on the
    box: not checked); None when it does not load."""
    with tempfile.TemporaryDirectory(prefix="arkbox-try-") as tmp:
        path = Path(tmp) / "appliance.yaml"
        path.write_bytes(text)
        try:
            return load_config(path, check_secrets=False)
        except ConfigInvalid:
            return None


# Ready as soon as systemd (PID 1) answers: first boot's lines are what `try` follows,
# from the start, rather than waiting for the rest of the boot.
SYSTEMD_ANSWERS = frozenset({"initializing", "starting", "running", "degraded"})


class TryAppliance(ApplianceContainer):
    """The appliance as `arkbox try` runs it: ports on localhost, followed from early boot."""

    def __init__(self, rig: Rig, role: str, image: str, aliases: list[str], *,
                 config: str | None = None, seed_config: Path | None = None,
                 files: dict[str, tuple[bytes, int]] | None = None,
                 published: tuple[str, ...] = PUBLISHED_PORTS,
                 host_ports: dict[str, int] | None = None) -> None:
        super().__init__(rig, role, image, aliases, files=files, config=config,
                         seed_config=seed_config)
        self.published = published
        # Host ports to ask for (disaster: the destroyed appliance's); else the engine picks.
        self.host_ports = dict(host_ports or {})
        # docker-py takes (address, port); testcontainers' annotation knows the port only.
        self.ports = cast("dict[str, int | None]",
                          {port: ("127.0.0.1", self.host_ports.get(port))
                           for port in published})
        self.waiting_for(SystemdState(120, interval=1, states=SYSTEMD_ANSWERS))


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except DockerException as e:
        raise ArkboxError(f"no Docker Engine answers: {e}",
                          hint="start dockerd (scripts/setup does), then run arkbox try again"
                          ) from e
    return client


def rig_containers(client: docker.DockerClient, rig_name: str) -> dict[str, Container]:
    """The rig's containers by role (appliance, backup, pebble, dns)."""
    label: dict[str, str | list[str] | bool] = {"label": f"{RIG_LABEL}={rig_name}"}
    return {str(c.labels.get("arkbox.rig.role")): c
            for c in client.containers.list(all=True, filters=label)}


def published_ports(container: Container) -> dict[str, int]:
    return {port: int(bindings[0]["HostPort"])
            for port, bindings in (container.attrs["NetworkSettings"]["Ports"] or {}).items()
            if bindings}


def take_down(client: docker.DockerClient, rig_name: str,
              state_dir: Path | None) -> dict[str, int]:
    """Remove every container, volume and network labelled as this rig's, and its files."""
    removed = remove_rig(client, rig_name)
    if state_dir is not None and state_dir.is_dir():
        shutil.rmtree(state_dir)
    return removed


def installer_dns(appliance: ApplianceContainer, *options: str) -> str | None:
    """`arkbox-installer dns` in the appliance, when this installer has that command."""
    code, help_text = appliance.exec("arkbox-installer", "--help")
    if code != 0 or "dns" not in help_text.split():
        return None
    code, text = appliance.exec("arkbox-installer", "dns", *options)
    return text.strip() if code == 0 and text.strip() else None


def copy_certificate(appliance: ApplianceContainer, state_dir: Path) -> Path | None:
    code, text = appliance.exec("cat", FALLBACK_CHAIN)
    if code != 0 or "BEGIN CERTIFICATE" not in text:
        return None
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / CERTIFICATE_FILE
    path.write_text(text)
    return path


def start_zone(rig: Rig, image: str, appliance: ApplianceContainer, domains: list[str],
               pebble: TestCAContainer | None) -> str | None:
    """The rig's DNS serving the appliance's zone; the command that runs the doctor
    against it (None, said why, when it did not start: the rest of the box works)."""
    say("starting the DNS server with the zone arkbox-installer dns generates (nsd) …")
    try:
        dns = try_dns.start_dns(rig, image, appliance, domains)
        ca_file = try_dns.give_ca_root(appliance, pebble.root_pem()) if pebble else None
    except (*RIG_FAILURES, ValueError, KeyError) as e:
        say(f"  ✗ the DNS server did not start: {e}")
        return None
    say(f"  ✓ serving it at {dns.ip(4)}")
    return try_dns.doctor_command(appliance.name, dns.ip(4), appliance.ip(4), ca_file)


@contextmanager
def on_interrupt(then: Callable[[], None]) -> Iterator[None]:
    """Ctrl-C, SIGTERM or SIGHUP inside: `then` runs, shielded from a second signal (so it
    is not left half done), and the interrupt goes on (exit 130)."""
    with terminate_as_interrupt() as shield:
        try:
            yield
        except KeyboardInterrupt:
            shield()
            say("")
            then()
            raise
