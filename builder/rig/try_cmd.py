"""`arkbox try`: see the built appliance work on this machine, in one command.

Builds when out/ is stale (and says why), boots the root fs tar in the rig
(builder/rig.py, the same parts the integration tests use), follows first boot
live from the unit's journal, then says what the operator can do now: HTTPS
URLs on published localhost ports, the certificate to trust, a shell, DNS.
`arkbox try down` (and Ctrl-C, at any point) removes every container, network
and volume the rig created; the imported image stays, as a cache keyed by the
tar's digest.

When the config backs up over ssh://, the rig also runs the backup-server role
under the repository's host name, so first boot goes as on a VPS.

`arkbox try disaster` backs up the running appliance now, destroys it (container
and volumes; the backup server stays), boots a blank one from the same image and
follows it restoring itself (docs/try.md).

The rig also runs a test ACME CA (builder/try_ca.py): the appliance gets a real
certificate from Pebble over ACME, and the operator trusts Pebble's root.
When mail is on, the mail ports are published too, with the first mailbox's login
(its password named by the file it is in, never printed), and once first boot is done
the rig serves the zone `arkbox-installer dns` generates (builder/try_dns.py), so the
mail doctor runs in the appliance against it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import docker
import yaml
from docker.errors import DockerException, NotFound
from docker.models.containers import Container

from builder.pipeline.cache import digest_tree
from builder.pipeline.context import Role
from builder.pipeline.manifest import MANIFEST_NAME
from builder.rig import ca as try_ca
from builder.rig import dns as try_dns
from builder.rig.parts import (
    FIRSTBOOT_STATUS,
    FIRSTBOOT_UNIT,
    RIG_LABEL,
    AppliancePart,
    BackupServerPart,
    JournalFollower,
    Part,
    PebblePart,
    Rig,
    RigError,
    container_running,
    exec_streaming,
    first_boot_state,
    image_from_rootfs_tar,
    remove_container,
    remove_rig,
    wait_until,
)
from firstboot import __version__
from firstboot.certs.certificate import wanted_names
from firstboot.core.config import DEFAULT_CONFIG_PATH, Appliance, config_digest, load_config
from firstboot.core.errors import EXIT_FAILURE, EXIT_OK, ArkboxError, BadInputError

SOURCE_DIR = Path(__file__).resolve().parents[2]
# What a build is made of besides the config: the pipeline, the installer, what is laid in.
SOURCE_PARTS = ("builder", "firstboot", "image", "pyproject.toml")
STAMP_NAME = "try-source.json"  # written by `arkbox try` next to the manifest it built
DEFAULT_RIG = "arkbox-try"
IMAGE_REPOSITORY = "arkbox/appliance"
BACKUP_REPOSITORY = "arkbox/backup-server-role"

STATUS_FILE = FIRSTBOOT_STATUS
RESTORE_FILE = "/var/lib/arkbox/restore.json"  # the restore step's decision
APPLIANCE_CONFIG = "/etc/arkbox/appliance.yaml"
FALLBACK_CHAIN = "/srv/arkbox/tls/live/fullchain.pem"
CERTIFICATE_FILE = "fallback-certificate.pem"
FAILED_PREFIX = "✗ firstboot failed"
# Published on 127.0.0.1 only, each to a free port the engine picks.
PUBLISHED_PORTS = ("80/tcp", "443/tcp", "22/tcp")
MAIL_PORTS = ("25/tcp", "465/tcp", "587/tcp", "993/tcp")  # when mail is on
JOURNAL_POLL_S = 1.0

Say = Callable[[str], None]


def say(line: str = "") -> None:
    """One line to stdout, flushed: the output is followed live, also through a pipe."""
    print(line, flush=True)


# ---------------------------------------------------------------- is out/ stale?


@dataclass(frozen=True)
class BuiltState:
    """What out/ holds, from its build-manifest.json (and the stamp `try` leaves)."""

    name: str
    role: str
    config_file: str
    config_sha256: str
    arkbox_version: str
    rootfs_tar_present: bool
    source_sha256: str | None  # None: built by plain `arkbox build`, sources not recorded


@dataclass(frozen=True)
class CurrentInputs:
    config_file: str
    config_sha256: str
    arkbox_version: str
    source_sha256: str


@dataclass(frozen=True)
class Freshness:
    stale: bool
    reason: str


def decide_freshness(built: BuiltState | None, now: CurrentInputs, out: str,
                     role: str = "appliance") -> Freshness:
    """Whether `out` must be built again for `now`, and why (pure: unit-tested)."""
    if built is None:
        return Freshness(True, f"no build in {out}/ (no {MANIFEST_NAME})")
    if built.role != role:
        return Freshness(True, f"{out}/ holds a build of the {built.role} role, not {role}")
    if not built.rootfs_tar_present:
        return Freshness(True, f"{out}/{built.name}-rootfs.tar is missing")
    if built.config_sha256 != now.config_sha256:
        return Freshness(True, f"the config changed since the build ({built.config_file} "
                               f"sha256 {built.config_sha256[:12]}… → {now.config_file} "
                               f"sha256 {now.config_sha256[:12]}…)")
    if built.arkbox_version != now.arkbox_version:
        return Freshness(True, f"built by arkbox {built.arkbox_version}, this is "
                               f"{now.arkbox_version}")
    if built.source_sha256 is not None and built.source_sha256 != now.source_sha256:
        return Freshness(True, "the arkbox sources (builder/, firstboot/, image/) changed "
                               "since the build")
    if built.source_sha256 is None:
        return Freshness(False, "same config and arkbox version (sources not recorded by "
                                "`arkbox build`; --rebuild to build anyway)")
    return Freshness(False, "same config, arkbox version and sources")


def source_digest(source_dir: Path = SOURCE_DIR) -> str:
    files: list[Path] = []
    for part in SOURCE_PARTS:
        path = source_dir / part
        files += [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return digest_tree(source_dir, [p for p in files if p.exists()])


def read_built_state(out_dir: Path) -> BuiltState | None:
    manifest_path = out_dir / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text())
        name = str(manifest["name"])
        state = BuiltState(
            name=name, role=str(manifest["role"]), config_file=str(manifest["config_file"]),
            config_sha256=str(manifest["config_sha256"]),
            arkbox_version=str(manifest["arkbox_version"]),
            rootfs_tar_present=(out_dir / f"{name}-rootfs.tar").is_file(),
            source_sha256=manifest.get("source_sha256"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if state.source_sha256 is None:
        stamp = _read_stamp(out_dir)
        # The stamp speaks only for the manifest it was written next to.
        if stamp and stamp.get("manifest_sha256") == _sha256(manifest_path):
            state = BuiltState(**{**state.__dict__, "source_sha256": stamp.get("source_sha256")})
    return state


def _read_stamp(out_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out_dir / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_stamp(out_dir: Path, source_sha256: str) -> None:
    stamp = {"source_sha256": source_sha256,
             "manifest_sha256": _sha256(out_dir / MANIFEST_NAME)}
    (out_dir / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n")


def ensure_built(config_path: Path, out_dir: Path, *, rebuild: bool, no_build: bool,
                 role: Role = "appliance", out: Say = say) -> BuiltState:
    """Build into out_dir unless it is up to date for this config and these sources."""
    now = CurrentInputs(str(config_path), config_digest(config_path), __version__,
                        source_digest())
    decision = decide_freshness(read_built_state(out_dir), now, str(out_dir), role)
    if rebuild:
        decision = Freshness(True, "--rebuild")
    if not decision.stale:
        out(f"{out_dir}/ is up to date: {decision.reason}")
    elif no_build:
        out(f"{out_dir}/ is stale ({decision.reason}); using it anyway (--no-build)")
    else:
        out(f"building into {out_dir}/: {decision.reason}")
        from builder.pipeline.build import build

        build(config_path, out_dir, role)
        write_stamp(out_dir, now.source_sha256)
    state = read_built_state(out_dir)
    if state is None or not state.rootfs_tar_present:
        raise ArkboxError(f"{out_dir}/ holds no {role} root fs tar",
                          hint=f"arkbox build {config_path} --role {role} --out {out_dir}")
    return state


# ---------------------------------------------------------------- the rig's parts


def rig_subnets(name: str) -> tuple[str, str]:
    """Private subnets derived from the rig's name: two rigs (try, tests) do not collide."""
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    return f"172.31.{100 + h % 150}.0/24", f"fd42:a7b1:{h % 0xffff:x}::/64"


