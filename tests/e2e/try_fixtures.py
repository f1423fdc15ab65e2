"""What the `arkbox try` tests share: running the command, and counting what it left.

Not a conftest.py (one in tests/e2e would shadow tests/conftest.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import docker
from built import Built, built_backup_server
from conftest import IN_CI

from builder.rig import RIG_LABEL

ARKBOX = str(Path(sys.executable).parent / "arkbox")

Objects = dict[str, dict[str, str]]  # kind -> id -> name


def engine_objects(client: docker.DockerClient) -> Objects:
    return {
        "containers": {c.id: c.name for c in client.containers.list(all=True)},
        "networks": {n.id: n.name for n in client.networks.list()},
        "volumes": {v.id: v.name for v in client.volumes.list()},
    }


def labelled(client: docker.DockerClient, rig: str) -> dict[str, int]:
    label = {"label": f"{RIG_LABEL}={rig}"}
    return {"containers": len(client.containers.list(all=True, filters=label)),
            "networks": len(client.networks.list(filters=label)),
            "volumes": len(client.volumes.list(filters=label))}


def assert_nothing_left(client: docker.DockerClient, before: Objects, rig: str) -> None:
    after = engine_objects(client)
    assert labelled(client, rig) == {"containers": 0, "networks": 0, "volumes": 0}
    new = {kind: sorted(set(after[kind].values()) - set(before[kind].values()))
           for kind in after}
    ours = {kind: [n for n in names if n.startswith(rig)] for kind, names in new.items()}
    assert ours == {"containers": [], "networks": [], "volumes": []}
    totals = {kind: (len(before[kind]), len(after[kind])) for kind in after}
    print(f"engine objects before → after: {totals}")
    if IN_CI:  # nothing else runs beside this test there
        assert new == {"containers": [], "networks": [], "volumes": []}


def arkbox_try(built: Built, rig: str, *extra: str) -> list[str]:
    """`arkbox try` on this run's builds. The default config backs up to
    backup.arkbox.test: the rig runs the backup-server role there, from this run's build
    of it (as test_backup_restore.py does)."""
    backup_out = built_backup_server().parent
    return [ARKBOX, "try", *extra, "--out", str(built.out), "--rig", rig,
            "--backup-server-out", str(backup_out)]
