"""The import contract (.importlinter) holds, and it would catch an upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
TIMEOUT_S = 120


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the packages below `tree`, with the repository's contract."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(ROOT / ".importlinter")],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def test_the_import_contract_is_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "upward_import", "contract"), [
    ("firstboot/core/errors.py", "import firstboot.steps.tls", "installer: cli > converge"),
    ("firstboot/steps/firewall.py", "import firstboot.steps.system", "steps never import"),
    ("firstboot/containers/spec.py", "import builder.pipeline.disk", "installer never imports"),
    ("builder/pipeline/disk.py", "import builder.rig.parts", "pipeline never imports the rig"),
])
def test_an_upward_import_breaks_the_contract(tmp_path: Path, module: str, upward_import: str,
                                              contract: str) -> None:
    for package in ("builder", "firstboot"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{upward_import}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [line for line in result.stdout.splitlines() if "BROKEN" in line]
    assert any(contract in line for line in broken), result.stdout
