"""ruff and mypy --strict are part of the tests: a lint or type error fails the run."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_ruff_clean() -> None:
    dirs = [d for d in ("builder", "firstboot", "tests", "bench", "scripts") if (ROOT / d).is_dir()]
    result = subprocess.run([str(BIN / "ruff"), "check", *dirs],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_clean() -> None:
    result = subprocess.run([str(BIN / "mypy"), "--strict", "builder", "firstboot"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
