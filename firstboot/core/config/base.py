"""Building blocks of the config model: the section base class and plain-words refusals.

pydantic's own messages name regexes and Python types; every refusal here says
what is wrong in words an operator understands, with a hint where one helps.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import GroupedMetadata
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

# The one error type our own validators raise; ctx carries "message" and "hint".
ARKBOX_ERROR = "arkbox"


@dataclass(frozen=True)
class Kind:
    """How the reference docs name a type, e.g. "host name" or "size"."""

    name: str


def refuse(message: str, hint: str | None = None) -> PydanticCustomError:
    """An error whose message reaches the operator as written."""
    return PydanticCustomError(ARKBOX_ERROR, "{message}", {"message": message, "hint": hint})


def describe(value: object) -> str:
    """A value as the operator wrote it in YAML, short enough for one line."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f'"{shown}"'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def explain(hint: str | None = None, **templates: str) -> WrapValidator:
    """Replace pydantic's message for the given error types by `templates`.

    A template may use {value}: the refused value as written in YAML.
    """

    def wrap(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError as err:
            first = err.errors()[0]
            template = templates.get(first["type"])
            if template is None:
                raise
            # replace, not format: templates may hold braces ("{SHA512-CRYPT}")
            raise refuse(template.replace("{value}", describe(value)), hint) from None

    return WrapValidator(wrap)


def mismatch(message: str, hint: str | None = None) -> WrapValidator:
    """Say `message` (and the refused value) when a string does not match its pattern."""
    return explain(hint, string_pattern_mismatch=message + ", got {value}")


# What no one-line value may hold. \n and \r end a line for systemd (a lone \r too), sshd,
# Postfix and Dovecot; \v, \f, \x1c-\x1e, \x85, U+2028 and U+2029 end one for Python's
# splitlines and for YAML; NUL ends a C string. No other control character belongs in a
# value either; a tab may stay.
_NOT_IN_A_LINE = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_CHARACTER_NAMES = {"\n": "a line break (\\n)", "\r": "a carriage return (\\r)",
                    "\x00": "a NUL character (\\0)", "\x85": "a next-line character (U+0085)",
                    "\u2028": "a line separator (U+2028)",
                    "\u2029": "a paragraph separator (U+2029)"}
ONE_LINE_HINT = ("write the value on one line, without escapes like \\n; a YAML block "
                 "(| or >) ends with a line break")


def _character(char: str) -> str:
    return _CHARACTER_NAMES.get(char, f"a control character (U+{ord(char):04X})")


def is_one_line(text: str) -> bool:
    """`text` holds nothing ONE_LINE refuses."""
    return _NOT_IN_A_LINE.search(text) is None


def _refuse_line_breaks(value: Any) -> Any:
    if isinstance(value, str) and (found := _NOT_IN_A_LINE.search(value)):
        raise refuse(f"must be one line: holds {_character(found.group())} at character "
                     f"{found.start() + 1}", ONE_LINE_HINT)
    return value


def _refuse_nul(value: Any) -> Any:
    if isinstance(value, str) and (at := value.find("\x00")) >= 0:
        raise refuse(f"must not hold a NUL character (\\0), found at character {at + 1}")
    return value


# Every text value of the config is one line unless its type says MULTI_LINE: the values
# reach line-based files (units, authorized_keys, Postfix and Dovecot tables), where a line
# break would add a line of the attacker's choosing. Annotate a text type with ONE_LINE
# last (it then runs first: its message beats a pattern's); tests/unit/
# test_config_one_line.py checks that every text of the config is one or the other.
ONE_LINE = BeforeValidator(_refuse_line_breaks)
# Text that reaches only an argv or an environment (never a line-based file) may span lines.
MULTI_LINE = BeforeValidator(_refuse_nul)
Line = Annotated[str, ONE_LINE]


@dataclass(frozen=True)
class Text(Kind, GroupedMetadata):
    """A text type declared once: its name in the docs, the pattern a value must match,
    and what the operator is told (with the value) when it does not.

    Use as `Annotated[str, Text(...)]`, then any further validator. The value is one
    line (ONE_LINE) before its pattern is tried.
    """

    pattern: str
    refusal: str
    hint: str | None = None

    def __iter__(self) -> Iterator[object]:
        yield from Field(pattern=self.pattern).metadata
        yield mismatch(self.refusal, self.hint)
        yield ONE_LINE


@dataclass(frozen=True, init=False)
class Bounded(Kind, GroupedMetadata):
    """A whole-number type declared once: its bounds, also named in the docs ("port
    (1-65535)") and in the refusal of a value outside them."""

    low: int
    high: int

    def __init__(self, noun: str, low: int, high: int) -> None:
        super().__init__(f"{noun} ({low}-{high})")
        object.__setattr__(self, "low", low)  # frozen, as the dataclass's own __init__ does
        object.__setattr__(self, "high", high)

    def __iter__(self) -> Iterator[object]:
        yield from Field(ge=self.low, le=self.high).metadata
        outside = f"must be between {self.low} and {self.high}, got {{value}}"
        yield explain(greater_than_equal=outside, less_than_equal=outside)


def key(description: str, *, example: Any, **field: Any) -> Any:
    """A config key's Field: what it means and one example (docs/config.md and the JSON
    Schema show both), then pydantic's own arguments (default, default_factory, min_length).

    `name: Type = key("What it is.", default=..., example=...)`; without a default the key
    is required.
    """
    return Field(description=description, examples=[example], **field)


def did_you_mean(word: str, choices: list[str] | set[str] | tuple[str, ...]) -> str | None:
    """The closest of `choices` to a misspelt `word`, if one is close enough."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return close[0] if close else None


class Section(BaseModel):
    """Base of every mapping in the config.

    Unknown keys are errors (a typo must not be ignored) and values keep the
    type YAML gave them (strict: "80" is not a port), as the JSON Schema says.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# Public halves of throw-away keys (private halves discarded), for examples only.
EXAMPLE_ADMIN_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF6YilbxuYcReyoVRXRnJrBiinY8edFG7Xgx8AxGsXkQ ops@laptop"
)
EXAMPLE_HOST_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIALjbvmFclSOCISfqnkRMivfo2vDh0/XUO/QtDA1fI7y root@backup"
)
