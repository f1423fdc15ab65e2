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


def test_test_modules_have_unique_names() -> None:
    """pytest imports test modules by their base name (no packages under tests/): two
    files of one name in different folders fail the whole run's collection."""
    modules = sorted([*ROOT.glob("tests/**/test_*.py"), *ROOT.glob("config/examples/**/test_*.py")])
    by_name: dict[str, list[str]] = {}
    for path in modules:
        by_name.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert len(modules) > 100
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}