def make_rig(name: str, client: docker.DockerClient) -> Rig:
    ipv4, ipv6 = rig_subnets(name)
    return Rig(name=name, client=client, ipv4_subnet=ipv4, ipv6_subnet=ipv6)


@dataclass
class TryAppliance(AppliancePart):
    """The appliance as `arkbox try` runs it: ports on localhost, followed from early boot."""

    published: tuple[str, ...] = PUBLISHED_PORTS
    # Host ports to ask for (disaster: the destroyed appliance's); else the engine picks.
    host_ports: dict[str, int] = field(default_factory=dict)

    def run_kwargs(self) -> dict[str, Any]:
        kwargs = super().run_kwargs()
        kwargs["ports"] = {port: ("127.0.0.1", self.host_ports.get(port))
                           for port in self.published}
        return kwargs

    def wait_ready(self) -> None:
        # Ready as soon as systemd (PID 1) answers: first boot's lines are what we
        # follow, from the start, rather than waiting for the rest of the boot.
        wait_until("appliance systemd", self._systemd_answers, 120, interval=1)

    def _systemd_answers(self) -> str | None:
        if (reason := self._running()) is not None:
            return reason
        _, state = self.exec("systemctl", "is-system-running")
        state = state.strip()
        return None if state in {"initializing", "starting", "running", "degraded"} \
            else f"systemd is {state or 'not answering'}"


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


def neighbour_parts(rig: Rig, config: Appliance, backup_image: str | None,
                    backup: BackupServerPlan | None) -> list[Part]:
    """The parts the appliance talks to, started before it.

    The test ACME CA is started by cmd_up itself (it needs the appliance's address), and
    the DNS server with the generated zone once first boot is done (start_zone).
    """
    parts: list[Part] = []
    if backup is not None and backup_image is not None:
        parts.append(BackupServerPart(rig=rig, role="backup", image=backup_image,
                                     aliases=[backup.host]))
    return parts


# ---------------------------------------------------------------- following first boot


@dataclass
class BootOutcome:
    ok: bool
    seconds: float
    summary: str
    lines: list[str] = field(default_factory=list)


def follow_first_boot(appliance: AppliancePart, timeout: float, out: Say = say) -> BootOutcome:
    """Print first boot's lines as they come; stop at the done marker or a failed run."""
    follower = JournalFollower(appliance)
    started = time.monotonic()
    seen: list[str] = []
    failed_at: float | None = None

    def show_new_lines() -> list[str]:
        lines = follower.new_lines()
        for line in lines:
            out(f"  │ {line}")
        seen.extend(lines)
        return lines

    while True:
        lines = show_new_lines()
        elapsed = time.monotonic() - started
        state = first_boot_state(appliance)
        if state == "done":
            show_new_lines()  # the last lines, written just before the marker
            return BootOutcome(True, elapsed, "first boot finished", seen)
        # A failed run says so in its last lines and in status.json (a config that does
        # not load only in status.json); systemd retries it after a pause.
        failed = state == "failed" or any(line.startswith(FAILED_PREFIX) for line in lines)
        if failed_at is None and failed:
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > 2 * JOURNAL_POLL_S:
            return BootOutcome(False, elapsed, "first boot failed (it retries by itself)", seen)
        if not container_running(appliance):
            return BootOutcome(False, elapsed, "the appliance container stopped", seen)
        if elapsed > timeout:
            return BootOutcome(False, elapsed, f"first boot not done after {timeout:.0f} s",
                               seen)
        time.sleep(JOURNAL_POLL_S)


