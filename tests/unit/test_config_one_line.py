"""Every text of the config and of a recipe is one line, unless its type says it may span
lines (issue #17: a line break in a value added lines to units, authorized_keys and mail
tables). New text fields are caught here: declare them with a Text type, `Line`, or
MULTI_LINE when they reach only an argv or an environment."""

from __future__ import annotations

import types
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from annotated_types import GroupedMetadata
from pydantic import BaseModel, ValidationError

from firstboot.core.config import Appliance
from firstboot.core.config.base import MULTI_LINE, ONE_LINE
from firstboot.core.config.mail import Relay
from firstboot.core.config.scalars import Schedule
from firstboot.core.recipe import Recipe


def _expanded(metadata: Sequence[object]) -> list[object]:
    flat: list[object] = []
    for item in metadata:
        flat.extend(_expanded(list(item)) if isinstance(item, GroupedMetadata) else [item])
    return flat


def _texts(annotation: Any, metadata: Sequence[object], where: str,
           seen: set[type]) -> Iterator[tuple[str, bool]]:
    """(where, covered) for every str inside `annotation`."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *more = get_args(annotation)
        yield from _texts(base, [*metadata, *more], where, seen)
    elif annotation is str:
        flat = _expanded(metadata)
        yield where, any(item is ONE_LINE or item is MULTI_LINE for item in flat)
    elif origin in (list, Union, types.UnionType):
        for arg in get_args(annotation):
            yield from _texts(arg, (), where + "[]" if origin is list else where, seen)
    elif origin is dict:
        key, value = get_args(annotation)
        yield from _texts(key, (), where + ".<key>", seen)
        yield from _texts(value, (), where + ".<value>", seen)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return
        seen.add(annotation)
        for name, info in annotation.model_fields.items():
            yield from _texts(info.annotation, info.metadata, f"{where}.{name}", seen)
    else:
        assert origin is Literal or annotation in (int, float, bool, type(None)), where


@pytest.mark.parametrize("model", [Appliance, Recipe], ids=lambda m: m.__name__)
def test_every_text_is_one_line_or_declared_multi_line(model: type[BaseModel]) -> None:
    texts = list(_texts(model, (), model.__name__, set()))
    assert len(texts) > 10  # the walk reached the nested sections
    uncovered = [where for where, covered in texts if not covered]
    assert not uncovered, f"text fields without ONE_LINE or MULTI_LINE: {uncovered}"


def _message(model: type[BaseModel], data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return str(caught.value.errors()[0]["ctx"]["message"])


@pytest.mark.parametrize("value", ["daily\r", "daily\n", "da\x00ily", "daily\x0b",
                                   "daily\x85", "daily\u2028", "daily\x1b[2J"])
def test_line_breaks_and_control_characters_are_refused_before_the_pattern(value: str) -> None:
    relay = {"host": "smtp.relay.example", "username": value, "password": {"env": "PW"}}
    assert _message(Relay, relay).startswith("must be one line: holds ")


def test_a_tab_and_any_printable_text_stay_allowed() -> None:
    from pydantic import TypeAdapter
    assert TypeAdapter(Schedule).validate_python("Mon..Fri *-*-* 03:00:00 Europe/Paris") \
        == "Mon..Fri *-*-* 03:00:00 Europe/Paris"
    firewall = Appliance.model_fields["firewall"].annotation
    assert isinstance(firewall, type)
    rule = firewall.model_validate(
        {"allow": [{"port": 51820, "comment": "Wire\tGuard, née ünïcode"}]})
    assert rule.model_dump()["allow"][0]["comment"] == "Wire\tGuard, née ünïcode"
