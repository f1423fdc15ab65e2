"""Turn pydantic's validation errors into findings an operator can act on."""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from firstboot.core.config.base import ARKBOX_ERROR, describe, did_you_mean
from firstboot.core.config.problems import Finding, PathPart

_QUOTE_HINT = "put the value in quotes"
_BOOLEAN_WORDS_HINT = 'YAML reads true/false/yes/no/on/off as booleans: quote it, e.g. "yes"'
_NUMBER_HINT = 'YAML reads unquoted 03:00, 1e3 or 0755 as numbers: quote it, e.g. "03:00"'
_EMPTY_HINT = "write a value after the colon, or remove the key to use the default"
_SHORT_EXAMPLE = 60  # longer examples would drown the hint; docs/config.md has them


def findings_from(error: ValidationError, raw: object, root: type[BaseModel]) -> list[Finding]:
    """One finding per pydantic error, located by the path as written in YAML."""
    return [_finding(detail, raw, root) for detail in error.errors()]


def _finding(detail: ErrorDetails, raw: object, root: type[BaseModel]) -> Finding:
    parts, is_key = _yaml_path(detail["loc"], raw)
    message, hint = _explain(detail, parts, root, is_key)
    return Finding(parts, message, hint)


def _yaml_path(loc: tuple[int | str, ...], raw: object) -> tuple[tuple[PathPart, ...], bool]:
    """Follow pydantic's error location through the YAML data.

    pydantic adds entries that are not in the file (union tags like "secret",
    "[key]" for a bad mapping key): keep only the steps the YAML data has, and
    the last step, which names a missing or unknown key.
    """
    parts: list[PathPart] = []
    is_key = False
    current: object = raw
    for position, step in enumerate(loc):
        last = position == len(loc) - 1
        if step == "[key]":
            is_key = True
        elif isinstance(current, dict):
            key = next((k for k in current if k == step or str(k) == str(step)), None)
            if key is not None:
                parts.append(str(key))
                current = current[key]
            elif last:
                parts.append(str(step))
        elif isinstance(current, list) and isinstance(step, int) and step < len(current):
            parts.append(step)
            current = current[step]
        # a scalar has nothing inside: later steps are pydantic's own
    return tuple(parts), is_key


def _explain(
    detail: ErrorDetails, parts: tuple[PathPart, ...], root: type[BaseModel], is_key: bool
) -> tuple[str, str | None]:
    kind = detail["type"]
    value = detail.get("input")
    context: dict[str, Any] = dict(detail.get("ctx") or {})
    if kind == ARKBOX_ERROR:
        return str(context["message"]), context.get("hint")
    if kind == "missing":
        return "required key is missing", _missing_hint(parts, root)
    if kind == "extra_forbidden":
        return _unknown_key(parts, root)
    if is_key or kind == "invalid_key":
        return f"a key here must be text, got {describe(value)}", None
    got = describe(value)
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"must be a whole number, got {got}", _unquote_hint(value)
    if kind in {"float_type", "float_parsing"}:
        return f"must be a number, got {got}", _unquote_hint(value)
    if kind in {"bool_type", "bool_parsing"}:
        return f"must be true or false, got {got}", _unquote_hint(value)
    if kind == "string_type":
        return f"must be text, got {got}", _text_hint(value)
    if kind == "list_type":
        return f"must be a list, got {got}", _list_hint(value)
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return f"must be a mapping (indented key: value lines), got {got}", _mapping_hint(value)
    if kind in {"literal_error", "enum"}:
        return _not_a_choice(value, parts, root)
    if kind == "too_short":
        least = context.get("min_length", 1)
        return f"must have at least {least} item{'s' if least != 1 else ''}", None
    if kind == "too_long":
        return f"must have at most {context.get('max_length')} items", None
    if kind == "string_too_short":
        return "must not be empty", None
    if kind in {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}:
        words = {
            "greater_than_equal": "at least",
            "greater_than": "more than",
            "less_than_equal": "at most",
            "less_than": "less than",
        }
        limit = next(iter(context.values()), "?")
        return f"must be {words[kind]} {limit}, got {got}", None
    return detail["msg"].removeprefix("Value error, "), None