# ---------------------------------------------------------------- what to do now


@dataclass(frozen=True)
class Route:
    service: str
    hostname: str
    path: str


def routes_of(config: Appliance) -> list[Route]:
    routes = []
    for name, service in config.services.items():
        if service.route is not None:
            routes.append(Route(name, service.route.hostname, service.route.path or "/"))
    return sorted(routes, key=lambda r: (r.hostname, r.path))


def curl_example(route: Route, port: int, certificate: Path) -> str:
    url = f"https://{route.hostname}:{port}{route.path}"
    return shlex.join(["curl", "--resolve", f"{route.hostname}:{port}:127.0.0.1",
                       "--cacert", str(certificate), url])


def published_for(config: Appliance) -> tuple[str, ...]:
    """The container ports `try` publishes on 127.0.0.1 for this config."""
    return PUBLISHED_PORTS + (MAIL_PORTS if config.mail.enabled else ())


@dataclass(frozen=True)
class MailLogin:
    address: str
    password: str  # where the password is (a file, a variable): never the password


def mail_login(config: Appliance, config_path: Path) -> MailLogin | None:
    """The first mailbox of the config, its password named by where it comes from (pure)."""
    if not config.mail.enabled or not config.mail.mailboxes:
        return None
    box = config.mail.mailboxes[0]
    ref = box.password
    if ref is not None and ref.file:
        path = Path(ref.file)
        where = str(path if path.is_absolute() else config_path.parent / path)
    elif ref is not None and ref.env:
        where = f"${ref.env}"
    else:
        where = "(only its hash is in the config: the password you hashed)"
    return MailLogin(str(box.address), where)


def imaps_example(login: MailLogin, hostname: str, port: int, certificate: Path) -> str:
    """Log in over IMAPS with openssl, the certificate verified for the mail host name; the
    password is read from its file by the shell, never shown."""
    password = (f'"$(cat {shlex.quote(login.password)})"' if not login.password.startswith("$")
                else f'"{login.password}"')
    commands = r'a LOGIN %s "%s"\r\na SELECT INBOX\r\na LOGOUT\r\n'
    return (f"printf '{commands}' {shlex.quote(login.address)} {password} | "
            + shlex.join(["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{port}",
                          "-servername", hostname, "-verify_hostname", hostname,
                          "-verify_return_error", "-CAfile", str(certificate)]))


def mail_lines(config: Appliance, ports: dict[str, int], login: MailLogin | None,
               certificate: Path | None) -> list[str]:
    """The mail ports and the test mailbox's login (pure)."""
    hostname = config.mail.hostname
    wanted = [("SMTP", "25/tcp", "inbound, STARTTLS"), ("SMTPS", "465/tcp", "submission, TLS"),
              ("Submission", "587/tcp", "STARTTLS"), ("IMAPS", "993/tcp", "TLS")]
    shown = [(kind, ports[port], note) for kind, port, note in wanted if port in ports]
    if not config.mail.enabled or not hostname or not shown:
        return []
    lines = [f"  Mail ({hostname}, published on this machine's 127.0.0.1):"]
    for kind, port, note in shown:
        lines.append(f"    {kind:<10}  127.0.0.1:{port}   ({note})")
    imaps = ports.get("993/tcp")
    if login is not None:
        lines.append(f"  Test mailbox: user {login.address}, password in {login.password}")
        if imaps is not None and certificate is not None:
            lines.append(f"  Read its INBOX over IMAPS (openssl checks the certificate against "
                         f"{certificate}):")
            lines.append(f"    {imaps_example(login, hostname, imaps, certificate)}")
    lines.append("")
    return lines


def next_steps(config: Appliance, ports: dict[str, int], certificate: Path | None,
               dns: str | None, rig_name: str, out_dir: str = "out", *,
               from_ca: bool = False, login: MailLogin | None = None,
               doctor: str | None = None) -> list[str]:
    """The screen after a successful first boot (pure: the tests read it)."""
    https, http, ssh = ports.get("443/tcp"), ports.get("80/tcp"), ports.get("22/tcp")
    lines = ["", "What you can do now:", ""]
    routes = routes_of(config)
    if https is not None and routes:
        lines.append("  Web (HTTPS, published on this machine's 127.0.0.1):")
        width = max(len(r.service) for r in routes)
        for route in routes:
            lines.append(f"    {route.service:<{width}}  https://{route.hostname}:{https}"
                         f"{route.path}")
        if certificate is not None and from_ca:
            lines.append("  It serves a certificate from the rig's test ACME CA (Pebble); "
                         f"its root, to trust: {certificate}.")
        elif certificate is not None:
            lines.append("  It serves its self-signed fallback certificate (the test CA did "
                         f"not issue one in time), copied to {certificate}.")
        if certificate is not None:
            lines.append("  The names do not resolve on this machine; curl maps them and "
                         "trusts that file:")
            for route in routes:
                lines.append(f"    {curl_example(route, https, certificate)}")
        if http is not None:
            lines.append(f"  HTTP: 127.0.0.1:{http} (redirects to HTTPS)")
        lines.append("  In a browser: add \"127.0.0.1 "
                     + " ".join(r.hostname for r in routes)
                     + "\" to /etc/hosts and open the URL above"
                     + (" (import the test CA's root above as an authority, or accept the "
                        "warning)." if from_ca else ", accepting the certificate."))
        lines.append("")
    lines += mail_lines(config, ports, login, certificate)
    lines.append(f"  Shell:   arkbox try ssh{_rig_option(rig_name)}   (root, via docker exec)")
    if ssh is not None:
        lines.append(f"           ssh -p {ssh} {config.appliance.admin.user}@127.0.0.1   "
                     "(with the config's admin key)")
    lines.append(f"  Status:  arkbox try ssh{_rig_option(rig_name)}, then: arkbox-installer "
                 "status")
    if dns:
        lines.append("  DNS records to publish (arkbox-installer dns):")
        lines += [f"    {line}" for line in dns.splitlines() if line.strip()]
    if doctor:
        lines.append("  Mail doctor, against the rig's DNS serving those records (DNS blocklists "
                     "and outbound port 25 cannot be checked in the rig: warnings):")
        lines.append(f"    {doctor}")
    lines.append(f"  Stop:    arkbox try down{_rig_option(rig_name, out_dir)}   "
                 "(removes its containers, networks, volumes)")
    return lines


