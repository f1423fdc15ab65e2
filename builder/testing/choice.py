"""Which config a test module's box is built from, where the build goes, and the rig's
name: pure, so the unit tests check every rule without pytest or an engine.

The config comes from, first to last: the module's `arkbox_config` marker (relative to
the test module's directory), the command line `--arkbox-config` (relative to where
pytest was started), the ini option `arkbox_config` (relative to the ini file's
directory), and else the embedded default (config/default.yaml), as `arkbox try`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from firstboot.core.errors import BadInputError

MARKER = "arkbox_config"
OPTION = "--arkbox-config"
INI = "arkbox_config"


@dataclass(frozen=True)
class ConfigChoice:
    """A config path as given, where it was given, and what a relative path is relative to."""

    given: str
    source: str  # e.g. "the arkbox_config marker of tests/test_wiki.py"
    base: Path  # a relative `given` is relative to this directory

    @property
    def path(self) -> Path:
        path = Path(self.given).expanduser()
        return path if path.is_absolute() else self.base / path


def choose(marker: ConfigChoice | None, option: ConfigChoice | None, ini: ConfigChoice | None,
           default: Path) -> ConfigChoice:
    """The first of marker, command-line option, ini option given; else the default."""
    for choice in (marker, option, ini):
        if choice is not None and choice.given:
            return choice
    return ConfigChoice(str(default), "the default (no marker, option or ini setting)",
                        default.parent)


def marker_choice(args: tuple[object, ...], module: Path) -> ConfigChoice:
    """The `arkbox_config("PATH")` marker of a test module; BadInputError when misused."""
    if len(args) != 1 or not isinstance(args[0], str | Path) or not str(args[0]):
        raise BadInputError(
            f"the {MARKER} marker of {module} takes one path, got {args!r}",
            hint=f'pytestmark = pytest.mark.{MARKER}("../appliance.yaml")  (relative to the '
                 "test module's directory)")
    return ConfigChoice(str(args[0]), f"the {MARKER} marker of {module}", module.parent)


def existing_config(choice: ConfigChoice) -> Path:
    """The chosen config's absolute path; BadInputError saying what and where when it is
    not a file."""
    path = choice.path.resolve()
    if path.is_file():
        return path
    relative = "" if Path(choice.given).is_absolute() else f" (relative to {choice.base})"
    what = "is a directory, not a config file" if path.is_dir() else "does not exist"
    raise BadInputError(
        f"the arkbox config {choice.given!r} from {choice.source} {what}: looked at "
        f"{path}{relative}",
        hint=f"fix the path in {choice.source}, or give an absolute one; an appliance.yaml "
             f"is checked with: arkbox validate PATH")


def out_dir_for(config: Path, out_base: Path) -> Path:
    """Where a config's build goes: one folder per config (its stem and a digest of its
    absolute path, so two appliance.yaml in different folders never share one)."""
    digest = hashlib.sha256(str(config).encode()).hexdigest()[:8]
    return out_base / f"{config.stem}-{digest}"


def rig_name_for(config: Path, out_dir: Path) -> str:
    """The rig's name (its containers are NAME-appliance, NAME-backup, ...): fixed for a
    config and an out folder, so a run killed before its clean-up is replaced by the next
    run of the same suite, and two checkouts never take each other's rig down."""
    digest = hashlib.sha256(f"{config}\0{out_dir.resolve()}".encode()).hexdigest()[:8]
    return f"arkbox-pytest-{digest}"
