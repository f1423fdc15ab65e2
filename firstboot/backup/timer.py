"""The systemd units that run `arkbox-installer backup` on the config's schedule
(installed by firstboot/systemd_units.py, like every timer a step owns)."""

from __future__ import annotations

from firstboot.systemd_units import UNIT_DIR as UNIT_DIR  # re-exported for steps/backup.py

SERVICE = "arkbox-backup.service"
TIMER = "arkbox-backup.timer"
INSTALLER = "/usr/local/sbin/arkbox-installer"


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
