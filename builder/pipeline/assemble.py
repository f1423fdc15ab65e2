"""Lay arkbox itself into an unpacked root fs: installer, units, config, images.

No secret goes in: the config carries references only, and each box gets the values
in its seed at first boot (`arkbox seed`, docs/seed.md), so the image is generic.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from firstboot.core.errors import BadInputError
from firstboot.core.locations import INSTALLER_PROGRAM

INSTALLER_PATH = Path(INSTALLER_PROGRAM).relative_to("/")
# The frozen folder; INSTALLER_PATH links to the program in it (PyInstaller's start-up
# follows the link to find `_internal/` beside the program).
INSTALLER_DIR = Path("usr/local/lib/arkbox-installer")
CONFIG_DIR = Path("etc/arkbox")
IMAGES_DIR = Path("usr/share/arkbox/images")
RECIPES_DIR = Path("usr/share/arkbox/recipes")
UNITS = ("arkbox-firstboot.service", "arkbox-images.service",
         "arkbox-update-recover.service")


def _copy(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def install_installer(rootfs: Path, folder: Path) -> None:
    """Copy the frozen folder to INSTALLER_DIR and link INSTALLER_PATH to its program."""
    dest = rootfs / INSTALLER_DIR
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(folder, dest, symlinks=True)
    link = rootfs / INSTALLER_PATH
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path("/") / INSTALLER_DIR / folder.name)


def install_units(rootfs: Path, units_dir: Path) -> list[str]:
    """Copy arkbox's systemd units and enable them the way `systemctl enable` would."""
    installed = []
    for unit in UNITS:
        _copy(units_dir / unit, rootfs / "etc/systemd/system" / unit, 0o644)
        wants = rootfs / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / unit
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path("/etc/systemd/system") / unit)
        installed.append(unit)
    return installed


def install_config(rootfs: Path, config: bytes, public_files: dict[str, Path]) -> list[str]:
    """Write the config and the public files it references (tls.ca_bundle) below
    /etc/arkbox, 0600 in a 0700 directory.

    `public_files` maps the path as written in the config (relative to the
    config file) to the file on the build machine, so the references resolve
    the same way inside the image. Never pass a secret here.
    """
    etc = rootfs / CONFIG_DIR
    etc.mkdir(parents=True, exist_ok=True)
    etc.chmod(0o700)
    # The exact bytes: the seed is bound to their sha256.
    (etc / "appliance.yaml").write_bytes(config)
    (etc / "appliance.yaml").chmod(0o600)
    written = []
    for relative, source in sorted(public_files.items()):
        dest = (etc / relative).resolve()
        if not dest.is_relative_to(etc.resolve()):
            raise BadInputError(
                f"file {relative!r} is outside the config's directory",
                hint="keep files the config refers to next to it, e.g. certs/NAME, so the "
                "same references work inside the image (/etc/arkbox/certs/NAME)",
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.parent.chmod(0o700)
        _copy(source, dest, 0o600)
        written.append(str(Path("/") / CONFIG_DIR / relative))
    return written


def install_recipes(rootfs: Path, recipes_dir: Path, names: list[str]) -> None:
    """Each image's recipe.yaml: the services step reads caps, users and volumes from it."""
    for name in names:
        recipe = recipes_dir / name / "recipe.yaml"
        _copy(recipe, rootfs / RECIPES_DIR / name / "recipe.yaml", 0o644)


def install_images(rootfs: Path, images_tar: Path) -> Path:
    """The images tarball, hard-linked from the cache where it can be (a gigabyte not
    copied; nothing writes to it in the tree, which is only read and then removed)."""
    dest = rootfs / IMAGES_DIR / images_tar.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(images_tar, dest)
    except OSError:  # another file system, or links refused
        shutil.copyfile(images_tar, dest)
    # On a link this is the cache's file too: `docker save` made it 0600, yet it holds no
    # secret (the cache holds none), and the image needs it readable as before.
    dest.chmod(0o644)
    return dest
