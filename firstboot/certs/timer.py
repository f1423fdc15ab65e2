"""The systemd units that run `arkbox-installer renew --scheduled` (installed by the acme step)."""

from __future__ import annotations

from firstboot.core.locations import INSTALLER_PROGRAM as INSTALLER
from firstboot.systemd_units import TimerUnits

SERVICE = "arkbox-tls-renew.service"
TIMER = "arkbox-tls-renew.timer"
# `renew --scheduled` exits 75 (EX_TEMPFAIL) when the CA did not issue: retried with
# backoff and shown in status, not a failed unit (a box waiting for DNS is not broken).
EXIT_RETRY_LATER = 75


def service_unit() -> str:
    return f"""\
[Unit]
Description=arkbox: get or renew the TLS certificate (ACME)
Documentation=file:/usr/share/doc/arkbox/tls.md
Wants=network-online.target
After=network-online.target docker.service

[Service]
Type=oneshot
ExecStart={INSTALLER} renew --scheduled
SuccessExitStatus={EXIT_RETRY_LATER}
# It waits for a running first boot or apply to finish before it starts.
TimeoutStartSec=2h
SyslogIdentifier=arkbox-tls-renew
"""


def timer_unit() -> str:
    return """\
[Unit]
Description=arkbox: check the TLS certificate every 15 minutes (renews when due)

[Timer]
OnBootSec=2min
OnUnitInactiveSec=15min
# Spread the load on the CA from many boxes.
RandomizedDelaySec=2min

[Install]
WantedBy=timers.target
"""


def units() -> TimerUnits:
    return TimerUnits(SERVICE, service_unit(), TIMER, timer_unit())
