"""Earlier root fs imports are removed to keep the disk, but not those another checkout's
test run may still be between two boxes on (younger than KEEP_RECENT_IMPORTS_S)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import docker.errors
import pytest

from builder.pipeline.service_images import (
    KEEP_RECENT_IMPORTS_S,
    created_epoch,
    remove_older_imports,
)

NOW = created_epoch("2026-12-08T12:00:00Z") or 0.0
REPOSITORY = "arkbox/appliance"


@dataclass
class FakeImage:
    tags: list[str]
    created: str

    @property
    def attrs(self) -> dict[str, Any]:
        return {"Created": self.created}


@dataclass
class FakeImages:
    listed: list[FakeImage]
    in_use: set[str] = field(default_factory=set)
    removed: list[str] = field(default_factory=list)

    def list(self, name: str) -> list[FakeImage]:
        assert name == REPOSITORY
        return self.listed

    def remove(self, tag: str) -> None:
        if tag in self.in_use:
            raise docker.errors.APIError("conflict", explanation="image is being used")
        self.removed.append(tag)


@dataclass
class FakeClient:
    images: FakeImages


def test_created_reads_the_engines_nanoseconds_and_offsets() -> None:
    assert created_epoch("2026-12-08T12:00:00.500000000Z") == NOW + 0.5
    assert created_epoch("2026-12-08T13:00:00+01:00") == NOW
    assert created_epoch("yesterday") is None


@pytest.mark.parametrize(("age_s", "removed"), [
    (KEEP_RECENT_IMPORTS_S + 60, True),
    (KEEP_RECENT_IMPORTS_S - 60, False),  # another run may be between two boxes on it
])
def test_an_earlier_import_goes_only_once_it_is_old(age_s: int, removed: bool) -> None:
    stamp = datetime.fromtimestamp(NOW - age_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")
    images = FakeImages([FakeImage([f"{REPOSITORY}:old"], stamp),
                         FakeImage([f"{REPOSITORY}:new"], "2026-12-08T12:00:00Z")])
    gone = remove_older_imports(FakeClient(images), REPOSITORY,  # type: ignore[arg-type]
                                keep=f"{REPOSITORY}:new", now=NOW)
    assert gone == ([f"{REPOSITORY}:old"] if removed else [])
    assert images.removed == gone


def test_an_import_in_use_or_of_unknown_age_stays() -> None:
    images = FakeImages([FakeImage([f"{REPOSITORY}:used"], "2026-12-01T12:00:00Z"),
                         FakeImage([f"{REPOSITORY}:odd"], "")],
                        in_use={f"{REPOSITORY}:used"})
    gone = remove_older_imports(FakeClient(images), REPOSITORY,  # type: ignore[arg-type]
                                keep=f"{REPOSITORY}:new", now=NOW)
    assert gone == [] and images.removed == []
