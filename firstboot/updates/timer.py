"""The systemd units of unattended updates: `arkbox-installer update --fetch` at
updates.schedule (docs/updates.md)."""

from __future__ import annotations

from firstboot.core.locations import INSTALLER_PROGRAM as INSTALLER
from firstboot.systemd_units import TimerUnits

SERVICE = "arkbox-update.service"
TIMER = "arkbox-update.timer"


def service_unit() -> str:
    return f"""\
[Unit]
Description=arkbox: fetch the published update bundle and become its build
Documentation=file:/usr/share/doc/arkbox/updates.md
Wants=network-online.target
After=network-online.target docker.service arkbox-update-recover.service
# Not while first boot sets the box up (its apply would race the update's).
ConditionPathExists=/var/lib/arkbox/firstboot.done

[Service]
Type=oneshot
ExecStart={INSTALLER} update --fetch
# The download (up to 2 h on a slow line), the backup first, then apply and the health
# checks; a rollback's apply on top.
TimeoutStartSec=4h
Nice=5
SyslogIdentifier=arkbox-update
"""


def timer_unit(schedule: str) -> str:
    return f"""\
[Unit]
Description=arkbox: look for an update bundle ({schedule})

[Timer]
OnCalendar={schedule}
# A box that was off at the time looks once it is up again.
Persistent=true
# Spread, so the boxes of one publisher do not all fetch in the same minute.
RandomizedDelaySec=30min

[Install]
WantedBy=timers.target
"""


def units(schedule: str) -> TimerUnits:
    return TimerUnits(SERVICE, service_unit(), TIMER, timer_unit(schedule))
