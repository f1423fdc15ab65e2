"""The login ban on the box: arkbox-mail-guard.service follows the mail container's log
through the engine (the Docker SDK: the engine logs with its `local` driver, not to the
journal), counts failed logins per address (firstboot/mail/guard.py) and bans an address
that reaches the limit, on the host, in nftables table `inet arkbox_guard`.

The bans file (/var/lib/arkbox/mail-bans.json) is the record: status reads it, `mail
unban` and the service change it under one lock, and the service rebuilds the nftables
table from it when it starts (a reboot or a restart keeps the bans that are still running).
The `mail` step writes the unit (the limits are on its command line, so a changed config
restarts it) and removes it when mail or the ban is off.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from firstboot.core.config.mail import Mail
from firstboot.core.config.scalars import duration_seconds
from firstboot.core.context import FirstbootContext, Paths, utc_now
from firstboot.core.execute import CommandError, run
from firstboot.core.files import atomic_write, ensure_dir, read_text, write_if_changed
from firstboot.core.locations import INSTALLER_PROGRAM as INSTALLER
from firstboot.mail.guard import (
    Ban,
    FailureWindow,
    ban_argv,
    bans_from_text,
    bans_text,
    exempt,
    load_ruleset_argv,
    parse_failure,
    ruleset,
    unban_argv,
    with_ban,
    without,
)
from firstboot.systemd_units import UNIT_DIR

SERVICE = "arkbox-mail-guard.service"
BANS_FILE = "mail-bans.json"  # below /var/lib/arkbox
LOCK_FILE = "mail-bans.lock"
RULESET_FILE = "mail-guard.nft"
NFT_TIMEOUT_S = 30
SYSTEMCTL_TIMEOUT_S = 60
ENGINE_TIMEOUT_S = 30
RECONNECT_S = 5

log = logging.getLogger("arkbox.mail.guard")

Runner = Callable[[Sequence[str]], Any]


def _nft(argv: Sequence[str], check: bool = True) -> Any:
    return run(argv, timeout=NFT_TIMEOUT_S, check=check,
               hint="is nftables installed and are you root? (the ban needs CAP_NET_ADMIN)")


def bans_path(paths: Paths) -> Path:
    return paths.state / BANS_FILE


@contextmanager
def _locked(paths: Paths) -> Iterator[None]:
    """The bans file's lock: held for a read-change-write, a few milliseconds."""
    ensure_dir(paths.state, 0o755)
    with (paths.state / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def current_bans(paths: Paths, now: datetime | None = None) -> list[Ban]:
    """The bans still running (what status shows)."""
    return bans_from_text(read_text(bans_path(paths)), now or utc_now())


def _write(paths: Paths, bans: Sequence[Ban]) -> None:
    atomic_write(bans_path(paths), bans_text(bans), mode=0o644)


def enforce_all(paths: Paths, ports: Sequence[int], now: datetime) -> list[Ban]:
    """Replace table arkbox_guard with one holding every running ban (at the start)."""
    with _locked(paths):
        return _enforce_locked(paths, ports, now)


def _enforce_locked(paths: Paths, ports: Sequence[int], now: datetime) -> list[Ban]:
    bans = current_bans(paths, now)
    _write(paths, bans)
    target = paths.state / RULESET_FILE
    atomic_write(target, ruleset(bans, ports, now), mode=0o600)
    _nft(load_ruleset_argv(str(target)))
    return bans


def add_ban(paths: Paths, ban: Ban, now: datetime, ports: Sequence[int]) -> None:
    with _locked(paths):
        _write(paths, with_ban(current_bans(paths, now), ban))
        if _nft(ban_argv(ban, now), check=False).returncode != 0:
            # The table is gone (removed by hand, or nftables restarted): make it anew.
            _enforce_locked(paths, ports, now)


def lift_ban(paths: Paths, address: str, now: datetime | None = None) -> Ban | None:
    """End `address`'s ban; the ban it had, or None when it had none."""
    now = now or utc_now()
    address = str(ipaddress.ip_address(address))
    with _locked(paths):
        bans = current_bans(paths, now)
        found = next((b for b in bans if b.address == address), None)
        _write(paths, without(bans, address))
        # Also when the record had none: an element left in the set must go too. A set
        # without it answers "No such file or directory", which is what we want.
        _nft(unban_argv(address), check=False)
    return found


# ---------------------------------------------------------------- the service


@dataclass
class GuardSettings:
    max_failures: int
    window_s: float
    ban_s: float
    exempt: list[str]
    ports: tuple[int, ...]
    container: str = "arkbox-mail"

    def argv(self) -> list[str]:
        """The service's command line (the unit's ExecStart)."""
        argv = [str(INSTALLER), "mail", "guard", "--max-failures", str(self.max_failures),
                "--window", f"{int(self.window_s)}", "--ban-time", f"{int(self.ban_s)}",
                "--ports", ",".join(str(p) for p in self.ports),
                "--container", self.container]
        for network in self.exempt:
            argv += ["--exempt", network]
        return argv

    @classmethod
    def of(cls, mail: Mail, ports: Sequence[int], container: str) -> GuardSettings:
        ban = mail.login_ban
        return cls(ban.max_failures, duration_seconds(ban.window), duration_seconds(ban.ban_time),
                   list(ban.exempt), tuple(ports), container)


@dataclass
class Guard:
    """Reads log lines, says whom to ban. `local` are the mail container's own networks
    (the webmail's failed logins come from its address there: never banned)."""

    settings: GuardSettings
    local: list[str] = field(default_factory=list)
    window: FailureWindow = field(init=False)

    def __post_init__(self) -> None:
        self.window = FailureWindow(self.settings.max_failures,
                                    timedelta(seconds=self.settings.window_s))

    def line(self, text: str, now: datetime) -> Ban | None:
        failure = parse_failure(text)
        if failure is None or exempt(failure.address, [*self.settings.exempt, *self.local]):
            return None
        count = self.window.record(failure, now)
        if not self.window.reached(count):
            return None
        self.window.forget(failure.address)
        return Ban(failure.address, now, now + timedelta(seconds=self.settings.ban_s), count,
                   failure.service)


def unit_text(settings: GuardSettings) -> str:
    return f"""\
[Unit]
Description=arkbox: ban addresses that keep failing to log in to the mail server
Documentation=file:/usr/share/doc/arkbox/mail.md
After=docker.service nftables.service
Wants=docker.service

[Service]
ExecStart={" ".join(settings.argv())}
Restart=always
RestartSec=5
SyslogIdentifier=arkbox-mail-guard
# It reads the engine's log stream (its unix socket), changes one nftables table and
# writes the bans file: nothing else.
RestrictAddressFamilies=AF_UNIX AF_NETLINK
CapabilityBoundingSet=CAP_NET_ADMIN CAP_DAC_OVERRIDE
ProtectSystem=full
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
NoNewPrivileges=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
UMask=0022

[Install]
WantedBy=multi-user.target
"""


def _container_networks(attrs: dict[str, Any]) -> list[str]:
    found = []
    for info in ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).values():
        for address, prefix in ((info.get("IPAddress"), info.get("IPPrefixLen")),
                                (info.get("GlobalIPv6Address"), info.get("GlobalIPv6PrefixLen"))):
            if address and prefix:
                found.append(str(ipaddress.ip_network(f"{address}/{prefix}", strict=False)))
    return found


