"""The login ban's logic, pure: failed logins read from the mail container's log lines,
counted per address within a window, the bans kept as data, and the nftables ruleset and
commands that enforce them on the host (the mail container has no NET_ADMIN).

What runs it (the host-side service following the container's log) is in
firstboot/mail/guard_service.py; the decision is in docs/decisions.md.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

TABLE = ("inet", "arkbox_guard")
SET_V4 = "mail_banned_v4"
SET_V6 = "mail_banned_v6"

# Dovecot (2.3 and 2.4) logs one line per login connection that ended without a login:
#   imap-login: Login aborted: Connection closed (auth failed, 3 attempts in 9 secs)
#   (auth_failed): user=<a@b>, method=PLAIN, rip=192.0.2.7, lip=..., TLS, session=<...>
_DOVECOT = re.compile(
    r"\b(?P<service>imap|pop3|submission|managesieve)-login: .*?\(auth failed, "
    r"(?P<attempts>\d+) attempts?\b.*?\brip=(?P<address>[0-9A-Fa-f:.]+)")
# Postfix logs each failed AUTH:
#   postfix/submissions/smtpd[77]: warning: unknown[192.0.2.7]: SASL PLAIN authentication
#   failed: (reason unavailable), sasl_username=a@b
_POSTFIX = re.compile(
    r"postfix/(?:(?P<service>[\w.-]+)/)?smtpd\[\d+\]: warning: "
    r"[^\s\[]*\[(?P<address>[0-9A-Fa-f:.]+)\]: SASL \S+ authentication failed")


@dataclass(frozen=True)
class Failure:
    """Failed logins seen in one log line."""

    address: str
    attempts: int
    service: str  # imap, submission, submissions, smtp


def parse_failure(line: str) -> Failure | None:
    """The failed logins a mail log line tells of, or None."""
    found = _DOVECOT.search(line)
    if found:
        attempts = max(1, int(found["attempts"]))
        return _failure(found["address"], attempts, found["service"])
    found = _POSTFIX.search(line)
    if found:
        return _failure(found["address"], 1, found["service"] or "smtp")
    return None


def _failure(address: str, attempts: int, service: str) -> Failure | None:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
        parsed = parsed.ipv4_mapped
    return Failure(str(parsed), attempts, service)


@dataclass
class FailureWindow:
    """Failed logins per address within the last `window`; says when one reaches the limit."""

    max_failures: int
    window: timedelta
    seen: dict[str, deque[tuple[datetime, int]]] = field(default_factory=dict)

    def record(self, failure: Failure, now: datetime) -> int:
        """Count `failure`; the address's failures within the window, this one included."""
        times = self.seen.setdefault(failure.address, deque())
        times.append((now, failure.attempts))
        while times and times[0][0] <= now - self.window:
            times.popleft()
        self.forget_old(now)
        return sum(attempts for _, attempts in times)

    def reached(self, count: int) -> bool:
        return count >= self.max_failures

    def forget(self, address: str) -> None:
        self.seen.pop(address, None)

    def forget_old(self, now: datetime) -> None:
        """Drop addresses with nothing left in the window (memory stays bounded)."""
        for address in [a for a, t in self.seen.items() if t and t[-1][0] <= now - self.window]:
            del self.seen[address]


def exempt(address: str, networks: Iterable[str]) -> bool:
    """True when `address` is in one of `networks` (CIDR)."""
    parsed = ipaddress.ip_address(address)
    for network in networks:
        net = ipaddress.ip_network(network, strict=False)
        if parsed.version == net.version and parsed in net:
            return True
    return False


# ---------------------------------------------------------------- the bans, as data


@dataclass(frozen=True)
class Ban:
    address: str
    since: datetime
    until: datetime
    failures: int
    service: str

    def left_s(self, now: datetime) -> int:
        return max(0, int((self.until - now).total_seconds()))

    def as_json(self) -> dict[str, Any]:
        return {"address": self.address, "since": self.since.isoformat(timespec="seconds"),
                "until": self.until.isoformat(timespec="seconds"), "failures": self.failures,
                "service": self.service}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Ban:
        return cls(str(raw["address"]), datetime.fromisoformat(raw["since"]),
                   datetime.fromisoformat(raw["until"]), int(raw["failures"]),
                   str(raw["service"]))