def _rig_option(rig_name: str, out_dir: str = "out") -> str:
    """The options that name this rig (and, for down, its files) again."""
    rig = "" if rig_name == DEFAULT_RIG else f" --rig {rig_name}"
    out = "" if Path(out_dir) == Path("out") else f" --out {shlex.quote(out_dir)}"
    return rig + out


def installer_dns(appliance: AppliancePart, *options: str) -> str | None:
    """`arkbox-installer dns` in the appliance, when this installer has that command."""
    code, help_text = appliance.exec("arkbox-installer", "--help")
    if code != 0 or "dns" not in help_text.split():
        return None
    code, text = appliance.exec("arkbox-installer", "dns", *options)
    return text.strip() if code == 0 and text.strip() else None


def copy_certificate(appliance: AppliancePart, state_dir: Path) -> Path | None:
    code, text = appliance.exec("cat", FALLBACK_CHAIN)
    if code != 0 or "BEGIN CERTIFICATE" not in text:
        return None
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / CERTIFICATE_FILE
    path.write_text(text)
    return path


# ---------------------------------------------------------------- the actions


def state_dir_for(out_dir: Path, rig_name: str) -> Path:
    """Files `try` hands the operator (the certificate): removed by `down`."""
    return out_dir / rig_name


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except DockerException as e:
        raise ArkboxError(f"no Docker Engine answers: {e}",
                          hint="start dockerd (scripts/setup does), then run arkbox try again"
                          ) from e
    return client


def rig_objects(client: docker.DockerClient, rig_name: str) -> dict[str, int]:
    label: dict[str, str | list[str] | bool] = {"label": f"{RIG_LABEL}={rig_name}"}
    return {
        "containers": len(client.containers.list(all=True, filters=label)),
        "networks": len(client.networks.list(filters=label)),
        "volumes": len(client.volumes.list(filters=label)),
    }


def take_down(client: docker.DockerClient, rig_name: str,
              state_dir: Path | None) -> dict[str, int]:
    """Remove every container, volume and network labelled as this rig's, and its files."""
    removed = remove_rig(client, rig_name)
    if state_dir is not None and state_dir.is_dir():
        shutil.rmtree(state_dir)
    return removed


def describe_removed(removed: dict[str, int]) -> str:
    if not any(removed.values()):
        return "nothing to remove"
    parts = [f"{n} {kind[:-1] if n == 1 else kind}" for kind, n in removed.items()]
    return "removed " + ", ".join(parts)


