"""Freeze `arkbox-installer` with PyInstaller, so the image needs no Python.

One folder, not one file: a one-file binary unpacks its 24 MB into /tmp on every start
(0.6 s before any of our code ran); the folder starts at once (docs/build.md).
"""

from __future__ import annotations

import shutil
import sys
from importlib import metadata
from pathlib import Path

from builder.pipeline.cache import digest_tree
from firstboot.core.execute import run

NAME = "arkbox-installer"


def installer_inputs(source_dir: Path) -> dict[str, object]:
    """What the frozen binary depends on: our sources, the Python and PyInstaller versions."""
    return {
        "firstboot": digest_tree(source_dir / "firstboot"),  # includes the templates
        "pyproject": digest_tree(source_dir, [source_dir / "pyproject.toml"]),
        "python": sys.version,
        "pyinstaller": metadata.version("pyinstaller"),
        "layout": "one folder",  # not a one-file build cached by an older arkbox
    }


def pyinstaller_argv(entry: Path, dist: Path, work: Path, spec_dir: Path) -> tuple[str, ...]:
    return (
        sys.executable, "-m", "PyInstaller",
        "--onedir", "--noconfirm", "--clean", "--log-level", "WARN",
        "--name", NAME,
        # Loaded lazily by name (rich, pydantic), so PyInstaller's import scan misses them.
        "--collect-submodules", "firstboot",
        "--collect-submodules", "rich._unicode_data",
        # pygal reads its chart CSS from its package directory (the status page's plots).
        "--collect-data", "pygal",
        # jinja2 templates are data files, found relative to the package at run time.
        "--add-data", f"{entry.parent / 'templates'}:firstboot/templates",
        "--distpath", str(dist), "--workpath", str(work), "--specpath", str(spec_dir),
        str(entry),
    )


def freeze_installer(source_dir: Path, dest_dir: Path) -> Path:
    """Build the folder `dest_dir/arkbox-installer/` (the program and its `_internal/`);
    returns the folder."""
    build = dest_dir / "pyinstaller"
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    argv = pyinstaller_argv(source_dir / "firstboot" / "__main__.py", dest_dir, build / "work",
                            build)
    run(argv, cwd=source_dir, timeout=900,
        hint="install the freeze extra: .venv/bin/pip install -e '.[freeze]'")
    shutil.rmtree(build)
    folder = dest_dir / NAME
    run((str(folder / NAME), "--version"), timeout=60)
    return folder