def follow(paths: Paths, settings: GuardSettings) -> None:
    """Run until stopped: follow the mail container's log, ban, and re-attach whenever the
    container is recreated or the engine restarts."""
    import docker

    now = utc_now()
    bans = enforce_all(paths, settings.ports, now)
    log.info("mail guard: %d failed logins within %ds ban for %ds; %d ban(s) running",
             settings.max_failures, settings.window_s, settings.ban_s, len(bans))
    guard = Guard(settings)
    since = int(time.time())
    while True:
        try:
            client = docker.from_env(timeout=ENGINE_TIMEOUT_S)
            container = client.containers.get(settings.container)
            guard.local = _container_networks(container.attrs)
            stream = container.logs(stream=True, follow=True, since=since)
            pending = b""
            for chunk in stream:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    _one_line(paths, guard, raw.decode(errors="replace"))
                since = int(time.time())
        except (docker.errors.DockerException, OSError) as e:
            log.info("mail guard: waiting for %s (%s)", settings.container, e)
        except CommandError as e:
            log.error("mail guard: %s", e)
        time.sleep(RECONNECT_S)


def _one_line(paths: Paths, guard: Guard, line: str) -> None:
    now = utc_now()
    ban = guard.line(line, now)
    if ban is not None:
        add_ban(paths, ban, now, guard.settings.ports)
        log.warning("mail guard: banned %s until %s after %d failed logins (%s)",
                    ban.address, ban.until.isoformat(timespec="seconds"), ban.failures,
                    ban.service)


