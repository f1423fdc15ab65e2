"""What is wrong with a config: one `Problem` per finding, all raised together."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from firstboot.core.errors import BadInputError

PathPart = str | int
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def dotted(parts: Sequence[PathPart]) -> str:
    """A path as operators write it: services.wiki.route.port, mail.mailboxes[1].address.

    Keys that hold dots or other punctuation (e-mail addresses, host names) are
    quoted so the path stays unambiguous: mail.aliases["postmaster@arkbox.test"].
    """
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f'["{part}"]'
    return text


@dataclass(frozen=True)
class Problem:
    """One finding in a config file, located by dotted path and YAML line."""

    path: str
    message: str
    line: int | None = None
    hint: str | None = None

    @property
    def location(self) -> str:
        return f"line {self.line}" if self.line is not None else ""

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        text = f"{where}{self.message}"
        return f"{self.location}  {text}" if self.location else text


class ConfigInvalid(BadInputError):
    """The config file cannot be used; `problems` lists every reason at once."""

    def __init__(
        self,
        path: Path,
        problems: Sequence[Problem],
        warnings: Sequence[Problem] = (),
    ) -> None:
        self.path = path
        self.problems = list(problems)
        self.warnings = list(warnings)
        count = len(self.problems)
        super().__init__(
            f"{path}: {count} problem{'s' if count != 1 else ''}",
            hint=f"fix them, then check again with: arkbox validate {path}",
        )

    def __str__(self) -> str:
        return format_problems(self)


def format_problems(err: ConfigInvalid, display_name: str | None = None) -> str:
    """Render every problem of `err` as an operator reads them, hints under their line."""
    name = display_name if display_name is not None else str(err.path)
    count = len(err.problems)
    header = f"{name}: {count} problem{'s' if count != 1 else ''}"
    return "\n".join([header, *_render(err.problems)])


def format_warnings(name: str, warnings: Sequence[Problem]) -> str:
    """Render warnings (the config is usable, but something deserves attention)."""
    if not warnings:
        return ""
    count = len(warnings)
    header = f"{name}: {count} warning{'s' if count != 1 else ''}"
    return "\n".join([header, *_render(warnings)])


def _render(problems: Sequence[Problem]) -> list[str]:
    lines: list[str] = []
    for problem in problems:
        lines.append(f"  {problem}")
        if problem.hint:
            # align the hint under the path, past "line N  "
            indent = 2 + (len(problem.location) + 2 if problem.location else 0)
            lines.append(f"{' ' * indent}hint: {problem.hint}")
    return lines


@dataclass(frozen=True)
class Finding:
    """A problem located by path only; the loader adds the YAML line."""

    parts: tuple[PathPart, ...]
    message: str
    hint: str | None = None
    line: int | None = None  # when known better than by path (a duplicate key)

    def located(self, line: int | None) -> Problem:
        return Problem(dotted(self.parts), self.message, self.line or line, self.hint)
