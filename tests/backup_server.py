"""The backup-server role (tests/built.py builds it once) booted in a rig of its own, for the
integration tests and the benchmarks that back up to a real `borg serve`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import docker
from built import built_backup_server

from builder.rig.parts import BackupServerContainer, Rig, image_from_rootfs_tar


@contextmanager
def running_backup_server(rig_name: str, ipv4_subnet: str, ipv6_subnet: str,
                          ports: dict[str, int | None] | None = None
                          ) -> Iterator[BackupServerContainer]:
    """The server, ready (its sshd active) as backup.arkbox.test; the rig is removed after.

    `rig_name` gets this process's id; the subnets must be the caller's own, so rigs of
    parallel tests never meet."""
    client = docker.from_env(timeout=300)
    image = image_from_rootfs_tar(client, built_backup_server(), "arkbox/backup-server-role")
    rig = Rig(name=f"{rig_name}{os.getpid()}", client=client,
              ipv4_subnet=ipv4_subnet, ipv6_subnet=ipv6_subnet)
    with rig.running():
        part = BackupServerContainer(rig, "backup", image, aliases=("backup.arkbox.test",),
                                ports=dict(ports or {}))
        rig.add(part)
        yield part
