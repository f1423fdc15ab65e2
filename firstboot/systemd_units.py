"""Installing (and removing) a service + timer pair that a step owns (backups, drills,
certificate renewal)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from firstboot.core.files import write_if_changed

if TYPE_CHECKING:
    from firstboot.core.context import FirstbootContext

UNIT_DIR = "/etc/systemd/system"


@dataclass(frozen=True)
class TimerUnits:
    service: str  # e.g. arkbox-backup.service
    service_text: str
    timer: str  # e.g. arkbox-backup.timer
    timer_text: str


def enable_argv(timer: str) -> tuple[tuple[str, ...], ...]:
    return (("systemctl", "daemon-reload"), ("systemctl", "enable", "--now", timer))


def install_timer(ctx: FirstbootContext, units: TimerUnits) -> bool:
    """Write both units and enable the timer; True when a unit file changed.

    Below a test root only the files are written: systemctl acts on the running system.
    """
    unit_dir = ctx.paths.at(UNIT_DIR)
    changed = write_if_changed(unit_dir / units.service, units.service_text, mode=0o644)
    changed |= write_if_changed(unit_dir / units.timer, units.timer_text, mode=0o644)
    if ctx.paths.is_live and (changed or not timer_enabled(ctx, units.timer)):
        for argv in enable_argv(units.timer):
            ctx.run(argv)
    return changed


def remove_timer(ctx: FirstbootContext, service: str, timer: str) -> bool:
    """Stop and remove a pair the config no longer asks for; True when there was one."""
    unit_dir = ctx.paths.at(UNIT_DIR)
    present = [path for path in (unit_dir / timer, unit_dir / service) if path.exists()]
    if not present:
        return False
    if ctx.paths.is_live:
        ctx.run(("systemctl", "disable", "--now", timer), check=False)
    for path in present:
        path.unlink()
    if ctx.paths.is_live:
        ctx.run(("systemctl", "daemon-reload",))
    return True


def timer_enabled(ctx: FirstbootContext, timer: str) -> bool:
    result = ctx.run(("systemctl", "is-enabled", timer), check=False)
    return result.returncode == 0


def installed(ctx: FirstbootContext, units: TimerUnits) -> bool:
    unit_dir = ctx.paths.at(UNIT_DIR)
    return (unit_dir / units.service).is_file() and (unit_dir / units.timer).is_file()


def parse_systemd_time(text: str) -> datetime | None:
    """A timestamp property of `systemctl show` (NextElapseUSecRealtime,
    ExecMainExitTimestamp, ...): "@1764213262" (--timestamp=unix), or
    "Fri 2026-11-27 03:14:22 UTC"; None when empty or "n/a" (never)."""
    text = text.strip()
    if text.startswith("@"):
        try:
            return datetime.fromtimestamp(int(text[1:].split(".")[0]), UTC)
        except ValueError:
            return None
    parts = text.split()
    if len(parts) >= 3 and parts[-1] == "UTC":
        try:
            return datetime.strptime(" ".join(parts[-3:-1]), "%Y-%m-%d %H:%M:%S").replace(
                tzinfo=UTC)
        except ValueError:
            return None
    return None
