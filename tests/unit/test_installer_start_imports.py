"""The installer's most frequent starts load only what they use (issue 19, goal 5).

`--version` and `status` of a box that has not run load no config model (pydantic), no
Docker SDK and no rich: those cost most of a cold start. Speed itself is measured only in
bench/installer_start.py; this checks what is imported, in a fresh interpreter (this
one has them all loaded already).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("pydantic", "docker", "requests", "rich", "yaml", "firstboot.core.config")

PROBE = """
import json, sys
from firstboot.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def loaded_by(*argv: str) -> set[str]:
    """The modules an installer command imports; stdout is the command's own."""
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True,
                          text=True, timeout=60, check=True)
    loaded = json.loads(done.stderr.strip().splitlines()[-1])
    return {heavy for heavy in HEAVY for name in loaded
            if name == heavy or name.startswith(heavy + ".")}


@pytest.mark.parametrize("argv", [["--version"], ["status"], ["status", "--json"]],
                         ids=" ".join)
def test_light_commands_load_no_heavy_module(tmp_path: Path, argv: list[str]) -> None:
    if argv[0] == "status":
        argv = [*argv, "--root", str(tmp_path)]  # a box that has not run
    assert loaded_by(*argv) == set()


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    # validate needs the config model: the check above would notice it being loaded.
    config = Path(__file__).resolve().parents[2] / "config" / "default.yaml"
    assert {"pydantic", "yaml", "firstboot.core.config"} <= loaded_by("validate", str(config))