@contextmanager
def cleanup_on_interrupt(rig_name: str, state_dir: Path) -> Iterator[None]:
    """Ctrl-C (or SIGTERM) anywhere inside: take the rig down, then let the interrupt go on."""

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except KeyboardInterrupt:
        # A second Ctrl-C must not leave the clean-up half done.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("")
        say("interrupted: removing what arkbox try created …")
        # A fresh connection: the interrupt may have cut one of the old client's mid-request.
        fresh = docker.from_env(timeout=300)
        say(f"  {describe_removed(take_down(fresh, rig_name, state_dir))}")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    config_path = Path(args.target or DEFAULT_CONFIG_PATH)
    out_dir = Path(args.out)
    rig_name = str(args.rig)
    state_dir = state_dir_for(out_dir, rig_name)
    config = load_config(config_path)
    client = docker_client()
    certificate: Path | None = None
    from_ca = False
    dns: str | None = None
    doctor: str | None = None
    published = published_for(config)
    with cleanup_on_interrupt(rig_name, state_dir):
        built = ensure_built(config_path, out_dir, rebuild=args.rebuild, no_build=args.no_build)
        backup = plan_backup_server(config, args, out_dir)
        backup_built = None
        if backup is not None:
            say(f"the backup repository is on {backup.host}: the rig runs the backup-server "
                f"role ({backup.config}) there")
            backup_built = ensure_built(backup.config, backup.out, rebuild=args.rebuild,
                                        no_build=args.no_build, role="backup-server")
        left = take_down(client, rig_name, state_dir)
        if any(left.values()):
            say(f"an earlier `arkbox try` was still up: {describe_removed(left)}")
        tar = out_dir / f"{built.name}-rootfs.tar"
        say(f"importing {tar} (once per build) …")
        image = image_from_rootfs_tar(client, tar, IMAGE_REPOSITORY)
        backup_image = None
        if backup is not None and backup_built is not None:
            backup_image = image_from_rootfs_tar(
                client, backup.out / f"{backup_built.name}-rootfs.tar", BACKUP_REPOSITORY)
        dns_image = None
        if config.mail.enabled:
            say("the DNS server's image (nsd, rig-internet: built once, cached) …")
            dns_image = try_dns.dns_image()
        rig = make_rig(rig_name, client).up()
        try:
            for part in neighbour_parts(rig, config, backup_image, backup):
                say(f"starting {part.role} …")
                rig.add(part)
            say("starting the test ACME CA (Pebble, with its DNS) …")
            pebble = try_ca.start_test_ca(rig)
            say(f"booting the appliance ({image}) in container {rig_name}-appliance, its ACME "
                f"directory pointed at {pebble.directory} …")
            appliance = TryAppliance(
                rig=rig, role="appliance", image=image, aliases=[config.appliance.hostname],
                config=try_ca.config_with_test_ca(config_path.read_text(), pebble),
                files=try_ca.ca_bundle_file(pebble), published=published)
            rig.add(appliance)
            try_ca.point_names(pebble, wanted_names(config), appliance)
        except (RigError, DockerException) as e:
            say(f"  {describe_removed(take_down(client, rig_name, state_dir))}")
            raise ArkboxError(f"the rig did not start: {e}",
                              hint="run again with --debug; `docker info` must answer") from e
        ports = {port: appliance.host_port(port) for port in published}
        say("published on 127.0.0.1: " + " · ".join(
            f"{port.split('/')[0]} → {host}" for port, host in ports.items()))
        say(f"following first boot (journalctl -u {FIRSTBOOT_UNIT}) …")
        outcome = follow_first_boot(appliance, args.timeout)
        if outcome.ok:
            say("waiting for the certificate from the test CA (arkbox-tls-renew) …")
            issued = try_ca.wait_for_certificate(appliance)
            if issued.ok:
                say(f"  ✓ issued for {issued.detail}")
                certificate = try_ca.save_root(pebble, state_dir)
            else:
                say(f"  ✗ still the fallback certificate: {issued.detail}")
                certificate = copy_certificate(appliance, state_dir)
            from_ca = issued.ok
            ipv4 = appliance.ip(4)
            dns = installer_dns(appliance, *try_dns.address_options(ipv4))
            if dns_image is not None:
                doctor = start_zone(rig, dns_image, appliance,
                                    [*config.mail.domains, config.appliance.hostname],
                                    pebble if from_ca else None)
    total = time.monotonic() - started
    if not outcome.ok:
        say(f"✗ {outcome.summary} after {total:.0f} s; the appliance is still up to look at:")
        say(f"  arkbox try ssh{_rig_option(rig_name)}   then: journalctl -u {FIRSTBOOT_UNIT}; "
            "arkbox-installer status")
        say(f"  arkbox try down{_rig_option(rig_name, str(out_dir))}  removes it")
        return EXIT_FAILURE
    say(f"ready in {total:.0f} s (first boot {outcome.seconds:.0f} s)")
    for line in next_steps(config, ports, certificate, dns, rig_name, str(out_dir),
                           from_ca=from_ca, login=mail_login(config, config_path),
                           doctor=doctor):
        say(line)
    return EXIT_OK


def start_zone(rig: Rig, image: str, appliance: AppliancePart, domains: list[str],
               pebble: PebblePart | None) -> str | None:
    """The rig's DNS serving the appliance's zone; the command that runs the doctor
    against it (None, said why, when it did not start: the rest of the box works)."""
    say("starting the DNS server with the zone arkbox-installer dns generates (nsd) …")
    try:
        dns = try_dns.start_dns(rig, image, appliance, domains)
        ca_file = try_dns.give_ca_root(appliance, pebble.root_pem()) if pebble else None
    except (RigError, DockerException, ValueError, KeyError) as e:
        say(f"  ✗ the DNS server did not start: {e}")
        return None
    say(f"  ✓ serving it at {dns.ip(4)}")
    return try_dns.doctor_command(appliance.name, dns.ip(4), appliance.ip(4), ca_file)


def cmd_down(args: argparse.Namespace) -> int:
    client = docker_client()
    removed = take_down(client, args.rig, state_dir_for(Path(args.out), args.rig))
    say(f"{args.rig}: {describe_removed(removed)}")
    return EXIT_OK


def cmd_ssh(args: argparse.Namespace) -> int:
    name = f"{args.rig}-appliance"
    client = docker_client()
    try:
        client.containers.get(name)
    except NotFound:
        raise ArkboxError(f"no appliance is running in the rig {args.rig}",
                          hint="start one: arkbox try") from None
    tty = ["-it"] if sys.stdin.isatty() else ["-i"]
    # Replaces this process: the shell owns the terminal, its exit code is ours.
    os.execvp("docker", ["docker", "exec", *tty, name, "bash", "-l"])  # noqa: S606
    return EXIT_FAILURE  # not reached


def cmd_status(args: argparse.Namespace) -> int:
    client = docker_client()
    label: dict[str, str | list[str] | bool] = {"label": f"{RIG_LABEL}={args.rig}"}
    parts = []
    for container in client.containers.list(all=True, filters=label):
        ports = {port: int(b[0]["HostPort"])
                 for port, b in (container.attrs["NetworkSettings"]["Ports"] or {}).items() if b}
        entry: dict[str, Any] = {"name": container.name, "status": container.status,
                                 "ports": ports}
        if container.labels.get("arkbox.rig.role") == "appliance" and \
                container.status == "running":
            code, text = container.exec_run(["cat", STATUS_FILE])
            if code == 0 and isinstance(text, bytes):
                first_boot = json.loads(text)
                entry["first_boot"] = first_boot.get("result")
        parts.append(entry)
    if args.json:
        say(json.dumps({"rig": args.rig, "parts": parts, **rig_objects(client, args.rig)},
                       indent=2))
        return EXIT_OK
    if not parts:
        say(f"{args.rig}: not running (start it: arkbox try)")
        return EXIT_OK
    for entry in parts:
        ports_text = " ".join(f"{p.split('/')[0]}→{h}" for p, h in entry["ports"].items())
        boot = f" · first boot {entry['first_boot']}" if "first_boot" in entry else ""
        say(f"{entry['name']}: {entry['status']}{boot} · {ports_text or 'no ports'}")
    return EXIT_OK


