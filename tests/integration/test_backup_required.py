"""`backup.restore: required` against a real, empty borg repository on the backup-server role.

First boot must not start fresh: the restore step retries, then fails with a message and a
hint in status.json and the log (the journal on a box), the steps after it do not run, and
nothing is created that a later restore would have to undo (no /srv/arkbox, no decision
recorded, no container, no network). The unit's restart back-off then tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from backup_server import running_backup_server
from conftest import docker_answers, require, require_tool
from test_backup_server import write_config

from firstboot.backup.backup import list_archives
from firstboot.containers.naming import Naming
from firstboot.converge import converge
from firstboot.core.context import FirstbootContext, Paths
from firstboot.status import Status
from firstboot.steps import backup as backup_step
from firstboot.steps import load_steps
from firstboot.steps import restore as restore_step

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def server_ip() -> Iterator[str]:
    require(docker_answers(), "a running Docker Engine")
    require_tool("borg")
    with running_backup_server("arkbox-req", "172.30.181.0/24", "fd42:a7b0:181::/64") as part:
        yield part.ip()


def test_required_with_an_empty_repository_waits_and_creates_nothing(
        server_ip: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty repository: a box set backups up (borg init, key export), never backed up.
    first = FirstbootContext(config=write_config(tmp_path / "first", server_ip),
                             paths=Paths(tmp_path / "first-root"))
    assert backup_step.run(first).changed
    assert list_archives(first) == []

    config = write_config(tmp_path / "blank", server_ip, restore="required")
    assert config.source_path is not None
    root = tmp_path / "blank-root"
    monkeypatch.setattr(restore_step, "RETRY_DELAYS_S", (0.2, 0.2))
    lines: list[str] = []
    caplog.set_level(logging.INFO)
    code = converge("firstboot", Path(config.source_path), Paths(root),
                    steps=load_steps(("restore", "secrets", "restore_dumps", "services")),
                    out=lines.append)

    assert code == 1
    status = Status.load(Paths(root).status)
    assert status is not None and status.result == "failed"
    assert [(s.name, str(s.state)) for s in status.steps] == [
        ("restore", "failed"), ("secrets", "not run"), ("restore_dumps", "not run"),
        ("services", "not run")]
    failure = status.failures[0]
    assert failure.step == "restore"
    assert "holds no complete backup" in failure.message and "not starting fresh" in \
        failure.message, failure.message
    assert failure.hint and "restore: auto" in failure.hint
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2 and "holds no complete backup" in retries[0], retries
    assert any("holds no complete backup" in line for line in lines), lines

    # Nothing a later restore would have to undo.
    paths = Paths(root)
    assert not paths.data.exists()
    assert not paths.data.with_name("arkbox.restoring").exists()
    assert not (paths.state / "restore.json").exists()
    assert not (paths.state / "restore-dumps").exists()
    client = docker.from_env()
    naming = Naming.for_root(root)
    assert client.containers.list(all=True, filters=naming.filters()) == []
    assert client.networks.list(filters=naming.filters()) == []
    print(f"\nrequired + empty repository: {failure.message.splitlines()[0]}")
