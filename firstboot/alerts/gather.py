"""Reading the facts off a box: the records status shows, disk use, the reboot flag and
the containers' health. Reads only; below a test root the engine is not asked."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from firstboot.alerts.facts import (
    BoxFacts,
    DiskUse,
    PackageCheck,
    ServiceHealth,
    parse_time,
)
from firstboot.backup.client import read_failure, read_stats, read_verify
from firstboot.backup.drill_record import last_drill
from firstboot.certs.renew_state import status_facts
from firstboot.containers.engine import container_state, owned_containers
from firstboot.containers.naming import Naming
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.execute import run
from firstboot.status import Status
from firstboot.systemd_units import parse_systemd_time
from firstboot.updates.record import fetch_record, update_status

if TYPE_CHECKING:
    import docker

log = logging.getLogger("arkbox.alerts")

WATCHED_MOUNTS = ("/", "/srv")
REBOOT_REQUIRED = "/run/reboot-required"  # written by unattended-upgrades' postinst hooks


def gather(ctx: FirstbootContext) -> BoxFacts:
    paths, now = ctx.paths, ctx.now()
    status = Status.load(paths.status)
    history = read_stats(paths)
    return BoxFacts(
        now=now,
        first_boot_done=_first_boot_done(paths),
        last_run=status.to_json() if status is not None else None,
        backups_enabled=ctx.config.backup.repository is not None,
        last_backup=history[-1] if history else None,
        backup_failure=read_failure(paths),
        last_drill=last_drill(paths),
        last_verify=read_verify(paths),
        certificate=status_facts(paths, now),
        services=_services(ctx) if paths.is_live else None,
        disks=disk_use(paths),
        reboot_required_since=_modified(paths.at(REBOOT_REQUIRED)),
        last_update=update_status(paths),
        last_fetch=fetch_record(paths),
        package_check=_package_check() if paths.is_live else None,
    )


# The weekly check of package files, laid by the build's hardening (image/hardening).
PACKAGE_CHECK_UNIT = "arkbox-debsums.service"


def package_check_argv() -> tuple[str, ...]:
    return ("systemctl", "show", "--timestamp=unix",
            "--property=LoadState,ActiveState,Result,ExecMainExitTimestamp",
            PACKAGE_CHECK_UNIT)


def parse_package_check(text: str) -> PackageCheck | None:
    """`systemctl show` of the check's unit: failed when its last run did (a oneshot that
    failed stays "failed" until it runs again); None when the unit is not installed."""
    props = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if props.get("LoadState") != "loaded":
        return None
    # systemctl's timestamps (--timestamp=unix), read as the backup timer's next run is.
    when = parse_systemd_time(props.get("ExecMainExitTimestamp", ""))
    failed = props.get("ActiveState") == "failed" or props.get("Result", "success") != "success"
    return PackageCheck(failed=failed, finished=when)


def _package_check() -> PackageCheck | None:
    try:
        shown = run(package_check_argv(), check=False, timeout=30)
    except Exception as err:  # systemd not answering is no verdict on the files
        log.warning("cannot ask systemd about %s: %s", PACKAGE_CHECK_UNIT, err)
        return None
    return parse_package_check(shown.stdout) if shown.returncode == 0 else None


def _first_boot_done(paths: Paths) -> datetime | None:
    try:
        text = paths.done_marker.read_text().strip()
    except FileNotFoundError:
        return None
    return parse_time(text) or _modified(paths.done_marker)


def _modified(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except FileNotFoundError:
        return None


def disk_use(paths: Paths, mounts: Path = Path("/proc/self/mounts")) -> list[DiskUse]:
    """Space and inode use of / and /srv (once when both are one filesystem). An overlay
    (the box runs in a container, as in the test rig) is the container host's disk: its
    fill level is the host's to watch, and an alert from every box on it would be noise."""
    found: list[DiskUse] = []
    devices: set[int] = set()
    types = mount_types(mounts)
    for mount in WATCHED_MOUNTS:
        where = paths.at(mount)
        try:
            device = where.stat().st_dev
            usage = os.statvfs(where)
        except OSError:
            continue
        if device in devices or fs_type(types, where) == "overlay":
            continue
        devices.add(device)
        found.append(DiskUse(mount, _percent(usage.f_blocks, usage.f_bavail),
                             _percent(usage.f_files, usage.f_favail) if usage.f_files else None))
    return found


def mount_types(mounts: Path) -> dict[str, str]:
    """Mount point -> file system type, from a mounts table (the last mount on a point wins)."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return {}
    table = {}
    for line in lines:
        fields = line.split()
        if len(fields) >= 3:  # octal escapes (\040 for a space) in mount points
            table[fields[1].encode().decode("unicode_escape")] = fields[2]
    return table


def fs_type(types: dict[str, str], where: Path) -> str | None:
    """The type of the file system holding `where`: its longest mount point prefix."""
    for candidate in (where, *where.parents):
        if str(candidate) in types:
            return types[str(candidate)]
    return None


def _percent(total: int, available: int) -> float:
    # As df: what is used against what a user can use (root's reserve is not available).
    return 0.0 if total <= 0 else 100.0 * (total - available) / total


def _services(ctx: FirstbootContext) -> list[ServiceHealth] | None:
    try:
        return services_health(ctx.docker, ctx)
    except Exception as err:  # the engine down is a fact too: no verdict on services
        log.warning("cannot ask the container engine about health: %s", err)
        return None


def services_health(client: docker.DockerClient, ctx: FirstbootContext) -> list[ServiceHealth]:
    """Each of the box's containers (the config's services, the proxy, mail): its problem."""
    naming = Naming.for_root(ctx.paths.root)
    expected = {name: naming.container(name) for name in ctx.config.services}
    expected["proxy"] = naming.proxy_container
    for container in owned_containers(client, naming, role=None):
        if container.service and container.service not in expected:
            expected[container.service] = container.name
    return [ServiceHealth(name, container_problem(client, cname))
            for name, cname in sorted(expected.items())]


def container_problem(client: docker.DockerClient, name: str) -> str | None:
    """What the engine says, without running anything in the container (unlike the health
    step's probe): stopped, unhealthy, or None. "starting" is not yet a problem."""
    state = container_state(client, name)
    if state is None:
        return "no container (run: arkbox-installer apply)"
    status = state.get("State") or {}
    if status.get("Status") != "running":
        return f"{status.get('Status')} (exit {status.get('ExitCode')})"
    health = status.get("Health") or {}
    if health.get("Status") == "unhealthy":
        checks = health.get("Log") or [{}]
        output = str(checks[-1].get("Output", "")).strip()[-200:]
        return f"unhealthy (last check exit {checks[-1].get('ExitCode')}" + (
            f": {output})" if output else ")")
    return None