# ---------------------------------------------------------------- disaster

EXIT_INTERRUPTED = 130
# The line `arkbox-installer backup` ends with: "NAME-STAMP: 1234 files, ...".
BACKUP_SUMMARY = re.compile(r"^(?P<archive>\S+): \d+ files, ")


@dataclass(frozen=True)
class RigFound:
    """The containers of a `try` rig, by role, as `disaster` finds them."""

    appliance_status: str | None  # the container's status; None: no appliance container
    backup_status: str | None
    first_boot: str | None  # done | failed | running (None: not asked)


def disaster_refusal(rig_name: str, found: RigFound) -> BadInputError | None:
    """Why `try disaster` cannot start on this rig (nothing was changed), or None (pure)."""
    rig = _rig_option(rig_name)
    if found.appliance_status is None:
        return BadInputError(f"no `arkbox try` appliance in the rig {rig_name}: nothing to "
                             "destroy", hint=f"start one: arkbox try{rig}, then: "
                                             f"arkbox try disaster{rig}")
    if found.appliance_status != "running":
        return BadInputError(f"the appliance {rig_name}-appliance is {found.appliance_status}",
                             hint=f"start it again: arkbox try{rig}")
    if found.backup_status != "running":
        state = "is " + found.backup_status if found.backup_status else "is not in the rig"
        return BadInputError(
            f"the backup server {state}: a destroyed appliance would have nothing to "
            "restore from", hint="disaster needs a config that backs up over ssh:// (the "
            "rig then runs the backup server): see docs/try.md")
    if found.first_boot != "done":
        return BadInputError(f"the appliance's first boot has not finished ({found.first_boot})"
                             ": a backup now would not hold a working box",
                             hint=f"wait for it (arkbox try status{rig}), or look: "
                                  f"arkbox try ssh{rig}, then journalctl -u {FIRSTBOOT_UNIT}")
    return None


def backup_progress(line: str) -> str | None:
    """A line of `arkbox-installer backup -v` as the operator follows it live (pure): the
    commands it runs, shortened (`borg create ARCHIVE`, `docker pause SERVICE`), failures,
    and everything it says above debug level; None for the rest (env, `exit 0`)."""
    if not line.startswith("DEBUG "):
        return line
    message = line.partition(": ")[2].strip()
    if message.startswith("run: "):
        words = message.removeprefix("run: ").split()
        archive = next((w.removeprefix("::") for w in words if w.startswith("::")), None)
        if archive is None and "--glob-archives" in words[:-1]:
            archive = words[words.index("--glob-archives") + 1]
        if archive is not None:
            return f"{' '.join(words[:2])} {archive}"
        command = " ".join(words)
        return command if len(command) <= 90 else command[:89] + "…"
    if message.startswith("exit ") and message != "exit 0":
        return message
    return None


def archive_of_backup(lines: list[str]) -> str | None:
    """The archive `arkbox-installer backup` reported making (its summary line)."""
    for line in reversed(lines):
        if match := BACKUP_SUMMARY.match(line.strip()):
            return match["archive"]
    return None


@dataclass(frozen=True)
class RestoreResult:
    mode: str
    archive: str | None
    reason: str
    health: str | None


def restore_result(restore_json: str, status_json: str) -> RestoreResult:
    """What first boot decided and restored (restore.json), and the health step's summary."""
    try:
        decision = json.loads(restore_json)
    except ValueError:
        decision = {}
    try:
        status = json.loads(status_json)
    except ValueError:
        status = {}
    steps = status.get("steps", []) if isinstance(status, dict) else []
    health = next((str(s.get("summary")) for s in steps if s.get("name") == "health"), None)
    decision = decision if isinstance(decision, dict) else {}
    return RestoreResult(str(decision.get("mode", "unknown")), decision.get("archive"),
                         str(decision.get("reason", "no restore decision recorded")), health)


def disaster_report(result: RestoreResult, made: str | None, healthy_s: float,
                    first_boot_s: float, total_s: float) -> list[str]:
    """The screen after a successful disaster run (pure: the tests read it)."""
    if made is None:
        which = " (the backup made above did not name its archive)"
    elif result.archive == made:
        which = " — the backup made above"
    else:
        which = f" — NOT the backup made above ({made})"
    lines = [f"✓ restored {result.archive}{which}"]
    if result.health:
        lines.append(f"  health: {result.health}")
    lines.append(f"blank boot to all healthy: {healthy_s:.0f} s (first boot {first_boot_s:.0f}"
                 f" s) · whole run {total_s:.0f} s")
    return lines


def rig_containers(client: docker.DockerClient, rig_name: str) -> dict[str, Container]:
    """The rig's containers by role (appliance, backup)."""
    label: dict[str, str | list[str] | bool] = {"label": f"{RIG_LABEL}={rig_name}"}
    return {str(c.labels.get("arkbox.rig.role")): c
            for c in client.containers.list(all=True, filters=label)}


def published_ports(container: Container) -> dict[str, int]:
    return {port: int(bindings[0]["HostPort"])
            for port, bindings in (container.attrs["NetworkSettings"]["Ports"] or {}).items()
            if bindings}


