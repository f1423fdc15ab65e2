"""Lay arkbox itself into an unpacked root fs: installer, units, config, secrets, images."""

from __future__ import annotations

import shutil
from pathlib import Path

from firstboot.core.errors import BadInputError

INSTALLER_PATH = Path("usr/local/sbin/arkbox-installer")
CONFIG_DIR = Path("etc/arkbox")
IMAGES_DIR = Path("usr/share/arkbox/images")
RECIPES_DIR = Path("usr/share/arkbox/recipes")
UNITS = ("arkbox-firstboot.service", "arkbox-images.service")


def _copy(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def install_installer(rootfs: Path, binary: Path) -> None:
    _copy(binary, rootfs / INSTALLER_PATH, 0o755)


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


def install_config(rootfs: Path, config_text: str, secret_files: dict[str, Path]) -> list[str]:
    """Write the config and the secret files it references, 0600, below /etc/arkbox.

    `secret_files` maps the path as written in the config (relative to the
    config file) to the file on the build machine, so the references resolve
    the same way inside the image.
    """
    etc = rootfs / CONFIG_DIR
    etc.mkdir(parents=True, exist_ok=True)
    etc.chmod(0o700)
    (etc / "appliance.yaml").write_text(config_text)
    (etc / "appliance.yaml").chmod(0o600)
    written = []
    for relative, source in sorted(secret_files.items()):
        dest = (etc / relative).resolve()
        if not dest.is_relative_to(etc.resolve()):
            raise BadInputError(
                f"secret file {relative!r} is outside the config's directory",
                hint="keep secret files next to the config, e.g. secrets/NAME, so the same "
                "references work inside the image (/etc/arkbox/secrets/NAME)",
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
    dest = rootfs / IMAGES_DIR / images_tar.name
    _copy(images_tar, dest, 0o644)
    return dest
