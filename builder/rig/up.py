"""`arkbox try [CONFIG]`: build if stale, boot the appliance and its neighbours in the rig,
follow first boot live, then print what the operator can do now.

When the config backs up over ssh://, the rig also runs the backup-server role under the
repository's host name, so first boot goes as on a VPS. The test ACME CA (ca.py) gives
the appliance a real certificate; when mail is on, the rig's DNS (dns.py) serves the zone
`arkbox-installer dns` generates once first boot is done. Ctrl-C (SIGTERM, SIGHUP) at any
point removes everything the rig created.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import docker

from builder.rig import ca as try_ca
from builder.rig import dns as try_dns
from builder.rig.freshness import ensure_built
from builder.rig.journal_follow import BootOutcome, follow_first_boot
from builder.rig.parts import (
    FIRSTBOOT_UNIT,
    BackupServerContainer,
    Rig,
    RigContainer,
    image_from_rootfs_tar,
)
from builder.rig.pebble import TestCAContainer
from builder.rig.screens import (
    describe_removed,
    look_command,
    mail_login,
    next_steps,
    published_line,
    rig_option,
    say,
)
from builder.rig.try_rig import (
    BACKUP_REPOSITORY,
    IMAGE_REPOSITORY,
    RIG_FAILURES,
    TryAppliance,
    copy_certificate,
    docker_client,
    installer_dns,
    make_rig,
    on_interrupt,
    published_for,
    start_zone,
    state_dir_for,
    take_down,
    zone_domains,
)
from firstboot.certs.certificate import wanted_names
from firstboot.core.config import DEFAULT_CONFIG_PATH, Appliance, load_config
from firstboot.core.errors import EXIT_FAILURE, EXIT_OK, ArkboxError


@dataclass(frozen=True)
class BackupServerPlan:
    host: str  # the name the appliance's backup.repository uses
    config: Path
    out: Path


def backup_server_host(config: Appliance) -> str | None:
    """The host of an ssh:// backup repository, which the rig then has to provide."""
    repository = config.backup.repository
    if not repository or not str(repository).startswith("ssh://"):
        return None
    return urlsplit(str(repository)).hostname


def plan_backup_server(config: Appliance, args: argparse.Namespace,
                       out_dir: Path) -> BackupServerPlan | None:
    host = backup_server_host(config)
    if host is None:
        return None
    server_out = Path(args.backup_server_out) if args.backup_server_out \
        else out_dir / "backup-server"
    return BackupServerPlan(host, Path(args.backup_server_config), server_out)


@dataclass(frozen=True)
class UpPlan:
    """What `arkbox try` was asked for, the config loaded through the model."""

    config_path: Path
    config: Appliance
    out_dir: Path
    rig_name: str
    rebuild: bool
    no_build: bool
    timeout: float
    backup: BackupServerPlan | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> UpPlan:
        config_path = Path(args.target or DEFAULT_CONFIG_PATH)
        config = load_config(config_path)
        out_dir = Path(args.out)
        return cls(config_path, config, out_dir, str(args.rig), bool(args.rebuild),
                   bool(args.no_build), float(args.timeout),
                   plan_backup_server(config, args, out_dir))

    @property
    def state_dir(self) -> Path:
        return state_dir_for(self.out_dir, self.rig_name)


@dataclass(frozen=True)
class Images:
    appliance: str
    backup: str | None  # when the rig runs the backup server
    dns: str | None  # when mail is on


@dataclass(frozen=True)
class Ready:
    """What first boot left to hand out: the certificate to trust, DNS, the doctor."""

    certificate: Path | None
    from_ca: bool
    dns: str | None
    doctor: str | None


def build_and_import(plan: UpPlan, client: docker.DockerClient) -> Images:
    """Build what is stale, replace an earlier rig, import the root fs tars as images."""
    built = ensure_built(plan.config_path, plan.out_dir, rebuild=plan.rebuild,
                         no_build=plan.no_build)
    backup_built = None
    if plan.backup is not None:
        say(f"the backup repository is on {plan.backup.host}: the rig runs the backup-server "
            f"role ({plan.backup.config}) there")
        backup_built = ensure_built(plan.backup.config, plan.backup.out, rebuild=plan.rebuild,
                                    no_build=plan.no_build, role="backup-server")
    left = take_down(client, plan.rig_name, plan.state_dir)
    if any(left.values()):
        say(f"an earlier `arkbox try` was still up: {describe_removed(left)}")
    tar = plan.out_dir / f"{built.name}-rootfs.tar"
    say(f"importing {tar} (once per build) …")
    image = image_from_rootfs_tar(client, tar, IMAGE_REPOSITORY)
    backup_image = None
    if plan.backup is not None and backup_built is not None:
        backup_image = image_from_rootfs_tar(
            client, plan.backup.out / f"{backup_built.name}-rootfs.tar", BACKUP_REPOSITORY)
    dns_image = None
    if plan.config.mail.enabled:
        say("the DNS server's image (nsd, rig-internet: built once, cached) …")
        dns_image = try_dns.dns_image()
    return Images(image, backup_image, dns_image)


