"""`arkbox-installer firstboot` / `apply` (converge) and `status`, below a temporary root."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from firstboot.converge import converge
from firstboot.core.config import DEFAULT_CONFIG_PATH, Appliance, load_config
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.step import Outcome, StepFailed
from firstboot.seed_install import provide_secrets
from firstboot.seed_sources import CredentialSource, PartitionSource
from firstboot.status import Status

INSTALLER = str(Path(sys.executable).parent / "arkbox-installer")


class Step:
    def __init__(self, name: str, fail: bool = False) -> None:
        self.NAME = name
        self.fail = fail

    def applies(self, config: Appliance) -> bool:
        return True

    def run(self, ctx: FirstbootContext) -> Outcome:
        if self.fail:
            raise StepFailed("the engine did not answer", hint="systemctl status docker")
        (ctx.paths.root / self.NAME).touch()
        return Outcome.changed_(f"{self.NAME} set up")

    def verify(self, ctx: FirstbootContext) -> str | None:
        return None if (ctx.paths.root / self.NAME).exists() else "missing"


def installer(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INSTALLER, *argv], capture_output=True, text=True, timeout=60)


def test_firstboot_then_apply_reports_no_changes(tmp_path: Path) -> None:
    lines: list[str] = []
    steps = [Step("system"), Step("firewall")]
    code = converge("firstboot", DEFAULT_CONFIG_PATH, Paths(tmp_path), steps=steps,
                    out=lines.append)
    assert code == 0
    assert lines[0].startswith("arkbox first boot · installer ")
    assert lines[1].startswith("mode FRESH (backup.restore: auto: the restore step decides")
    assert lines[2].split()[:3] == ["[1/2]", "system", "changed"]
    assert lines[-1] == "ready · https://arkbox.test · details: arkbox-installer status"
    lines.clear()
    assert converge("apply", DEFAULT_CONFIG_PATH, Paths(tmp_path), steps=steps,
                    out=lines.append) == 0
    assert lines[0].startswith("arkbox apply · installer")
    assert [line.split()[2] for line in lines[2:4]] == ["ok", "ok"]
    assert lines[-1].endswith("· no changes")
    status = Status.load(tmp_path / "var/lib/arkbox/status.json")
    assert status is not None and status.command == "apply" and status.changes == 0


def test_a_bad_config_is_recorded_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "appliance.yaml"
    config.write_text("appliance:\n  name: Not Valid!\n")
    lines: list[str] = []
    code = converge("firstboot", config, Paths(tmp_path / "root"), steps=[Step("system")],
                    out=lines.append)
    assert code == 2
    assert "appliance.name" in "\n".join(lines)
    assert lines[-1].startswith("nothing was changed")
    assert not (tmp_path / "root/system").exists()
    status = Status.load(tmp_path / "root/var/lib/arkbox/status.json")
    assert status is not None and status.result == "failed"
    assert status.failures[0].step == "config"
    assert "appliance.name" in status.failures[0].message
    assert "arkbox-installer validate" in (status.failures[0].hint or "")


class SeedStep(Step):
    """The seed step's library with sources that hold nothing (no credential, no partition)."""

    def __init__(self) -> None:
        super().__init__("seed")

    def run(self, ctx: FirstbootContext) -> Outcome:
        return provide_secrets(ctx.config, role="appliance",
                               sources=[CredentialSource(None), PartitionSource(lambda: [])],
                               record_path=ctx.paths.seed_record, now=ctx.now)


