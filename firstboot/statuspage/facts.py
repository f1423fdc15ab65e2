"""Facts about the running box that status --json shows beside the last run: each
container's health (since when, restarts) and the host (disk use, pending updates, a
pending reboot). Read-only and quick; each part fails soft into an "error" entry, so a
stopped engine never hides the rest of the status.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors

from firstboot.containers.engine import parse_engine_time
from firstboot.containers.naming import LABEL_ROLE, LABEL_SERVICE, Naming
from firstboot.core.context import Paths
from firstboot.core.execute import CommandError, run

DISKS = ("/", "/srv")
REBOOT_REQUIRED = "/run/reboot-required"
APT_TIMEOUT_S = 60
ENGINE_TIMEOUT_S = 10


def services_facts(paths: Paths) -> dict[str, Any]:
    """Every container of this box: state, health, since when, restarts."""
    try:
        client = docker.from_env(timeout=ENGINE_TIMEOUT_S)
        found = client.containers.list(all=True,
                                       filters=Naming.for_root(paths.root).filters())
        return {"containers": sorted((container_facts(c.attrs) for c in found),
                                     key=lambda c: str(c["name"]))}
    except (docker.errors.DockerException, OSError) as e:
        return {"containers": [], "error": f"the container engine did not answer: {e}"}


def container_facts(attrs: dict[str, Any]) -> dict[str, Any]:
    """One container's line (from its `docker inspect`)."""
    state = attrs.get("State") or {}
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    running = state.get("Status") == "running"
    since = parse_engine_time(state.get("StartedAt" if running else "FinishedAt", "") or "")
    health = (state.get("Health") or {}).get("Status")
    ports = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
    return {
        "name": str(attrs.get("Name", "")).lstrip("/"),
        "service": labels.get(LABEL_SERVICE) or labels.get(LABEL_ROLE, ""),
        "role": labels.get(LABEL_ROLE, ""),
        "state": state.get("Status", "unknown"),
        "health": health or ("running (no check)" if running else state.get("Status")),
        "since": since.isoformat(timespec="seconds") if since else None,
        "restarts": int(attrs.get("RestartCount") or 0),
        "published_ports": sorted(ports),
    }


def host_facts(paths: Paths) -> dict[str, Any]:
    return {"disks": disk_facts(paths), **reboot_facts(paths), **update_facts(paths)}


def disk_facts(paths: Paths) -> list[dict[str, Any]]:
    disks = []
    for mount in DISKS:
        where = paths.at(mount)
        if not where.exists():
            continue
        usage, inodes = shutil.disk_usage(where), os.statvfs(where)
        used_inodes = inodes.f_files - inodes.f_ffree
        disks.append({
            "path": mount, "total_bytes": usage.total, "used_bytes": usage.used,
            "used_percent": round(100 * usage.used / usage.total, 1) if usage.total else 0.0,
            "inodes_used_percent": (round(100 * used_inodes / inodes.f_files, 1)
                                    if inodes.f_files else 0.0),
        })
    return disks


def reboot_facts(paths: Paths) -> dict[str, Any]:
    """Whether an upgrade asks for a reboot (Debian's /run/reboot-required), since when."""
    flag = paths.at(REBOOT_REQUIRED)
    if not flag.exists():
        return {"reboot_required": False}
    since = datetime.fromtimestamp(flag.stat().st_mtime, UTC).isoformat(timespec="seconds")
    packages = paths.at(REBOOT_REQUIRED + ".pkgs")
    named = sorted(set(packages.read_text().split())) if packages.exists() else []
    return {"reboot_required": True, "reboot_required_since": since,
            "reboot_required_by": named}


def update_facts(paths: Paths) -> dict[str, Any]:
    """Upgrades apt would install now (a simulation, no lock taken), security ones apart."""
    if not paths.is_live:
        return {}
    try:
        shown = run(("apt-get", "--simulate", "--quiet", "upgrade"), check=False,
                    timeout=APT_TIMEOUT_S)
    except (CommandError, OSError) as e:
        return {"updates_error": str(e)}
    pending = parse_upgrades(shown.stdout)
    return {"updates_pending": len(pending),
            "security_updates_pending": sum(1 for p in pending if p["security"]),
            "updates": pending}


def parse_upgrades(simulation: str) -> list[dict[str, Any]]:
    """`apt-get --simulate upgrade` lines "Inst PKG [OLD] (NEW ORIGINS [ARCH])"."""
    pending = []
    for line in simulation.splitlines():
        if not line.startswith("Inst "):
            continue
        parts = line.split()
        detail = line[line.find("(") + 1:line.rfind(")")] if "(" in line else ""
        pending.append({"package": parts[1], "version": detail.split()[0] if detail else "",
                        "security": "-security" in detail})
    return pending
