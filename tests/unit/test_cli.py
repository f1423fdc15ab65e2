import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARKBOX = str(Path(sys.executable).parent / "arkbox")
INSTALLER = str(Path(sys.executable).parent / "arkbox-installer")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_version_and_help_document_exit_codes() -> None:
    from firstboot import __version__

    assert run(ARKBOX, "--version").stdout.strip() == f"arkbox {__version__}"
    assert run(INSTALLER, "--version").stdout.strip() == f"arkbox-installer {__version__}"
    for tool in (ARKBOX, INSTALLER):
        assert "exit codes: 0 ok, 1 failure, 2 bad input" in run(tool, "--help").stdout


def test_validate_default_is_ok_and_json_says_so() -> None:
    result = run(ARKBOX, "validate", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["valid"] is True


def test_invalid_config_exit_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "appliance.yaml"
    bad.write_text("appliance:\n  name: Not Valid!\n")
    result = run(ARKBOX, "validate", str(bad), "--json")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert not report["valid"]
    assert any(p["path"] == "appliance.name" for p in report["problems"])
    plain = run(ARKBOX, "build", str(bad), "--out", str(tmp_path / "out"))
    assert plain.returncode == 2
    assert "Traceback" not in plain.stderr + plain.stdout
    assert "appliance.name" in plain.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_generated_files_check_passes() -> None:
    for what in ("schema", "docs"):
        result = run(ARKBOX, what, "--check")
        assert result.returncode == 0, result.stderr
