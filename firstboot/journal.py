"""The runner's journal: which steps are done, recorded only after run() and verify() passed.

/var/lib/arkbox/journal.json is rewritten whole and atomically after each step
(see files.atomic_write), so a power cut leaves the journal of the last
finished step. A record names the config and installer it was made with: a
changed config or a new installer makes the step run again (run() is
idempotent, so an unchanged end state is reported as such).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firstboot.core.files import atomic_write

log = logging.getLogger("arkbox.firstboot")

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StepRecord:
    """One step that is done: when, with which config, and what it reported."""

    name: str
    done_at: str  # ISO 8601, UTC
    config_sha256: str | None
    installer_version: str
    changed: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def stale_because(self, config_sha256: str | None, installer_version: str) -> str | None:
        """Why this record no longer vouches for the step, or None when it still does."""
        if config_sha256 != self.config_sha256:
            return "the config changed since it was done"
        if installer_version != self.installer_version:
            return f"the installer changed ({self.installer_version} -> {installer_version})"
        return None


@dataclass
class Journal:
    path: Path
    steps: dict[str, StepRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Journal:
        """The journal at `path`; empty when there is none yet.

        An unreadable journal (hand-edited, disk trouble) is not fatal: every
        step is idempotent, so starting over only costs time.
        """
        try:
            raw = json.loads(path.read_text())
            records = {
                name: StepRecord(**{**entry, "name": name})
                for name, entry in raw.get("steps", {}).items()
            }
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError, TypeError, AttributeError) as err:
            log.warning("journal %s is unreadable (%s): every step runs again", path, err)
            return cls(path)
        return cls(path, records)

    def get(self, name: str) -> StepRecord | None:
        return self.steps.get(name)

    def record(self, record: StepRecord) -> None:
        """Mark a step done; call only after its run() returned and verify() passed."""
        self.steps[record.name] = record
        self.save()

    def forget(self, name: str) -> None:
        """Drop a step's record (it no longer applies, or its end state was lost)."""
        if self.steps.pop(name, None) is not None:
            self.save()

    def save(self) -> None:
        body = {
            "schema_version": SCHEMA_VERSION,
            "steps": {
                name: {k: v for k, v in asdict(rec).items() if k != "name"}
                for name, rec in self.steps.items()
            },
        }
        atomic_write(self.path, json.dumps(body, indent=2, sort_keys=True) + "\n", mode=0o644)
