"""Benchmark the frozen installer's start-up: the one-folder build the image carries vs a
one-file build of the same sources (the layout before), side by side in one run.

Prints, per command, the best of RUNS starts of each build, the ratio, and the target
of issue 19 (0.3 s for `--version` and `status`):
  --version                       parser and exit, no config
  status --root EMPTY             status of a box that has not run (no config loaded)
  status --root RAN               status of a box that ran (config/default.yaml installed):
                                  the config model, the engine asked for its containers and
                                  rspamd; not live, so no apt-get or systemctl (a real box
                                  adds those: `apt-get --simulate upgrade` alone takes seconds)
  validate config/default.yaml    loads the config model (pydantic), as status does on a box

Run on a machine prepared by scripts/setup:  .venv/bin/python bench/installer_start.py
It runs PyInstaller twice (about 45 s each on 2 cores).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder.pipeline.installer import NAME, freeze_installer, pyinstaller_argv  # noqa: E402
from firstboot.core.context import Paths  # noqa: E402
from firstboot.core.locations import INSTALLED_CONFIG  # noqa: E402
from firstboot.status import RunResult, Status, StepReport, StepState  # noqa: E402

RUNS = 7
TARGET_S = 0.3


def freeze_one_file(dest: Path) -> Path:
    """The baseline: the same PyInstaller options with --onefile instead of --onedir."""
    work = dest / "pyinstaller"
    work.mkdir(parents=True)
    argv = [("--onefile" if a == "--onedir" else a) for a in
            pyinstaller_argv(ROOT / "firstboot" / "__main__.py", dest, work / "work", work)]
    subprocess.run(argv, cwd=ROOT, check=True, timeout=900)
    return dest / NAME


def ran_root(root: Path) -> Path:
    """A box whose first boot finished, with the default config (and its test secrets)."""
    paths = Paths(root)
    paths.status.parent.mkdir(parents=True)
    Status("firstboot", "bench", "2026-01-01T00:00:00+00:00", result=RunResult.OK,
           steps=[StepReport("system", StepState.CHANGED, "set up")]).save(paths.status)
    config = paths.at(INSTALLED_CONFIG)
    config.parent.mkdir(parents=True)
    shutil.copy(ROOT / "config/default.yaml", config)
    shutil.copytree(ROOT / "config/secrets", config.parent / "secrets")
    return root


def best_start(argv: list[str]) -> float:
    """The fastest of RUNS starts (the others lose time to the machine, not to us)."""
    times = []
    for _ in range(RUNS):
        start = time.monotonic()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                       check=False)
        times.append(time.monotonic() - start)
    return min(times)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="arkbox-bench-installer-", dir="/var/tmp"))
    try:
        folder = freeze_installer(ROOT, work / "folder") / NAME
        one_file = freeze_one_file(work / "one-file")
        empty_root = work / "empty-root"
        empty_root.mkdir()
        commands = {
            "--version": ["--version"],
            "status --root EMPTY": ["status", "--root", str(empty_root)],
            "status --root RAN": ["status", "--root", str(ran_root(work / "ran-root"))],
            "validate config/default.yaml": ["validate", str(ROOT / "config/default.yaml")],
        }
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'installer start (s, best of ' + str(RUNS) + ')':<34}{'one folder':>11}"
              f"{'one file':>10}{'ratio':>7}{'target':>8}")
        for label, args in commands.items():
            ours, baseline = best_start([str(folder), *args]), best_start([str(one_file), *args])
            target = f"{TARGET_S:.2f}" if label.startswith(("--version", "status")) else "—"
            print(f"{label:<34}{ours:>11.3f}{baseline:>10.3f}{ours / baseline:>7.2f}{target:>8}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