def bans_from_text(text: str | None, now: datetime) -> list[Ban]:
    """The bans still running, from the bans file's text (a damaged file holds none)."""
    if not text:
        return []
    try:
        raw = json.loads(text)
        bans = [Ban.from_json(item) for item in raw.get("bans", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []
    return sorted((b for b in bans if b.until > now), key=lambda b: b.until)


def bans_text(bans: Sequence[Ban]) -> str:
    return json.dumps({"bans": [b.as_json() for b in bans]}, indent=2) + "\n"


def with_ban(bans: Sequence[Ban], ban: Ban) -> list[Ban]:
    return [b for b in bans if b.address != ban.address] + [ban]


def without(bans: Sequence[Ban], address: str) -> list[Ban]:
    return [b for b in bans if b.address != address]


# ---------------------------------------------------------------- nftables


def _set_of(address: str) -> str:
    return SET_V6 if ipaddress.ip_address(address).version == 6 else SET_V4


def ruleset(bans: Sequence[Ban], ports: Sequence[int], now: datetime) -> str:
    """arkbox_guard's table, replaced atomically (like the firewall's own table), holding
    the running bans with what is left of each.

    A separate table: the firewall step replaces its own on every apply, which would lift
    every ban. The chain drops in prerouting, before the engine's DNAT, so it sees the port
    the client asked for and stops the published ports' forward and the host's input
    alike; `fib daddr type local` keeps it to traffic for the host's own addresses (a
    webmail container reaching `mail:587` directly is never stopped).
    """
    port_list = ", ".join(str(p) for p in ports)
    lines = [f"table {TABLE[0]} {TABLE[1]}", f"delete table {TABLE[0]} {TABLE[1]}",
             f"table {TABLE[0]} {TABLE[1]} {{",
             '\tcomment "arkbox: addresses banned from the mail ports for failed logins '
             '(arkbox-installer mail unban ADDRESS)"']
    for name, kind in ((SET_V4, "ipv4_addr"), (SET_V6, "ipv6_addr")):
        elements = [f"{b.address} timeout {b.left_s(now)}s" for b in bans
                    if _set_of(b.address) == name and b.left_s(now) > 0]
        lines += [f"\tset {name} {{", f"\t\ttype {kind}", "\t\tflags timeout"]
        if elements:
            lines.append(f"\t\telements = {{ {', '.join(elements)} }}")
        lines.append("\t}")
    lines += ["\tchain prerouting {",
              "\t\ttype filter hook prerouting priority -150; policy accept;",
              f"\t\tfib daddr type local tcp dport {{ {port_list} }} ip saddr @{SET_V4} drop",
              f"\t\tfib daddr type local tcp dport {{ {port_list} }} ip6 saddr @{SET_V6} drop",
              "\t}", "}"]
    return "\n".join(lines) + "\n"


def load_ruleset_argv(path: str) -> tuple[str, ...]:
    return ("nft", "-f", path)


def ban_argv(ban: Ban, now: datetime) -> tuple[str, ...]:
    return ("nft", "add", "element", *TABLE, _set_of(ban.address),
            f"{{ {ban.address} timeout {max(1, ban.left_s(now))}s }}")


def unban_argv(address: str) -> tuple[str, ...]:
    return ("nft", "delete", "element", *TABLE, _set_of(address), f"{{ {address} }}")


def list_set_argv(address: str) -> tuple[str, ...]:
    return ("nft", "-j", "list", "set", *TABLE, _set_of(address))


def listed_addresses(nft_json: str) -> set[str]:
    """The addresses in a set, from `nft -j list set`."""
    found: set[str] = set()
    for item in json.loads(nft_json).get("nftables", []):
        for element in (item.get("set") or {}).get("elem", []):
            value = element.get("elem", {}).get("val") if isinstance(element, dict) else element
            if isinstance(value, str):
                found.add(value)
    return found
