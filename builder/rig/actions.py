"""`arkbox try down`, `try ssh`, `try status`: acting on a running `try` rig, found by its
label (not by remembering how it was started)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import docker
from docker.errors import NotFound
from docker.models.containers import Container

from builder.rig.parts import BOX
from builder.rig.removal import RIG_LABEL
from builder.rig.screens import describe_removed, say
from builder.rig.try_rig import docker_client, published_ports, state_dir_for, take_down
from firstboot.core.errors import EXIT_FAILURE, EXIT_OK, ArkboxError


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


def rig_objects(client: docker.DockerClient, rig_name: str) -> dict[str, int]:
    label: dict[str, str | list[str] | bool] = {"label": f"{RIG_LABEL}={rig_name}"}
    return {
        "containers": len(client.containers.list(all=True, filters=label)),
        "networks": len(client.networks.list(filters=label)),
        "volumes": len(client.volumes.list(filters=label)),
    }


def part_entry(container: Container) -> dict[str, Any]:
    """One container of the rig as status shows it; the appliance with its first boot."""
    entry: dict[str, Any] = {"name": container.name, "status": container.status,
                             "ports": published_ports(container)}
    if container.labels.get("arkbox.rig.role") == "appliance" and \
            container.status == "running":
        code, text = container.exec_run(["cat", str(BOX.status)])
        if code == 0 and isinstance(text, bytes):
            entry["first_boot"] = json.loads(text).get("result")
    return entry


def cmd_status(args: argparse.Namespace) -> int:
    client = docker_client()
    label: dict[str, str | list[str] | bool] = {"label": f"{RIG_LABEL}={args.rig}"}
    parts = [part_entry(c) for c in client.containers.list(all=True, filters=label)]
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
