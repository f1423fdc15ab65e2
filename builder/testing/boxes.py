"""The build, the rig and the box behind the plugin's fixtures: the one module of
builder.testing that uses the rig (builder.rig), so a change of the rig's classes is made
here only.

Everything is what `arkbox try` does, called as functions: `ensure_built` (build only
when out/ is stale), `build_and_import` and `start_rig` (the network, the backup server
when the config backs up over ssh://, the test ACME CA, the appliance), `follow_first_boot`
and `after_first_boot` (the certificate from the test CA, the zone when mail is on), the
pieces of `arkbox try disaster`, and `take_down` (everything labelled as the rig's).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker

from builder.rig.disaster import RESTORE_FILE, back_up, find_rig, read_old_box, restore
from builder.rig.freshness import ensure_built
from builder.rig.journal_follow import BootOutcome, follow_first_boot
from builder.rig.network import Rig
from builder.rig.parts import BOX, ApplianceContainer, BackupServerContainer
from builder.rig.pebble import TestCAContainer
from builder.rig.removal import remove_container
from builder.rig.screens import Say, describe_removed, say
from builder.rig.try_rig import (
    CERTIFICATE_FILE,
    TryAppliance,
    docker_client,
    on_interrupt,
    rig_containers,
    state_dir_for,
    take_down,
)
from builder.rig.up import (
    BackupServerPlan,
    Images,
    Ready,
    UpPlan,
    after_first_boot,
    backup_server_host,
    build_and_import,
    start_rig,
)
from builder.testing import https
from firstboot.core.config import Appliance, load_config
from firstboot.core.errors import ArkboxError
from firstboot.core.interrupts import terminate_as_interrupt

BORG_HOME = "/srv/borg"  # on the backup server: ./NAME in a repository URL is below it
INSTALLER_TIMEOUT_S = 900


class FirstBootFailed(ArkboxError):
    """First boot ended in a failed run (or did not end in time): which step, and why."""


class CommandFailed(ArkboxError):
    """A command run in a box of the rig exited non-zero."""


@dataclass(frozen=True)
class Built:
    """One config's build: what `arkbox_build` gives a test."""

    config_path: Path
    config: Appliance
    out: Path
    name: str
    backup_server: BackupServerPlan | None  # the backup-server role's build, when ssh://
    seconds: float  # how long making sure it is built took (0-ish when it was fresh)

    @property
    def rootfs_tar(self) -> Path:
        return self.out / f"{self.name}-rootfs.tar"

    @property
    def manifest(self) -> Path:
        return self.out / "build-manifest.json"


def build(config_path: Path, out_dir: Path, backup_server_config: Path, *, rebuild: bool,
          no_build: bool, out: Say = say) -> Built:
    """Build the config (and its backup server when it backs up over ssh://) unless out/
    is fresh for it: the same check `arkbox try` makes."""
    started = time.monotonic()
    config = load_config(config_path)
    state = ensure_built(config_path, out_dir, rebuild=rebuild, no_build=no_build, out=out)
    host = backup_server_host(config)
    server = None
    if host is not None:
        server = BackupServerPlan(host, backup_server_config, out_dir / "backup-server")
        ensure_built(server.config, server.out, rebuild=rebuild, no_build=no_build,
                     role="backup-server", out=out)
    return Built(config_path, config, out_dir, state.name, server, time.monotonic() - started)


def first_boot_failure(status: Any, outcome: BootOutcome, name: str) -> FirstBootFailed:
    """The error for a first boot that failed: each failing step with its message, from
    status.json, else the journal's last lines (pure: unit-tested)."""
    failures = status.get("failures") if isinstance(status, dict) else None
    steps = "; ".join(f"step {f.get('step')}: {f.get('message')}"
                      for f in failures or [] if isinstance(f, dict))
    detail = steps or " / ".join(outcome.lines[-5:]) or "no status.json, no journal lines"
    return FirstBootFailed(
        f"first boot of {name} failed — {detail} ({outcome.summary}, after "
        f"{outcome.seconds:.0f} s)",
        hint=f"its journal: docker exec {name} journalctl -u arkbox-firstboot; run pytest "
             "with --arkbox-keep to leave the box up to look at")


def engine_missing() -> str | None:
    """Why no Docker Engine answers, or None when one does."""
    try:
        docker_client()
    except ArkboxError as e:
        return e.message
    return None


