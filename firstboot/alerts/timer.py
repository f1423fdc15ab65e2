"""The systemd units of alerts: `arkbox-installer alert check` every alerts.check_every.

Not conditioned on firstboot.done (unlike the backup timer): a first boot that fails
is one of the things to alert on. The check itself waits out a running first boot.
"""

from __future__ import annotations

from firstboot.core.config.scalars import period_seconds
from firstboot.core.locations import INSTALLER_PROGRAM as INSTALLER
from firstboot.systemd_units import TimerUnits

SERVICE = "arkbox-alerts.service"
TIMER = "arkbox-alerts.timer"


def service_unit() -> str:
    return f"""\
[Unit]
Description=arkbox: check the box and send alerts that started or cleared
Documentation=file:/usr/share/doc/arkbox/alerts.md
Wants=network-online.target
After=network-online.target docker.service

[Service]
Type=oneshot
ExecStart={INSTALLER} alert check
# Senders time out after 20 s each; a hung destination must not stack up runs.
TimeoutStartSec=10min
Nice=5
SyslogIdentifier=arkbox-alerts
"""


def timer_unit(every: str) -> str:
    seconds = period_seconds(every)
    return f"""\
[Unit]
Description=arkbox: alert check every {every}

[Timer]
OnBootSec=2min
OnUnitActiveSec={seconds}s
# A little spread, so the checks of many boxes do not hit one webhook in step.
RandomizedDelaySec=20s

[Install]
WantedBy=timers.target
"""


def units(every: str) -> TimerUnits:
    return TimerUnits(SERVICE, service_unit(), TIMER, timer_unit(every))
