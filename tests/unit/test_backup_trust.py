"""Trust in the backup server: a host key that is not pinned is said loudly, and a box that
once used its repository never starts it anew because someone answered "does not exist"."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_backup_restore_decision import REPO, FakeBorg, ctx_for

from firstboot.backup.client import (
    BackupError,
    known_repository,
    record_repository,
    refuse_new_repository,
)
from firstboot.cli import build_parser
from firstboot.core.config import load_config
from firstboot.core.context import Mode, Paths
from firstboot.core.step import StepFailed
from firstboot.steps import backup as backup_step
from firstboot.steps import restore as restore_step

URL = "ssh://borg@backup.arkbox.test:22/./arkbox"
WHEN = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def test_a_repository_this_box_used_is_never_started_anew_without_force() -> None:
    known = {"repository": URL, "since": "2026-12-01T03:00:00+00:00", "how": "backup"}
    with pytest.raises(BackupError) as refused:
        refuse_new_repository(known, URL, force=False)
    assert "does not exist, yet this box used it (backup since 2026-12-01" in \
        refused.value.message
    assert refused.value.hint and "apply --force" in refused.value.hint
    assert "host key" in refused.value.hint
    refuse_new_repository(known, URL, force=True)  # the operator says it is really lost
    refuse_new_repository(known, "ssh://borg@new.example:22/./arkbox", force=False)  # moved
    refuse_new_repository({}, URL, force=False)  # a box that never backed up


def test_the_record_names_the_repository_once_and_follows_a_move(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    assert known_repository(paths) == {}
    record_repository(paths, URL, WHEN, "restore")
    record_repository(paths, URL, datetime(2026, 12, 2, tzinfo=UTC), "backup")  # unchanged
    assert known_repository(paths) == {"repository": URL, "since": WHEN.isoformat(),
                                       "how": "restore"}
    record_repository(paths, "ssh://borg@new.example:22/./a", WHEN, "backup")
    assert known_repository(paths)["repository"] == "ssh://borg@new.example:22/./a"


def test_the_backup_step_refuses_to_init_a_repository_this_box_used(tmp_path: Path) -> None:
    fake = FakeBorg(exists=False)
    ctx = ctx_for(tmp_path, "auto", fake)
    assert ctx.config.backup.repository is not None
    record_repository(ctx.paths, ctx.config.backup.repository, WHEN, "backup")
    with pytest.raises(StepFailed, match="does not exist, yet this box used it"):
        backup_step.run(ctx)
    assert not any(call[:2] == ("borg", "init") for call in fake.calls)
    ctx.force_new_repository = True  # apply --force
    with pytest.raises(FileNotFoundError):  # the fake made no key export to chmod
        backup_step.run(ctx)
    assert any(call[:2] == ("borg", "init") for call in fake.calls)


def test_first_boot_again_does_not_start_fresh_where_this_box_backed_up(
        tmp_path: Path) -> None:
    fake = FakeBorg(exists=False)
    ctx = ctx_for(tmp_path, "auto", fake)
    assert ctx.config.backup.repository is not None
    record_repository(ctx.paths, ctx.config.backup.repository, WHEN, "backup")
    with pytest.raises(StepFailed, match="not starting a new, empty one"):
        restore_step.run(ctx)
    assert not (ctx.paths.state / "restore.json").exists()
    ctx.force_new_repository = True
    assert "does not exist yet" in restore_step.run(ctx).summary
    assert ctx.mode is Mode.FRESH


def test_apply_and_firstboot_take_force() -> None:
    parser = build_parser()
    assert parser.parse_args(["apply", "--force"]).force is True
    assert parser.parse_args(["firstboot"]).force is False


def test_a_repository_without_a_pinned_host_key_is_warned_about(tmp_path: Path) -> None:
    config = (REPO / "config/default.yaml").read_text()
    (tmp_path / "secrets").symlink_to(REPO / "config/secrets")
    (tmp_path / "tofu.yaml").write_text(config)
    warnings = load_config(tmp_path / "tofu.yaml").warnings
    assert [w.path for w in warnings] == ["backup.host_key"]
    assert "trusted on first use" in warnings[0].message
    assert warnings[0].hint and "restore: required" in warnings[0].hint
    pinned = config.replace("  restore: auto\n", "  restore: auto\n  host_key: "
                            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIALjbvmFclSOCISfqnkRMivfo2vDh0"
                            "/XUO/QtDA1fI7y root@backup\n")
    (tmp_path / "pinned.yaml").write_text(pinned)
    assert load_config(tmp_path / "pinned.yaml").warnings == []
    shown = subprocess.run([str(Path(sys.executable).parent / "arkbox"), "validate", "--json",
                            str(tmp_path / "tofu.yaml")], capture_output=True, text=True,
                           timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert [w["path"] for w in json.loads(shown.stdout)["warnings"]] == ["backup.host_key"]