@contextmanager
def shielded() -> Iterator[None]:
    """A clean-up that a second Ctrl-C (or SIGTERM) cannot cut short."""
    with terminate_as_interrupt() as shield:
        shield()
        yield


@dataclass(frozen=True)
class Disaster:
    """What `ArkboxRig.disaster()` did: the backup made, the archive restored, how long."""

    backed_up: str | None  # the archive `arkbox-installer backup` made just before
    restored: str | None  # the archive the blank box restored
    health: str | None  # the health step's summary on the restored box
    seconds: float  # from the blank box's start to its first boot done


class ArkboxRig:
    """A rig of `arkbox try`'s making for one config: network, neighbours, the appliance."""

    def __init__(self, built: Built, name: str, timeout: float, *, out: Say = say) -> None:
        self.built, self.name, self.timeout, self.say = built, name, timeout, out
        self.client: docker.DockerClient = docker_client()
        self.plan = UpPlan(built.config_path, built.config, built.out, name, rebuild=False,
                           no_build=True, timeout=timeout, backup=built.backup_server)
        self.rig: Rig | None = None
        self.pebble: TestCAContainer | None = None
        self.images: Images | None = None
        self.ready: Ready | None = None
        self.first_boot: BootOutcome | None = None

    @property
    def state_dir(self) -> Path:
        return state_dir_for(self.built.out, self.name)

    def up(self, *, keep_failed: bool = False) -> ArkboxRig:
        """Start the rig and wait for first boot; on Ctrl-C (SIGTERM) or a failure remove
        everything it made (unless keep_failed, for a failure)."""
        with on_interrupt(self._remove_all):
            try:
                self.images = build_and_import(self.plan, self.client)
                self.rig, self.pebble, appliance = start_rig(self.plan, self.client,
                                                             self.images)
                self._boot(appliance)
            except Exception:
                if not keep_failed:
                    self._remove_all()
                raise
        return self

    def _boot(self, appliance: TryAppliance) -> None:
        assert self.rig is not None and self.pebble is not None and self.images is not None
        self.say(f"following first boot of {appliance.name} …")
        self.first_boot = follow_first_boot(appliance, self.timeout, out=self.say)
        if not self.first_boot.ok:
            raise first_boot_failure(appliance.read_json(str(BOX.status)), self.first_boot,
                                     appliance.name)
        self.ready = after_first_boot(self.plan, self.rig, self.pebble, appliance,
                                      self.images.dns)

    def _remove_all(self) -> None:
        self.say(f"removing the rig {self.name} …")
        self.say(f"  {describe_removed(self.down())}")

    def down(self) -> dict[str, int]:
        """Remove every container, volume and network labelled as this rig's, and its
        files; the counts. A fresh engine connection: an interrupt may have cut one."""
        return take_down(docker.from_env(timeout=300), self.name, self.state_dir)

    @property
    def appliance_part(self) -> ApplianceContainer:
        """The rig's current appliance (after a disaster: the restored one)."""
        assert self.rig is not None, "the rig is not up"
        return next(p for p in reversed(self.rig.containers)
                    if isinstance(p, ApplianceContainer) and p.role == "appliance")

    @property
    def backup_server_part(self) -> BackupServerContainer | None:
        if self.rig is None:
            return None
        return next((p for p in self.rig.containers if isinstance(p, BackupServerContainer)), None)

    @property
    def ca_file(self) -> Path:
        """The root that the box's certificate verifies against: the test CA's, or (when the
        CA did not issue) the box's fallback certificate."""
        if self.ready is None or self.ready.certificate is None:
            raise ArkboxError(f"the rig {self.name} handed out no certificate to trust",
                              hint="see the fixture's output: the test CA did not issue, "
                                   "and the fallback certificate could not be read")
        return self.ready.certificate

    def disaster(self, timeout: float | None = None) -> Disaster:
        """`arkbox try disaster`: back up now, destroy the appliance (its container and
        volumes; the backup server keeps the repository), boot a blank one from the same
        image and seed, and wait until it has restored and is healthy."""
        assert self.rig is not None, "the rig is not up"
        found = rig_containers(self.client, self.name)
        old, _server = find_rig(self.client, self.name, found)  # refuses as try does
        old_part = self.appliance_part
        made = back_up(old_part, self.name)
        box = read_old_box(old_part, old)
        self.say(f"destroying {old.name} (its volumes too; the backup server stays) …")
        remove_container(self.client, old)
        (self.state_dir / CERTIFICATE_FILE).unlink(missing_ok=True)
        restored = restore(self.rig, box, found, self.state_dir,
                           self.timeout if timeout is None else timeout, ["restoring"])
        self.first_boot = restored.outcome
        if self.ready is not None:
            self.ready = Ready(restored.certificate, self.ready.from_ca, self.ready.dns,
                               restored.doctor)
        result = restored.result
        if not restored.outcome.ok or result.mode != "RESTORE":
            name = self.appliance_part.name
            failed = first_boot_failure(self.appliance_part.read_json(str(BOX.status)),
                                        restored.outcome, name)
            raise FirstBootFailed(
                f"the blank box did not restore: mode {result.mode} ({result.reason}); "
                f"{failed.message}",
                hint=f"look: docker exec {name} cat {RESTORE_FILE}; run pytest with "
                     "--arkbox-keep to leave it up")
        return Disaster(made, result.archive, result.health, restored.healthy_s)


