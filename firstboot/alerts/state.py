"""The alert state: what fires since when, what waits to fire, and the delivery queue.

Kept in /var/lib/arkbox/alerts.json (written atomically, world-readable like
status.json: it holds no secret, destinations are named, never their URLs).
`transition` is pure: the verdicts of one check against the state give the events
to send: "firing" once when a condition starts, "resolved" once when it ends.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from firstboot.alerts.conditions import CLEAR, UNKNOWN, Raised, Verdicts
from firstboot.core.context import Paths
from firstboot.core.files import atomic_write

log = logging.getLogger("arkbox.alerts")

STATE_FILE = "alerts.json"  # below /var/lib/arkbox
KEEP_DELIVERIES = 20  # the last results shown by status


@dataclass
class Event:
    """One thing to tell: an alert firing or resolved, a test, a digest, a backup ping."""

    kind: str  # firing | resolved | test | digest | ping-success | ping-fail
    alert: str  # the alert key ("backup_failed", "service:wiki", ...)
    title: str
    fix: str = ""
    since: str | None = None  # when the condition started
    at: str = ""  # when the event was made


@dataclass
class Firing:
    title: str
    fix: str
    since: str


@dataclass
class Delivery:
    """One event on its way to one destination; kept until sent or given up."""

    destination: str  # a name from destinations.py: "email", "webhook 1", "ping success"
    event: Event
    attempts: int = 0
    next_attempt: str = ""
    last_error: str | None = None


@dataclass
class AlertState:
    firing: dict[str, Firing] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)  # key -> first seen (hold)
    queue: list[Delivery] = field(default_factory=list)
    # The last results: {"at", "destination", "kind", "alert", "ok", "error"}.
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    last_check: str | None = None
    last_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> AlertState:
        return cls(
            firing={k: Firing(**v) for k, v in (raw.get("firing") or {}).items()},
            pending=dict(raw.get("pending") or {}),
            queue=[Delivery(**{**d, "event": Event(**d["event"])})
                   for d in raw.get("queue") or []],
            deliveries=list(raw.get("deliveries") or []),
            last_check=raw.get("last_check"),
            last_digest=raw.get("last_digest"))

    def record(self, entry: dict[str, Any]) -> None:
        self.deliveries = [*self.deliveries, entry][-KEEP_DELIVERIES:]


def state_path(paths: Paths) -> Path:
    return paths.state / STATE_FILE


def load_state(paths: Paths) -> AlertState:
    """The saved state; an unreadable file starts afresh (and says so) rather than stop
    alerting for good."""
    path = state_path(paths)
    try:
        return AlertState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return AlertState()
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        log.warning("%s is unreadable (%s): starting with no alerts firing", path, err)
        return AlertState()


def save_state(paths: Paths, state: AlertState) -> None:
    text = json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"
    atomic_write(state_path(paths), text, mode=0o644)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def transition(state: AlertState, verdicts: Verdicts, now: datetime) -> list[Event]:
    """Apply one check's verdicts; return the events to send (each change once)."""
    events: list[Event] = []
    for key, verdict in verdicts.items():
        if isinstance(verdict, Raised):
            events.extend(_raised(state, key, verdict, now))
        elif verdict is CLEAR:
            state.pending.pop(key, None)
            events.extend(_resolve(state, key, now, "it is back to normal"))
    unknown_families = {k for k, v in verdicts.items() if v is UNKNOWN}
    for key in [k for k in state.firing if k not in verdicts]:
        if key.split(":")[0] not in unknown_families:
            events.extend(_resolve(state, key, now, "it is no longer watched"))
    for key in [k for k in state.pending if k not in verdicts]:
        del state.pending[key]
    state.last_check = _iso(now)
    return events


def _raised(state: AlertState, key: str, verdict: Raised, now: datetime) -> list[Event]:
    if key in state.firing:
        state.firing[key].title = verdict.title  # the facts move on (hours, percent)
        state.firing[key].fix = verdict.fix
        return []
    first_seen = state.pending.setdefault(key, _iso(now))
    if now - datetime.fromisoformat(first_seen) < verdict.hold:
        return []
    del state.pending[key]
    state.firing[key] = Firing(verdict.title, verdict.fix, first_seen)
    return [Event("firing", key, verdict.title, verdict.fix, first_seen, _iso(now))]


def _resolve(state: AlertState, key: str, now: datetime, why: str) -> list[Event]:
    firing = state.firing.pop(key, None)
    if firing is None:
        return []
    # The heading (RESOLVED in the subject, "event" in the JSON) says it is over.
    return [Event("resolved", key, firing.title, why, firing.since, _iso(now))]


DIGEST_EVERY = timedelta(days=1)


def digest_event(state: AlertState, now: datetime) -> Event | None:
    """Once a day while something has fired for a day: one event listing all that fires
    (digest: daily). An alert younger than a day was just sent on its own."""
    if not state.firing:
        return None
    oldest = min(datetime.fromisoformat(f.since) for f in state.firing.values())
    last = state.last_digest
    if now - oldest < DIGEST_EVERY or (
            last is not None and now - datetime.fromisoformat(last) < DIGEST_EVERY):
        return None
    state.last_digest = _iso(now)
    lines = [f"- {f.title} (since {f.since}); fix: {f.fix}" for f in state.firing.values()]
    return Event("digest", "digest", f"{len(state.firing)} alert(s) still firing",
                 "\n".join(lines), None, _iso(now))
