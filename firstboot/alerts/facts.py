"""What the conditions look at: one snapshot of the box's state, as plain data.

Every field is what status already shows (status.json, backups.json, the drill
and verify records, the certificate facts) plus disk use, the age of
/run/reboot-required and the containers' health. `gather.py` reads them from a box;
tests build them by hand. None means "not known", which never raises nor clears.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class DiskUse:
    mount: str  # "/" or "/srv"
    space_percent: float
    inode_percent: float | None  # None: the filesystem has no inode limit (btrfs)


@dataclass(frozen=True)
class ServiceHealth:
    name: str
    problem: str | None  # None: running and healthy (or running without a check)


@dataclass(frozen=True)
class BoxFacts:
    now: datetime
    # When first boot finished (/var/lib/arkbox/firstboot.done); None before.
    first_boot_done: datetime | None = None
    # status.json as status --json shows it ("command", "result", "failures", ...).
    last_run: dict[str, Any] | None = None
    backups_enabled: bool = False
    # The last successful backup's backups.json entry, and backup-failure.json.
    last_backup: dict[str, Any] | None = None
    backup_failure: dict[str, Any] | None = None
    last_drill: dict[str, Any] | None = None  # drill.json
    last_verify: dict[str, Any] | None = None  # backup-verify.json (check --verify-data)
    certificate: dict[str, Any] | None = None  # certs.renew_state.status_facts
    # None: the engine could not be asked (nothing is concluded about services).
    services: list[ServiceHealth] | None = None
    disks: list[DiskUse] = field(default_factory=list)
    reboot_required_since: datetime | None = None
    last_update: dict[str, Any] | None = None  # update.json, as status shows it
    last_fetch: dict[str, Any] | None = None  # update-fetch.json (unattended updates)
    # The weekly check of package files (arkbox-debsums.service): True when its last run
    # failed, with when it ended; None when the unit is unknown or could not be asked.
    package_check: PackageCheck | None = None


@dataclass(frozen=True)
class PackageCheck:
    failed: bool
    finished: datetime | None


def parse_time(value: object) -> datetime | None:
    """An ISO time from a record, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
