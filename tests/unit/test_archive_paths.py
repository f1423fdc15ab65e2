"""Which archive items a restore refuses before extracting (firstboot.backup.archive_paths)."""

from __future__ import annotations

import json

import pytest

from firstboot.backup.archive_paths import items_of, refusal, unsafe_paths


def _item(path: str, kind: str = "-", source: str = "") -> dict[str, str]:
    return {"path": path, "type": kind, "source": source}


SAFE = [_item(".", "d"), _item("manifest.json"), _item("volumes", "d"), _item("volumes/wiki", "d"),
        _item("volumes/wiki/data", "d"), _item("volumes/wiki/data/link", "l", "/etc/passwd"),
        _item("volumes/wiki/data/a/b"),  # a parent the archive does not list: borg makes it
        _item("volumes/wiki/data/c", "-", "volumes/wiki/data/a/b"),  # a hard link
        _item(".backup", "d"), _item(".backup/dumps", "d"), _item(".backup/dumps/db", "d"),
        _item(".backup/dumps/db/postgres.sql")]


def test_a_backup_as_arkbox_makes_it_is_safe() -> None:
    assert unsafe_paths(SAFE, ".backup") == []


@pytest.mark.parametrize(("extra", "reason"), [
    ([_item("volumes/wiki/data/x", "l", "/etc"), _item("volumes/wiki/data/x/passwd")],
     "volumes/wiki/data/x/passwd: below 'volumes/wiki/data/x', which the archive holds as a "
     "symlink"),
    # Order does not matter: the link listed after the item below it is refused as well.
    ([_item("volumes/wiki/data/y/g"), _item("volumes/wiki/data/y", "l", "/root")],
     "volumes/wiki/data/y/g: below 'volumes/wiki/data/y'"),
    ([_item("volumes/wiki/data/f"), _item("volumes/wiki/data/f/g")],
     "holds as a file"),
    ([_item("volumes/wiki/data/x", "l", "/etc"),
      _item("volumes/wiki/data/h", "-", "volumes/wiki/data/x/shadow")],
     "volumes/wiki/data/h: below 'volumes/wiki/data/x'"),
    ([_item("../etc/passwd")], "'../etc/passwd' is not a plain relative path"),
    ([_item("/etc/passwd")], "'/etc/passwd' is not a plain relative path"),
    ([_item("./x")], "'./x' is not a plain relative path"),
    ([_item("volumes/other", "l", "/etc")], "volumes/other: a symlink where arkbox keeps"),
    ([_item(".backup/dumps/db2/dump.sql", "l", "/etc/shadow")],
     "a dump that is a symlink, not a file"),
])
def test_an_item_that_would_land_outside_is_refused(extra: list[dict[str, str]],
                                                    reason: str) -> None:
    problems = unsafe_paths([*SAFE, *extra], ".backup")
    assert any(reason in p for p in problems), problems


def test_the_listing_is_read_line_by_line_and_the_refusal_names_a_few() -> None:
    lines = "\n".join(json.dumps(i) for i in SAFE) + "\n\n"
    assert list(items_of(lines)) == SAFE
    message = refusal("box-2026", [f"p{n}: why" for n in range(7)])
    assert "7 item(s)" in message and "p4: why" in message and "p5" not in message
    assert "(and 2 more)" in message
