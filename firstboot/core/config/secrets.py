"""Secret references: the config names where a secret lives, never the secret itself."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from firstboot.core.config.base import Line, key, refuse
from firstboot.core.config.problems import PathPart
from firstboot.core.config.scalars import EnvName
from firstboot.core.errors import BadInputError

# On the box an {env: NAME} secret is the file env/NAME next to the config (the seed puts
# it there): the environment of a build machine is gone by then.
ENV_DIR = "env"
REFERENCE_HINT = "write {file: secrets/NAME} (a file next to the config, mode 0600) or {env: NAME}"


class SecretUnavailable(BadInputError):
    """A referenced secret could not be read where it is used."""


class SecretRef(BaseModel):
    """Where a secret is kept: a file (`{file: PATH}`) or an environment variable (`{env: NAME}`).

    A file path is relative to the directory of the config file. The value is
    read only when it is used (`resolve`), never stored in the model or shown.
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={"oneOf": [{"required": ["file"]}, {"required": ["env"]}]},
    )

    file: Line | None = key(
        "Path of a file holding the secret, relative to the config file's directory (or "
        "absolute). One trailing newline is ignored.",
        default=None, min_length=1, example="secrets/borg-passphrase")
    env: EnvName | None = key(
        "Name of an environment variable holding the secret. On the box, where the "
        "variable is not set, the file env/NAME next to the config (the seed puts it there).",
        default=None, example="ARKBOX_BORG_PASSPHRASE")

    @model_validator(mode="before")
    @classmethod
    def _refuse_inline_values(cls, data: Any) -> Any:
        # Never echo `data` in the message: it may be the secret itself.
        if not isinstance(data, dict):
            raise refuse("must be a secret reference, not the secret itself", REFERENCE_HINT)
        return data

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SecretRef:
        if (self.file is None) == (self.env is None):
            raise refuse(
                "give exactly one of file: or env:",
                "e.g. {file: secrets/NAME} or {env: NAME}",
            )
        return self

    def __repr_args__(self) -> Iterator[tuple[str, Any]]:
        if self.file is not None:
            yield "file", self.file
        if self.env is not None:
            yield "env", self.env

    def __str__(self) -> str:
        return repr(self)

    def location(self, base_dir: Path) -> Path | None:
        """The file holding the secret, or None for an environment reference."""
        if self.file is None:
            return None
        return base_dir / self.file

    def env_file(self, base_dir: Path) -> Path:
        """Where an {env: NAME} secret is kept on the box: env/NAME next to the config."""
        assert self.env is not None
        return base_dir / ENV_DIR / self.env

    def resolve(self, base_dir: Path) -> str:
        """The secret's value (an unset variable falls back to its env/NAME file). Do not
        log it."""
        location = self.location(base_dir)
        if location is None:
            assert self.env is not None
            value = os.environ.get(self.env)
            if value is not None:
                return value
            location = self.env_file(base_dir)
            if not location.is_file():
                raise SecretUnavailable(
                    f"environment variable {self.env} is not set "
                    f"(and there is no file {ENV_DIR}/{self.env} next to the config)",
                    hint=f"export {self.env}=... before running arkbox",
                )
        try:
            text = location.read_text(encoding="utf-8")
        except OSError as err:
            raise SecretUnavailable(
                f"cannot read secret file {location}: {err.strerror}",
                hint=f"create it: {create_command(location)}",
            ) from err
        return text.removesuffix("\n").removesuffix("\r")


def create_command(location: Path) -> str:
    """A shell line that writes a secret file nobody else can read, kept out of history."""
    return f"(umask 077; cat > {location}), type the secret, then Ctrl-D"


def iter_secret_refs(
    node: object, path: tuple[PathPart, ...] = ()
) -> Iterator[tuple[tuple[PathPart, ...], SecretRef]]:
    """Every SecretRef inside a (partly) validated config, with its path."""
    if isinstance(node, SecretRef):
        yield path, node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from iter_secret_refs(getattr(node, name), (*path, name))
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from iter_secret_refs(value, (*path, key))
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from iter_secret_refs(value, (*path, index))


@dataclass(frozen=True)
class FileFinding:
    """What is wrong with a referenced file; `fatal` findings make the config invalid."""

    message: str
    hint: str
    fatal: bool


def inspect_file(location: Path, shown: str, *, secret: bool) -> FileFinding | None:
    """Check a file the config refers to: present, a regular file, readable, not empty.

    Secret files readable by group or others are reported, not refused: a git
    checkout does not keep modes, and the build installs secrets with mode 0600.
    """
    what = "secret file" if secret else "file"
    try:
        info = location.stat()
    except FileNotFoundError:
        hint = f"create it: {create_command(location)}" if secret else f"looked for {location}"
        return FileFinding(f'{what} "{shown}" does not exist', hint, True)
    except OSError as err:
        return FileFinding(f'cannot reach {what} "{shown}": {err.strerror}', str(location), True)
    if stat.S_ISDIR(info.st_mode):
        return FileFinding(
            f'{what} "{shown}" is a directory, not a file', f"point to a file in {location}", True
        )
    if not stat.S_ISREG(info.st_mode):
        return FileFinding(f'{what} "{shown}" is not a regular file', str(location), True)
    try:
        with location.open("rb") as handle:
            handle.read(1)
    except OSError as err:
        return FileFinding(
            f'cannot read {what} "{shown}": {err.strerror}',
            f"make it readable by the user running arkbox: chown and chmod 0600 {location}",
            True,
        )
    if info.st_size == 0:
        return FileFinding(f'{what} "{shown}" is empty', f"write the value into {location}", True)
    if secret and info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        return FileFinding(
            f'secret file "{shown}" can be read by other users (mode {mode:04o})',
            f"chmod 0600 {location}",
            False,
        )
    return None
