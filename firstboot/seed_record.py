"""seed.json: the record of where a box's secrets came from, as status shows it.

Apart from the seed step so that `arkbox-installer status` reads it without loading the
config model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firstboot.core.files import atomic_write


@dataclass
class SeedRecord:
    """seed.json: where the secrets came from, for `arkbox-installer status`."""

    source: str  # credential | partition | metadata
    where: str
    installed_at: str
    installed: list[str]  # relative paths below the config's directory
    wiped: str
    warnings: list[str] = field(default_factory=list)


def save_record(path: Path, record: SeedRecord) -> None:
    atomic_write(path, json.dumps(asdict(record), indent=2, sort_keys=True) + "\n", 0o644)


def load_record(path: Path) -> dict[str, Any] | None:
    """The record as status shows it, or None before any seed was installed."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        return {"error": f"cannot read {path}: {err}"}
    return raw if isinstance(raw, dict) else {"error": f"{path} is not a record"}