def _unquote_hint(value: object) -> str | None:
    if isinstance(value, str):
        return "remove the quotes around the value"
    if value is None:
        return _EMPTY_HINT
    return None


def _text_hint(value: object) -> str | None:
    if isinstance(value, bool):
        return _BOOLEAN_WORDS_HINT
    if isinstance(value, int | float):
        return _NUMBER_HINT
    if value is None:
        return _EMPTY_HINT
    return None


def _list_hint(value: object) -> str | None:
    if isinstance(value, str | int | float):
        return 'write it as a list: [value], or one "- value" line per item'
    if value is None:
        return _EMPTY_HINT
    return None


def _mapping_hint(value: object) -> str | None:
    if value is None:
        return "give the keys of this section indented below it, or remove it"
    if isinstance(value, list):
        return 'remove the "- " in front of the keys'
    return None


def _unknown_key(parts: tuple[PathPart, ...], root: type[BaseModel]) -> tuple[str, str | None]:
    model = model_at(parts[:-1], root)
    name = str(parts[-1]) if parts else "?"
    if model is None:
        return "unknown key", None
    allowed = list(model.model_fields)
    guess = did_you_mean(name, allowed)
    if guess is not None:
        return f'unknown key — did you mean "{guess}"?', None
    return "unknown key", "allowed here: " + ", ".join(allowed)


def _missing_hint(parts: tuple[PathPart, ...], root: type[BaseModel]) -> str | None:
    info = field_at(parts, root)
    if info is None or not parts:
        return None
    hint = (info.description or "").split(". ")[0].rstrip(".")
    example = flow_yaml(info.examples[0]) if info.examples else ""
    if example and len(example) <= _SHORT_EXAMPLE:
        hint += f"; e.g. {parts[-1]}: {example}"
    return hint or None


def _not_a_choice(
    value: object, parts: tuple[PathPart, ...], root: type[BaseModel]
) -> tuple[str, str | None]:
    choices = literal_choices(type_at(parts, root))
    listed = ", ".join(f'"{choice}"' for choice in choices)
    message = f"must be one of {listed}, got {describe(value)}"
    guess = did_you_mean(str(value), [str(c) for c in choices]) if choices else None
    return message, f'did you mean "{guess}"?' if guess else None


def flow_yaml(value: object) -> str:
    """A value as one line of YAML, for hints and docs."""
    text: str = yaml.safe_dump(
        value, default_flow_style=True, width=10_000, allow_unicode=True, sort_keys=False
    )
    return text.strip().removesuffix("...").strip()


def unwrap(annotation: Any) -> Any:
    """The type under Annotated[...] and Optional[...] (the model, if a union holds one)."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [unwrap(arg) for arg in get_args(annotation) if arg is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            annotation = models[0] if models else members[0]
        else:
            return annotation


def type_at(parts: tuple[PathPart, ...], root: type[BaseModel]) -> Any:
    """The declared type at a YAML path, or None where the path leaves the model."""
    current: Any = root
    for part in parts:
        current = unwrap(current)
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = info.annotation
        elif origin is dict:
            current = get_args(current)[1]
        elif origin is list:
            current = get_args(current)[0]
        else:
            return None
    return current


def model_at(parts: tuple[PathPart, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    found = unwrap(type_at(parts, root))
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


def field_at(parts: tuple[PathPart, ...], root: type[BaseModel]) -> FieldInfo | None:
    if not parts:
        return None
    model = model_at(parts[:-1], root)
    return model.model_fields.get(str(parts[-1])) if model is not None else None


def literal_choices(annotation: Any) -> tuple[object, ...]:
    found = unwrap(annotation)
    return get_args(found) if get_origin(found) is Literal else ()