def test_a_missing_secret_file_is_left_to_the_seed_step(tmp_path: Path) -> None:
    """The config loads without the secret; the seed step fails naming it (exit 2) and
    nothing after it runs."""
    folder = tmp_path / "etc"
    shutil.copytree(DEFAULT_CONFIG_PATH.parent / "secrets", folder / "secrets")
    shutil.copy(DEFAULT_CONFIG_PATH, folder / "appliance.yaml")
    default = load_config(DEFAULT_CONFIG_PATH)
    missing = next(ref.file for _, ref in default.secret_refs() if ref.file)
    (folder / missing).unlink()
    code = converge("firstboot", folder / "appliance.yaml", Paths(tmp_path / "root"),
                    steps=[SeedStep(), Step("system")], out=lambda line: None)
    assert code == 2
    status = Status.load(tmp_path / "root/var/lib/arkbox/status.json")
    assert status is not None
    (failure,) = status.failures
    assert failure.step == "seed"
    assert failure.message.startswith("no seed: looked in the systemd credential arkbox-seed")
    assert f"file:{missing}" in failure.message
    assert "arkbox seed CONFIG --out FILE" in (failure.hint or "")
    assert status.step("system").state == "not run"
    assert not (tmp_path / "root/system").exists()
    assert not (folder / missing).exists()


def test_converge_below_a_test_root_needs_explicit_steps(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="explicit steps"):
        converge("apply", DEFAULT_CONFIG_PATH, Paths(tmp_path))


def test_status_command_table_json_and_exit_codes(tmp_path: Path) -> None:
    none = installer("status", "--root", str(tmp_path))
    assert none.returncode == 1 and "has not run on this machine yet" in none.stdout
    assert json.loads(installer("status", "--json", "--root", str(tmp_path)).stdout) == {
        "ran": False}

    converge("firstboot", DEFAULT_CONFIG_PATH, Paths(tmp_path),
             steps=[Step("system"), Step("engine", fail=True), Step("tls")],
             out=lambda line: None)
    shown = installer("status", "--root", str(tmp_path))
    assert shown.returncode == 1
    assert "failed · firstboot started" in shown.stdout
    for expected in ("system", "changed", "engine", "failed", "not run",
                     "✗ engine: the engine did not answer", "hint: systemctl status docker"):
        assert expected in shown.stdout, expected
    assert "Traceback" not in shown.stdout + shown.stderr
    data = json.loads(installer("status", "--json", "--root", str(tmp_path)).stdout)
    assert data["ran"] is True and data["result"] == "failed"
    assert [s["state"] for s in data["steps"]] == ["changed", "failed", "not run"]
    assert data["failures"] == [{"step": "engine", "message": "the engine did not answer",
                                 "hint": "systemctl status docker"}]


def test_status_shows_the_fallback_certificate(tmp_path: Path) -> None:
    class Tls(Step):
        def run(self, ctx: FirstbootContext) -> Outcome:
            super().run(ctx)
            return Outcome.changed_("fallback", {"source": "fallback",
                                                 "not_after": "2025-08-30T12:00:00+00:00",
                                                 "reason": "no certificate from an ACME CA yet"})

    converge("firstboot", DEFAULT_CONFIG_PATH, Paths(tmp_path), steps=[Tls("tls")],
             out=lambda line: None)
    shown = installer("status", "--root", str(tmp_path))
    assert shown.returncode == 0
    assert "certificate: fallback (self-signed), valid until 2025-08-30 12:00:00 UTC: no " \
           "certificate from an ACME CA yet" in " ".join(shown.stdout.split())


def test_help_lists_apply_and_status() -> None:
    text = installer("--help").stdout
    for command in ("firstboot", "apply", "status", "validate"):
        assert command in text


def test_status_tells_a_cut_run_from_a_running_one(tmp_path: Path) -> None:
    from firstboot.runner import run_lock
    from firstboot.status import Status as StatusFile

    state = tmp_path / "var/lib/arkbox"
    state.mkdir(parents=True)
    StatusFile(command="firstboot", installer_version="0", started_at="2025-06-01T12:00:00+00:00"
               ).save(state / "status.json")
    with run_lock(state):
        running = installer("status", "--json", "--root", str(tmp_path))
    assert running.returncode == 0 and json.loads(running.stdout)["result"] == "running"
    cut = installer("status", "--root", str(tmp_path))
    assert cut.returncode == 1
    assert "interrupted" in cut.stdout and "power cut" in cut.stdout
