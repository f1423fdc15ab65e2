"""What the `arkbox try` tests share: running the command, and counting what it left.

Not a conftest.py (one in tests/e2e would shadow tests/conftest.py).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from built import Built, built_appliance, built_backup_server
from conftest import IN_CI
from rig_fixtures import SUBNET_SHIFT_ENV, default_sigint

from builder.rig.removal import RIG_LABEL, remove_rig

ROOT = Path(__file__).resolve().parents[2]
ARKBOX = str(Path(sys.executable).parent / "arkbox")

Objects = dict[str, dict[str, str]]  # kind -> id -> name


def rig_name(base: str) -> str:
    """The try test's rig name: with ARKBOX_TEST_SUBNET_SHIFT set (a second suite on the
    same engine) one of its own, whose subnets (derived from the name) differ too."""
    shift = os.environ.get(SUBNET_SHIFT_ENV, "0")
    return base if shift in ("", "0") else f"{base}-shift{shift}"


def fixtures_for(rig: str) -> tuple[Callable[[None], Built],
                                  Callable[[None], Iterator[docker.DockerClient]]]:
    """The fixtures a `try` test module binds as `built, engine = try_fixtures.fixtures_for(RIG)`
    (pytest finds them by those names): this run's builds of the backup server and the
    appliance (`try --no-build` uses them), and the engine with nothing of `rig` in it
    before each test nor after, whatever the test did."""

    @pytest.fixture(scope="module")
    def built(docker_engine: None) -> Built:
        built_backup_server()
        return built_appliance()

    @pytest.fixture
    def engine(docker_engine: None) -> Iterator[docker.DockerClient]:
        client = docker.from_env(timeout=300)
        remove_rig(client, rig)  # a killed earlier run
        yield client
        remove_rig(client, rig)
        for volume in client.volumes.list(filters={"label": f"{RIG_LABEL}={rig}"}):
            volume.remove(force=True)

    return built, engine


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
        assert new == {"containers": [], "networks": [], "volumes": []}, \
            f"engine objects that appeared during the test: {new}"


def arkbox_try(built: Built, rig: str, *extra: str) -> list[str]:
    """`arkbox try` on this run's builds. The default config backs up to
    backup.arkbox.test: the rig runs the backup-server role there, from this run's build
    of it (as test_backup_restore.py does)."""
    backup_out = built_backup_server().parent
    return [ARKBOX, "try", *extra, "--out", str(built.out), "--rig", rig,
            "--backup-server-out", str(backup_out)]


def interrupt_when(argv: list[str], ready: Callable[[list[str]], bool], timeout: float,
                   before_signal: Callable[[], None] = lambda: None,
                   expect_code: int = 130) -> str:
    """Run argv as from a terminal, SIGINT it once `ready(lines so far)`; its whole output.

    It must end with `expect_code` (130: interrupted; pytest says 2)."""
    process = subprocess.Popen(argv, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"},
                               preexec_fn=default_sigint)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        while not ready(seen):
            line = lines.get(timeout=max(1.0, deadline - time.monotonic()))
            assert line is not None, "ended before the point to interrupt:\n" + "\n".join(seen)
            seen.append(line)
        before_signal()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    while (line := lines.get(timeout=10)) is not None:
        seen.append(line)
    text = "\n".join(seen)
    print(text[-4000:])
    assert code == expect_code, text
    return text
