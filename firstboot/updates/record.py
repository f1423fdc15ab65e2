"""The last update's record (/var/lib/arkbox/update.json), for `status` and the status page.

Written at every phase, so an update cut off by a power loss shows where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firstboot.core.context import Paths
from firstboot.core.files import atomic_write
from firstboot.core.locks import lock_held

RECORD_NAME = "update.json"
FETCH_RECORD = "update-fetch.json"  # the last unattended fetch (fetch.py writes it)
LOCK_NAME = "update.lock"

# Results: running while it runs; then ok, rolled back (the update failed, the box is back
# on its previous build), or failed (it failed before changing anything, or the rollback
# failed too: the failure says which).
RUNNING, OK, ROLLED_BACK, FAILED = "running", "ok", "rolled back", "failed"
CHANGING_PHASES = ("swap", "apply", "rollback")


@dataclass
class UpdateRecord:
    bundle: str
    started_at: str
    version: list[str]  # [from, to]
    archive: list[str | None]  # newest Debian archive date [from, to]
    images_changed: list[str] = field(default_factory=list)
    # The new build's service image IDs: what a rollback after a cut-off update removes.
    new_image_ids: list[str] = field(default_factory=list)
    installer_changed: bool = False
    config_changed: bool = False
    result: str = RUNNING
    phase: str = "check"  # check, backup, swap, apply, rollback, done
    backup_archive: str | None = None
    finished_at: str | None = None
    seconds: float | None = None
    failure: str | None = None
    hint: str | None = None

    def save(self, paths: Paths) -> None:
        atomic_write(record_path(paths), json.dumps(asdict(self), indent=2) + "\n", 0o644)

    def summary(self) -> str:
        target = f"arkbox {self.version[1]}"
        changed = ", ".join(self.images_changed) or "no image"
        if self.result == OK:
            return f"updated to {target} ({changed} changed)"
        if self.result == RUNNING:
            return f"update to {target} running ({self.phase})"
        return f"update to {target} {self.result}: {self.failure}"


def record_path(paths: Paths) -> Path:
    return paths.state / RECORD_NAME


def load_record(paths: Paths) -> dict[str, Any] | None:
    """The record as status shows it; None before the first update."""
    try:
        data: dict[str, Any] = json.loads(record_path(paths).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data


def update_running(paths: Paths) -> bool:
    """Whether an update holds its lock now (a record saying "running" without one was cut
    off)."""
    return lock_held(paths.state / LOCK_NAME)


def update_status(paths: Paths) -> dict[str, Any] | None:
    """The record for status: an update cut off midway says so, with the way out."""
    record = load_record(paths)
    if record is not None and record.get("result") == RUNNING and not update_running(paths):
        phase = record.get("phase")
        record["result"] = "interrupted"
        record["failure"] = f"cut off in its {phase} phase"
        # Files move from the swap on; before it, nothing was changed.
        record["hint"] = ("the next boot rolls it back (arkbox-update-recover.service); "
                          "or now: arkbox-installer update --rollback"
                          if phase in CHANGING_PHASES
                          else "nothing was changed: run the update again")
    return record


def fetch_record(paths: Paths) -> dict[str, Any] | None:
    """The last unattended fetch as status shows it; None before the first. Kept here,
    beside the update's record, so status and the alerts read both without importing
    the fetch (and the update it runs)."""
    try:
        data: dict[str, Any] = json.loads((paths.state / FETCH_RECORD).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data
