"""Freeze `arkbox-installer` into one file with PyInstaller, so the image needs no Python."""

from __future__ import annotations

import shutil
import sys
from importlib import metadata
from pathlib import Path

from builder.pipeline.cache import digest_tree
from firstboot.core.execute import run


def installer_inputs(source_dir: Path) -> dict[str, object]:
    """What the frozen binary depends on: our sources, the Python and PyInstaller versions."""
    return {
        "firstboot": digest_tree(source_dir / "firstboot"),  # includes the templates
        "pyproject": digest_tree(source_dir, [source_dir / "pyproject.toml"]),
        "python": sys.version,
        "pyinstaller": metadata.version("pyinstaller"),
    }


def pyinstaller_argv(entry: Path, dist: Path, work: Path, spec_dir: Path) -> tuple[str, ...]:
    return (
        sys.executable, "-m", "PyInstaller",
        "--onefile", "--noconfirm", "--clean", "--log-level", "WARN",
        "--name", "arkbox-installer",
        # Loaded lazily by name (rich, pydantic), so PyInstaller's import scan misses them.
        "--collect-submodules", "firstboot",
        "--collect-submodules", "rich._unicode_data",
        # jinja2 templates are data files, found relative to the package at run time.
        "--add-data", f"{entry.parent / 'templates'}:firstboot/templates",
        "--distpath", str(dist), "--workpath", str(work), "--specpath", str(spec_dir),
        str(entry),
    )


def freeze_installer(source_dir: Path, dest_dir: Path) -> Path:
    """Build the one-file binary into dest_dir; returns its path."""
    build = dest_dir / "pyinstaller"
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    argv = pyinstaller_argv(source_dir / "firstboot" / "__main__.py", dest_dir, build / "work",
                            build)
    run(argv, cwd=source_dir, timeout=900,
        hint="install the freeze extra: .venv/bin/pip install -e '.[freeze]'")
    shutil.rmtree(build)
    binary = dest_dir / "arkbox-installer"
    run((str(binary), "--version"), timeout=60)
    return binary
