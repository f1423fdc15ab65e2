"""The restore step's decision (RESTORE / FRESH / fail) with borg replaced by a recorder."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from firstboot.core.config import Appliance, load_config
from firstboot.core.config.problems import ConfigInvalid
from firstboot.core.context import FirstbootContext, Mode, Paths
from firstboot.core.execute import CommandError, Completed
from firstboot.core.step import StepFailed
from firstboot.steps import restore as restore_step

REPO = Path(__file__).resolve().parents[2]


class FakeBorg:
    """Answers `borg info` and `borg list` like a server would; records every argv."""

    def __init__(self, *, exists: bool = True, archives: Sequence[str] = (),
                 info_error: str | None = None) -> None:
        self.exists, self.archives, self.info_error = exists, list(archives), info_error
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[Any], **kwargs: Any) -> Completed:
        shown = tuple(str(a) for a in argv)
        self.calls.append(shown)
        if shown[:2] == ("borg", "info") and len(shown) == 3:
            if self.info_error:
                raise CommandError(shown, 2, self.info_error)
            if not self.exists:
                raise CommandError(shown, 2, "Repository ssh://x/./arkbox does not exist.")
            return Completed(shown, 0, "{}")
        if shown[:2] == ("borg", "list"):
            body = {"archives": [{"name": n, "time": "t"} for n in self.archives]}
            return Completed(shown, 0, json.dumps(body))
        return Completed(shown, 0, "")


def config_with(tmp_path: Path, restore: str, ssh_key: bool = True) -> Appliance:
    source = (REPO / "config/default.yaml").read_text()
    source = source.replace("restore: auto", f"restore: {restore}")
    if not ssh_key:
        source = source.replace("  ssh_key: {file: secrets/backup-ssh-key}\n", "")
    shutil.copytree(REPO / "config/secrets", tmp_path / "config/secrets")
    (tmp_path / "config/appliance.yaml").write_text(source)
    return load_config(tmp_path / "config/appliance.yaml")


def ctx_for(tmp_path: Path, restore: str, fake: FakeBorg, ssh_key: bool = True
            ) -> FirstbootContext:
    return FirstbootContext(config=config_with(tmp_path, restore, ssh_key),
                            paths=Paths(tmp_path / "root"), run=fake)


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restore_step, "RETRY_DELAYS_S", (0.0,))


def test_never_does_not_ask_the_repository(tmp_path: Path) -> None:
    fake = FakeBorg()
    ctx = ctx_for(tmp_path, "never", fake)
    outcome = restore_step.run(ctx)
    assert ctx.mode is Mode.FRESH and "never" in outcome.summary and fake.calls == []
    assert restore_step.verify(ctx) is None


def test_auto_without_repository_starts_fresh(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path, "auto", FakeBorg(exists=False))
    outcome = restore_step.run(ctx)
    assert ctx.mode is Mode.FRESH and "does not exist" in outcome.summary


def test_auto_with_empty_repository_starts_fresh(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path, "auto", FakeBorg(archives=["other-2026-01-01T000000Z"]))
    assert "no archives" in restore_step.run(ctx).summary and ctx.mode is Mode.FRESH


def test_required_with_empty_repository_fails_and_records_nothing(tmp_path: Path) -> None:
    fake = FakeBorg(archives=["arkbox-test-2026-01-01T000000Z.checkpoint"])  # cut short
    ctx = ctx_for(tmp_path, "required", fake)
    with pytest.raises(StepFailed) as failure:
        restore_step.run(ctx)
    assert "no complete backup" in failure.value.message and "required" in failure.value.message
    assert sum(1 for c in fake.calls if c[:2] == ("borg", "list")) == 2  # retried once
    assert not (ctx.paths.state / "restore.json").exists()
    assert not ctx.paths.data.exists()
    assert restore_step.verify(ctx) is not None


def test_required_without_repository_fails(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path, "required", FakeBorg(exists=False))
    with pytest.raises(StepFailed, match="does not exist yet"):
        restore_step.run(ctx)


def test_wrong_passphrase_fails_even_with_auto(tmp_path: Path) -> None:
    fake = FakeBorg(info_error="passphrase supplied in BORG_PASSPHRASE, by BORG_PASSCOMMAND "
                    "or via BORG_PASSPHRASE_FD is incorrect.")
    ctx = ctx_for(tmp_path, "auto", fake)
    with pytest.raises(StepFailed, match="wrong passphrase") as failure:
        restore_step.run(ctx)
    assert "passphrase" in (failure.value.hint or "")
    assert not ctx.paths.data.exists()


def test_no_client_key_in_config(tmp_path: Path) -> None:
    ctx = ctx_for(tmp_path, "auto", FakeBorg(), ssh_key=False)
    assert "ssh_key" in restore_step.run(ctx).summary and ctx.mode is Mode.FRESH
    ctx = ctx_for(tmp_path / "r", "required", FakeBorg(), ssh_key=False)
    with pytest.raises(StepFailed, match="ssh_key"):
        restore_step.run(ctx)


def test_live_data_is_never_restored_over(tmp_path: Path) -> None:
    fake = FakeBorg(archives=["arkbox-test-2026-01-01T000000Z"])
    ctx = ctx_for(tmp_path, "required", fake)
    ctx.paths.data.mkdir(parents=True)
    (ctx.paths.data / "manifest.json").write_text("{}")
    assert "already holds data" in restore_step.run(ctx).summary and fake.calls == []


def test_blank_means_nothing_but_the_backup_exports(tmp_path: Path) -> None:
    from firstboot.backup.restore import data_is_blank

    paths = Paths(tmp_path)
    assert data_is_blank(paths)
    (paths.secrets / "backup").mkdir(parents=True)
    assert data_is_blank(paths)
    (paths.secrets / "generated").mkdir()
    assert not data_is_blank(paths)


def test_staging_is_verified_before_it_replaces_anything(tmp_path: Path) -> None:
    from firstboot.backup.client import BackupError
    from firstboot.backup.restore import verify_staging

    ctx = ctx_for(tmp_path, "auto", FakeBorg())
    staging = tmp_path / "staging"
    (staging / "secrets").mkdir(parents=True)
    with pytest.raises(BackupError, match=r"manifest\.json missing, config missing"):
        verify_staging(ctx, staging)
    (staging / "config").mkdir()
    assert ctx.config.source_path is not None
    shutil.copy(ctx.config.source_path, staging / "config/appliance.yaml")
    (staging / "manifest.json").write_text('{"appliance": "someone-else"}')
    with pytest.raises(BackupError, match="someone-else"):
        verify_staging(ctx, staging)
    (staging / "manifest.json").write_text('{"appliance": "arkbox-test"}')
    assert verify_staging(ctx, staging) is True


def test_a_restore_runs_as_many_extracts_at_once_as_configured(tmp_path: Path) -> None:
    from firstboot.backup.restore import extracts_at_once

    ctx = ctx_for(tmp_path, "auto", FakeBorg())
    assert ctx.config.backup.restore_parallelism is None
    assert extracts_at_once(ctx) == (os.cpu_count() or 1)  # absent: one per core
    configured = ctx.config.model_copy(update={
        "backup": ctx.config.backup.model_copy(update={"restore_parallelism": 3})})
    assert extracts_at_once(FirstbootContext(config=configured, paths=ctx.paths,
                                             run=FakeBorg())) == 3


def test_restore_parallelism_out_of_range_is_refused_with_its_path(tmp_path: Path) -> None:
    config_with(tmp_path, "auto")
    path = tmp_path / "config/appliance.yaml"
    path.write_text(path.read_text().replace("  restore: auto\n",
                                             "  restore: auto\n  restore_parallelism: 0\n"))
    with pytest.raises(ConfigInvalid, match=r"line 107  backup\.restore_parallelism: must be "
                       r"between 1 and 64, got 0"):
        load_config(path)