@contextmanager
def interrupt_leaves_rig(rig_name: str, out_dir: Path, phase: list[str]) -> Iterator[None]:
    """Ctrl-C (or SIGTERM): stop watching and say what state the rig is in; everything in
    it is labelled, so `arkbox try down` removes all of it."""

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        say("")
        say(f"interrupted while {phase[-1]}: the rig is left as it is "
            f"({_PHASE_STATE.get(phase[-1], 'see arkbox try status')}).")
        say(f"  arkbox try status{_rig_option(rig_name)}   shows it · "
            f"arkbox try down{_rig_option(rig_name, str(out_dir))}   removes all of it")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


_PHASE_STATE = {
    "backing up": "nothing was destroyed; the backup goes on inside the appliance",
    "destroying the appliance": "the appliance may be half removed",
    "booting the blank appliance": "the blank appliance goes on with its first boot by itself",
    "following the restore": "the blank appliance goes on restoring by itself",
}


def cmd_disaster(args: argparse.Namespace) -> int:
    """Back up now, destroy the appliance (not the backup server), boot a blank one from the
    same image and follow it restoring itself."""
    started = time.monotonic()
    rig_name, out_dir = str(args.rig), Path(args.out)
    client = docker_client()
    found = rig_containers(client, rig_name)
    old, server = found.get("appliance"), found.get("backup")
    pebble_container = found.get(try_ca.ROLE)
    dns_container = found.get(try_dns.ROLE)
    state = RigFound(old.status if old else None, server.status if server else None, None)
    if old is not None and state.appliance_status == "running":
        part = AppliancePart(rig=make_rig(rig_name, client), role="appliance", image="",
                             container=old)
        state = RigFound(state.appliance_status, state.backup_status, first_boot_state(part))
    if (refusal := disaster_refusal(rig_name, state)) is not None:
        raise refusal
    assert old is not None and server is not None
    image = str(old.attrs["Config"]["Image"])
    hostname = str(old.attrs["Config"]["Hostname"])
    ports = published_ports(old)
    rig = make_rig(rig_name, client)
    phase = ["backing up"]
    say(f"arkbox try disaster · rig {rig_name} · appliance {image} · backups to "
        f"{server.attrs['Config']['Hostname']} ({server.name}, it stays)")
    with interrupt_leaves_rig(rig_name, out_dir, phase):
        say("1/3 backing up now (arkbox-installer backup, in the appliance) …")
        old_part = AppliancePart(rig=rig, role="appliance", image=image, container=old)
        output: list[str] = []

        def show(line: str) -> None:
            output.append(line)
            if (shown := backup_progress(line)) is not None:
                say(f"  │ {shown}")

        code = exec_streaming(old_part, ["arkbox-installer", "backup", "-v"], show)
        if code != 0:
            raise ArkboxError(f"the backup failed (arkbox-installer backup exited {code}); "
                              "nothing was destroyed",
                              hint=f"look: arkbox try ssh{_rig_option(rig_name)}, then "
                                   "arkbox-installer backup --debug; arkbox-installer status")
        made = archive_of_backup(output)
        say(f"  ✓ backed up{f': {made}' if made else ''}")
        # The blank box boots as this one did: the same config (pointed at the rig's
        # test CA) and CA bundle, and the CA's DNS then points its names at it.
        kept = kept_files(old_part)
        info = old_part.read_json(try_ca.CERTIFICATE_INFO)
        names = [str(n) for n in info.get("names", [])] if isinstance(info, dict) else []

        phase.append("destroying the appliance")
        say(f"2/3 destroying the appliance: container {old.name} and its volumes "
            "(the backup server stays) …")
        removed = remove_container(client, old)
        say(f"  ✓ {describe_removed(removed)}")
        # The copy belonged to the destroyed box; the restored one's replaces it.
        (state_dir_for(out_dir, rig_name) / CERTIFICATE_FILE).unlink(missing_ok=True)

        phase.append("booting the blank appliance")
        say(f"3/3 booting a blank appliance from the same image ({image}: the same config and "
            "passphrase) …")
        blank_started = time.monotonic()
        appliance = start_blank_appliance(rig, image, hostname, ports, kept,
                                          tuple(ports) or PUBLISHED_PORTS)
        pebble = None
        if pebble_container is not None and try_ca.CA_BUNDLE_PATH in kept:
            pebble = try_ca.existing_test_ca(rig, pebble_container,
                                             kept[try_ca.CA_BUNDLE_PATH][0])
        if pebble is not None:
            try_ca.point_names(pebble, names, appliance)
        now_ports = {port: appliance.host_port(port) for port in appliance.published}
        same = " (the same as before)" if now_ports == ports else ""
        say("  published on 127.0.0.1: " + " · ".join(
            f"{port.split('/')[0]} → {host}" for port, host in now_ports.items()) + same)
        phase.append("following the restore")
        say(f"  following first boot (journalctl -u {FIRSTBOOT_UNIT}) …")
        outcome = follow_first_boot(appliance, args.timeout)
        healthy_s = time.monotonic() - blank_started
        result = restore_result(appliance.exec("cat", RESTORE_FILE)[1],
                                appliance.exec("cat", STATUS_FILE)[1])
        certificate = None
        from_ca = False
        if outcome.ok and pebble is not None and try_ca.wait_for_certificate(appliance).ok:
            certificate = try_ca.save_root(pebble, state_dir_for(out_dir, rig_name))
            from_ca = True
        elif outcome.ok:
            certificate = copy_certificate(appliance, state_dir_for(out_dir, rig_name))
        config_text = appliance.exec("cat", APPLIANCE_CONFIG)[1]
        routes = routes_in_yaml(config_text)
        doctor = None
        if outcome.ok and dns_container is not None:
            # The zone names the destroyed box's address and DKIM key: serve the restored one's.
            phase.append("serving the restored box's zone")
            dns_image = str(dns_container.attrs["Config"]["Image"])
            remove_container(client, dns_container)
            doctor = start_zone(rig, dns_image, appliance, zone_domains_in_yaml(config_text),
                                pebble if from_ca else None)
    look = (f"  the blank appliance is still up to look at: arkbox try ssh{_rig_option(rig_name)}"
            f"   then: journalctl -u {FIRSTBOOT_UNIT}; arkbox-installer status")
    if not outcome.ok:
        say(f"✗ the restore did not finish: {outcome.summary} ({healthy_s:.0f} s after the "
            f"blank boot); restore decision: {result.mode} {result.reason}")
        say(look)
        return EXIT_FAILURE
    if result.mode != "RESTORE":
        say(f"✗ the blank appliance started {result.mode}, it restored nothing: {result.reason}")
        say(look)
        return EXIT_FAILURE
    for line in disaster_report(result, made, healthy_s, outcome.seconds,
                                time.monotonic() - started):
        say(line)
    for line in after_disaster(routes, now_ports, same != "", certificate, rig_name,
                               str(out_dir), doctor=doctor):
        say(line)
    return EXIT_OK


