"""A box that backed up never starts its repository anew, with real borg.

The repository is a local directory (as in test_restore_safety: Borg.env points borg at
it): the box backs up, the repository vanishes (or someone at the server's address says it
does not exist), and the `backup` step of the next apply must fail instead of `borg init`;
with `apply --force` it creates a new one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_restore_safety import LocalRepo, box, repo  # noqa: F401 - the fixtures

from firstboot.backup.backup import run_backup
from firstboot.backup.client import known_repository
from firstboot.core.context import FirstbootContext
from firstboot.core.step import StepFailed
from firstboot.steps import backup as backup_step

pytestmark = [pytest.mark.integration]


def test_a_repository_that_vanished_after_a_backup_is_not_made_anew(
        box: FirstbootContext, repo: LocalRepo) -> None:  # noqa: F811 - fixtures
    volume = box.paths.data / "volumes/wiki/data"
    volume.mkdir(parents=True)
    (volume / "page.txt").write_text("history")
    (box.paths.data / "manifest.json").write_text("{}")
    assert backup_step.run(box).changed  # the repository exists: key exported, timer
    report = run_backup(box, prune=False)
    assert known_repository(box.paths)["how"] == "backup"

    shutil.rmtree(repo.path)  # lost, or an impostor answering "does not exist"
    with pytest.raises(StepFailed) as refused:
        backup_step.run(box)
    assert "does not exist, yet this box used it (backup since" in refused.value.message
    assert refused.value.hint and "apply --force" in refused.value.hint
    assert not repo.path.exists()  # no borg init

    old_key = (box.paths.secrets / "backup/borg-key").read_text()
    box.force_new_repository = True
    assert "repository created" in backup_step.run(box).summary
    # The new repository's key is exported, not the lost one's left in its place.
    assert (box.paths.secrets / "backup/borg-key").read_text() != old_key
    assert report.archive not in repo.borg("list", "--short")  # a new, empty repository
    assert Path(repo.path / "config").exists()
