"""The systemd units of backups: `arkbox-installer backup` on the config's schedule,
`arkbox-installer check --verify-data` once a month (decrypts and verifies every chunk:
the only check that proves the data reads back; the backup server can check segments only),
and `arkbox-installer drill` on `backup.drill` (proves the latest backup starts services)."""

from __future__ import annotations

from firstboot.core.locations import INSTALLER_PROGRAM as INSTALLER
from firstboot.systemd_units import UNIT_DIR as UNIT_DIR  # re-exported for steps/backup.py
from firstboot.systemd_units import TimerUnits

SERVICE = "arkbox-backup.service"
TIMER = "arkbox-backup.timer"
CHECK_SERVICE = "arkbox-backup-verify.service"
CHECK_TIMER = "arkbox-backup-verify.timer"
# Monthly, spread over a day, and caught up after the box was off.
CHECK_SCHEDULE = "monthly"
CHECK_RANDOM_DELAY = "1d"
DRILL_SERVICE = "arkbox-drill.service"
DRILL_TIMER = "arkbox-drill.timer"
# "weekly" in systemd is Monday 00:00, when the nightly backup runs: a quiet hour after it.
DRILL_WEEKLY = "Sun *-*-* 04:30:00"


def service_unit() -> str:
    return f"""\
[Unit]
Description=arkbox: encrypted off-site backup (borg)
Documentation=file:/usr/share/doc/arkbox/backup.md
Wants=network-online.target
After=network-online.target docker.service
# Never during first boot: it would back up a half-made box.
ConditionPathExists=/var/lib/arkbox/firstboot.done

[Service]
Type=oneshot
ExecStart={INSTALLER} backup
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
SyslogIdentifier=arkbox-backup
"""


def timer_unit(schedule: str) -> str:
    return f"""\
[Unit]
Description=arkbox: backups on schedule ({schedule})

[Timer]
OnCalendar={schedule}
# Spread the load on a shared backup server; catch up after the box was off.
RandomizedDelaySec=30min
Persistent=true

[Install]
WantedBy=timers.target
"""


def check_service_unit() -> str:
    return f"""\
[Unit]
Description=arkbox: verify every chunk of the backup repository (borg check --verify-data)
Documentation=file:/usr/share/doc/arkbox/backup.md
Wants=network-online.target
After=network-online.target
ConditionPathExists=/var/lib/arkbox/firstboot.done

[Service]
Type=oneshot
ExecStart={INSTALLER} check --verify-data
Nice=15
IOSchedulingClass=idle
SyslogIdentifier=arkbox-backup-verify
"""


def check_timer_unit() -> str:
    return f"""\
[Unit]
Description=arkbox: verify the backup data ({CHECK_SCHEDULE})

[Timer]
OnCalendar={CHECK_SCHEDULE}
RandomizedDelaySec={CHECK_RANDOM_DELAY}
Persistent=true

[Install]
WantedBy=timers.target
"""


def drill_calendar(drill: str) -> str | None:
    """The OnCalendar of `backup.drill`; None when drills are off."""
    if drill == "off":
        return None
    return DRILL_WEEKLY if drill == "weekly" else drill


def drill_service_unit() -> str:
    return f"""\
[Unit]
Description=arkbox: restore drill (the latest backup restored aside and its services started)
Documentation=file:/usr/share/doc/arkbox/backup.md
Wants=network-online.target
# Never beside a backup: it drills the archive the backup just made.
After=network-online.target docker.service {SERVICE}
ConditionPathExists=/var/lib/arkbox/firstboot.done

[Service]
Type=oneshot
ExecStart={INSTALLER} drill
# The live services come first: the drill's containers yield the CPU and the disk.
Nice=15
IOSchedulingClass=idle
SyslogIdentifier=arkbox-drill
"""


def drill_timer_unit(calendar: str) -> str:
    return f"""\
[Unit]
Description=arkbox: restore drill on schedule ({calendar})

[Timer]
OnCalendar={calendar}
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
"""


def units(schedule: str) -> tuple[TimerUnits, TimerUnits]:
    """Both pairs the backup step installs: the nightly backup and the monthly verify."""
    return (TimerUnits(SERVICE, service_unit(), TIMER, timer_unit(schedule)),
            TimerUnits(CHECK_SERVICE, check_service_unit(), CHECK_TIMER, check_timer_unit()))


def drill_units(calendar: str) -> TimerUnits:
    return TimerUnits(DRILL_SERVICE, drill_service_unit(), DRILL_TIMER,
                      drill_timer_unit(calendar))