def routes_in_yaml(text: str) -> list[Route]:
    """The routes of a config as the appliance holds it (for display: no validation)."""
    try:
        data = yaml.safe_load(text)
        services = data.get("services") or {}
        routes = [Route(str(name), str(s["route"]["hostname"]), str(s["route"].get("path") or "/"))
                  for name, s in services.items() if isinstance(s, dict) and s.get("route")]
    except (yaml.YAMLError, AttributeError, KeyError, TypeError):
        return []
    return sorted(routes, key=lambda r: (r.hostname, r.path))


def zone_domains_in_yaml(text: str) -> list[str]:
    """The mail domains and the appliance's host name of a config as the appliance holds
    it: the zones the rig's DNS serves (for the rig: no validation)."""
    try:
        data = yaml.safe_load(text)
        domains = [str(d) for d in (data.get("mail") or {}).get("domains") or []]
        hostname = (data.get("appliance") or {}).get("hostname")
    except (yaml.YAMLError, AttributeError, TypeError):
        return []
    return domains + ([str(hostname)] if hostname else [])


def after_disaster(routes: list[Route], ports: dict[str, int], same_ports: bool,
                   certificate: Path | None, rig_name: str, out_dir: str, *,
                   doctor: str | None = None) -> list[str]:
    """What to do with the restored appliance (pure)."""
    https = ports.get("443/tcp")
    lines = [""]
    if https is not None and routes:
        again = "the same as before" if same_ports else "a NEW port: the URLs changed"
        lines.append(f"  Web (127.0.0.1, {again}):")
        lines += [f"    https://{r.hostname}:{https}{r.path}" for r in routes]
        if certificate is not None:
            lines.append(f"    its certificate (restored with the data): {certificate}")
    lines.append(f"  Shell:   arkbox try ssh{_rig_option(rig_name)}   then: "
                 "arkbox-installer status")
    if doctor:
        lines.append("  Mail doctor, against the rig's DNS (now serving the restored box's "
                     "zone):")
        lines.append(f"    {doctor}")
    lines.append(f"  Stop:    arkbox try down{_rig_option(rig_name, out_dir)}")
    return lines


def kept_files(appliance: AppliancePart) -> dict[str, tuple[bytes, int]]:
    """What `try` laid into the appliance beside the image: its config and the CA bundle."""
    files: dict[str, tuple[bytes, int]] = {}
    for path in (APPLIANCE_CONFIG, try_ca.CA_BUNDLE_PATH):
        code, text = appliance.exec("cat", path)
        if code == 0:
            files[path] = (text.encode(), 0o600)
    return files


def start_blank_appliance(rig: Rig, image: str, hostname: str, ports: dict[str, int],
                          files: dict[str, tuple[bytes, int]],
                          published: tuple[str, ...] = PUBLISHED_PORTS) -> TryAppliance:
    """A blank appliance from `image`, on the old host ports when they are still free."""
    try:
        return _add_appliance(rig, image, hostname, ports, files, published)
    except DockerException as e:
        if not ports or not any(t in str(e) for t in ("already allocated", "already in use")):
            raise ArkboxError(f"the blank appliance did not start: {e}",
                              hint="run again with --debug; `docker info` must answer; "
                                   "arkbox try down removes what is left") from e
        say(f"  the old host ports are taken now ({e}); the engine picks new ones")
        with suppress(NotFound):  # created, not started: made again below
            rig.client.containers.get(f"{rig.name}-appliance").remove(force=True)
        return start_blank_appliance(rig, image, hostname, {}, files, published)


def _add_appliance(rig: Rig, image: str, hostname: str, ports: dict[str, int],
                   files: dict[str, tuple[bytes, int]],
                   published: tuple[str, ...]) -> TryAppliance:
    appliance = TryAppliance(rig=rig, role="appliance", image=image, aliases=[hostname],
                             host_ports=ports, files=dict(files), published=published)
    rig.add(appliance)
    return appliance


ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "down": cmd_down, "ssh": cmd_ssh, "status": cmd_status, "disaster": cmd_disaster,
}


def run_try(args: argparse.Namespace) -> int:
    """`arkbox try [CONFIG]`, or one of its actions (down, ssh, status)."""
    action = ACTIONS.get(args.target or "")
    if action is not None:
        return action(args)
    return cmd_up(args)