# ---------------------------------------------------------------- installing the unit


def unit_path(paths: Paths) -> Path:
    return paths.at(UNIT_DIR) / SERVICE


def install_guard(ctx: FirstbootContext, settings: GuardSettings) -> bool:
    """Write the unit and have it running; True when something changed."""
    changed = write_if_changed(unit_path(ctx.paths), unit_text(settings), mode=0o644)
    if not ctx.paths.is_live:
        return changed
    if changed:
        ctx.run(("systemctl", "daemon-reload"), timeout=SYSTEMCTL_TIMEOUT_S)
        ctx.run(("systemctl", "enable", SERVICE), timeout=SYSTEMCTL_TIMEOUT_S)
        ctx.run(("systemctl", "restart", SERVICE), timeout=SYSTEMCTL_TIMEOUT_S)
    elif not guard_active(ctx):
        ctx.run(("systemctl", "enable", "--now", SERVICE), timeout=SYSTEMCTL_TIMEOUT_S)
        changed = True
    return changed


def remove_guard(ctx: FirstbootContext) -> bool:
    """Stop and remove the unit and lift every ban (mail or the ban turned off)."""
    path = unit_path(ctx.paths)
    if not path.exists():
        return False
    if ctx.paths.is_live:
        ctx.run(("systemctl", "disable", "--now", SERVICE), check=False,
                timeout=SYSTEMCTL_TIMEOUT_S)
    path.unlink()
    if ctx.paths.is_live:
        ctx.run(("systemctl", "daemon-reload"), timeout=SYSTEMCTL_TIMEOUT_S)
        ctx.run(("nft", "delete", "table", "inet", "arkbox_guard"), check=False,
                timeout=NFT_TIMEOUT_S)
    bans_path(ctx.paths).unlink(missing_ok=True)
    return True


def guard_active(ctx: FirstbootContext) -> bool:
    result = ctx.run(("systemctl", "is-active", "--quiet", SERVICE), check=False,
                     timeout=SYSTEMCTL_TIMEOUT_S)
    return bool(result.returncode == 0)


def guard_problem(ctx: FirstbootContext) -> str | None:
    """What verify says when the ban is wanted but not working."""
    if not unit_path(ctx.paths).is_file():
        return f"{SERVICE} is not installed"
    if ctx.paths.is_live and not guard_active(ctx):
        return (f"{SERVICE} is not running (journalctl -u {SERVICE} says why; "
                "`arkbox-installer apply` starts it)")
    return None


def status_facts(paths: Paths) -> dict[str, Any]:
    """The running bans, for status and the status page."""
    now = utc_now()
    return {"bans": [{**b.as_json(), "left_s": b.left_s(now)} for b in current_bans(paths, now)]}