def neighbour_parts(rig: Rig, backup_image: str | None,
                    backup: BackupServerPlan | None) -> list[RigContainer]:
    """The parts the appliance talks to, started before it.

    The test ACME CA is started by start_rig itself (it needs the appliance's address), and
    the DNS server with the generated zone once first boot is done (start_zone).
    """
    parts: list[RigContainer] = []
    if backup is not None and backup_image is not None:
        parts.append(BackupServerContainer(rig=rig, role="backup", image=backup_image,
                                           aliases=[backup.host]))
    return parts


def start_rig(plan: UpPlan, client: docker.DockerClient,
              images: Images) -> tuple[Rig, TestCAContainer, TryAppliance]:
    """The network, the neighbours, the test CA, then the appliance booting."""
    rig = make_rig(plan.rig_name, client).up()
    try:
        for part in neighbour_parts(rig, images.backup, plan.backup):
            say(f"starting {part.role} …")
            rig.add(part)
        say("starting the test ACME CA (Pebble, with its DNS) …")
        pebble = try_ca.start_test_ca(rig)
        say(f"booting the appliance ({images.appliance}) in container {plan.rig_name}-appliance,"
            f" its ACME directory pointed at {pebble.directory} …")
        appliance = TryAppliance(
            rig=rig, role="appliance", image=images.appliance,
            aliases=[plan.config.appliance.hostname],
            config=try_ca.config_with_test_ca(plan.config_path.read_text(), pebble),
            seed_config=plan.config_path,
            files=try_ca.ca_bundle_file(pebble), published=published_for(plan.config))
        rig.add(appliance)
        try_ca.point_names(pebble, wanted_names(plan.config), appliance)
    except RIG_FAILURES as e:
        say(f"  {describe_removed(take_down(client, plan.rig_name, plan.state_dir))}")
        raise ArkboxError(f"the rig did not start: {e}",
                          hint="run again with --debug; `docker info` must answer") from e
    return rig, pebble, appliance


def after_first_boot(plan: UpPlan, rig: Rig, pebble: TestCAContainer, appliance: TryAppliance,
                     dns_image: str | None) -> Ready:
    """The certificate from the test CA (or the fallback's), the records, the zone."""
    say("waiting for the certificate from the test CA (arkbox-tls-renew) …")
    issued = try_ca.wait_for_certificate(appliance)
    certificate: Path | None
    if issued.ok:
        say(f"  ✓ issued for {issued.detail}")
        certificate = try_ca.save_root(pebble, plan.state_dir)
    else:
        say(f"  ✗ still the fallback certificate: {issued.detail}")
        certificate = copy_certificate(appliance, plan.state_dir)
    dns = installer_dns(appliance, *try_dns.address_options(appliance.ip(4)))
    doctor = None
    if dns_image is not None:
        doctor = start_zone(rig, dns_image, appliance, zone_domains(plan.config),
                            pebble if issued.ok else None)
    return Ready(certificate, issued.ok, dns, doctor)


def cmd_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    plan = UpPlan.from_args(args)
    client = docker_client()
    ready = None

    def remove_all() -> None:
        say("interrupted: removing what arkbox try created …")
        # A fresh connection: the interrupt may have cut one of the old client's mid-request.
        fresh = docker.from_env(timeout=300)
        say(f"  {describe_removed(take_down(fresh, plan.rig_name, plan.state_dir))}")

    with on_interrupt(remove_all):
        images = build_and_import(plan, client)
        rig, pebble, appliance = start_rig(plan, client, images)
        ports = {port: appliance.host_port(port) for port in appliance.published}
        say(published_line(ports))
        say(f"following first boot (journalctl -u {FIRSTBOOT_UNIT}) …")
        outcome = follow_first_boot(appliance, plan.timeout)
        if outcome.ok:
            ready = after_first_boot(plan, rig, pebble, appliance, images.dns)
    return report_up(plan, outcome, ready, ports, time.monotonic() - started)


def report_up(plan: UpPlan, outcome: BootOutcome, ready: Ready | None,
              ports: dict[str, int], total: float) -> int:
    if not outcome.ok or ready is None:
        say(f"✗ {outcome.summary} after {total:.0f} s; the appliance is still up to look at:")
        say(f"  {look_command(plan.rig_name)}")
        say(f"  arkbox try down{rig_option(plan.rig_name, str(plan.out_dir))}  removes it")
        return EXIT_FAILURE
    say(f"ready in {total:.0f} s (first boot {outcome.seconds:.0f} s)")
    for line in next_steps(plan.config, ports, ready.certificate, ready.dns, plan.rig_name,
                           str(plan.out_dir), from_ca=ready.from_ca,
                           login=mail_login(plan.config, plan.config_path),
                           doctor=ready.doctor):
        say(line)
    return EXIT_OK