class ArkboxAppliance:
    """The booted appliance, first boot done: commands, status, HTTPS to its routes.

    It follows the rig: after `arkbox_rig.disaster()` it is the restored box."""

    def __init__(self, rig: ArkboxRig) -> None:
        self.rig = rig

    @property
    def part(self) -> ApplianceContainer:
        return self.rig.appliance_part

    @property
    def name(self) -> str:
        """The container's name (docker exec NAME ...)."""
        return self.part.name

    @property
    def config(self) -> Appliance:
        return self.rig.built.config

    def exec(self, *argv: str) -> tuple[int, str]:
        """argv in the box as root: exit code and output (stdout and stderr)."""
        return self.part.exec(*argv)

    def sh(self, command: str) -> str:
        """A shell command in the box; its output, or CommandFailed with it."""
        return self._checked(("sh", "-c", command))

    def installer(self, *args: str) -> str:
        """`arkbox-installer ARGS` in the box (as an admin runs it); its output, or
        CommandFailed with it."""
        return self._checked(("timeout", str(INSTALLER_TIMEOUT_S), "arkbox-installer", *args))

    def _checked(self, argv: tuple[str, ...]) -> str:
        code, output = self.exec(*argv)
        if code != 0:
            raise CommandFailed(f"`{' '.join(argv)}` exited {code} in {self.name}: "
                                f"{output.strip()[-1500:]}",
                                hint=f"look: docker exec -it {self.name} bash")
        return output

    def status(self) -> dict[str, Any]:
        """`arkbox-installer status --json`: the last run's steps, certificate, backup, ..."""
        data = json.loads(self.installer("status", "--json"))
        assert isinstance(data, dict)
        return data

    def port(self, container_port: str = "443/tcp") -> int:
        """The port on 127.0.0.1 the engine published container_port on."""
        return self.part.host_port(container_port)

    def route_host(self, route: str) -> str:
        """A service's route host name (`wiki` → wiki.example.test), or `route` itself."""
        service = self.config.services.get(route)
        if service is not None and service.route is not None:
            return str(service.route.hostname)
        return route

    def https(self, route: str, path: str = "/", *, method: str = "GET",
              body: bytes | None = None, headers: dict[str, str] | None = None) -> https.Answer:
        """HTTPS to a route (a service's name or a host name) through the published 443,
        the certificate verified for that name against the rig's root."""
        return https.request(self.port("443/tcp"), self.route_host(route), path,
                             ca_file=self.rig.ca_file, method=method, body=body,
                             headers=headers)

    def backup_now(self) -> str | None:
        """`arkbox-installer backup` now; the archive it made."""
        return back_up(self.part, self.rig.name)


class ArkboxBackupServer:
    """The rig's backup server (the backup-server role), under the repository's host name."""

    def __init__(self, rig: ArkboxRig, part: BackupServerContainer) -> None:
        self.rig, self.part = rig, part

    @property
    def name(self) -> str:
        return self.part.name

    @property
    def host(self) -> str:
        plan = self.rig.built.backup_server
        assert plan is not None
        return plan.host

    def exec(self, *argv: str) -> tuple[int, str]:
        return self.part.exec(*argv)

    def repository_exists(self) -> bool:
        """Whether the appliance's borg repository is there (its `config` file)."""
        path = urlsplit(str(self.rig.built.config.backup.repository or "")).path
        full = f"{BORG_HOME}/{path.removeprefix('/./')}" if path.startswith("/./") else path
        return self.exec("test", "-f", f"{full}/config")[0] == 0
