"""The alert state as `arkbox-installer status` shows it (and the status page will)."""

from __future__ import annotations

from typing import Any

from firstboot.alerts.destinations import destinations, email_unavailable_reason
from firstboot.alerts.state import load_state
from firstboot.core.config import Appliance
from firstboot.core.context import Paths


def alert_status(paths: Paths, config: Appliance | None) -> dict[str, Any]:
    """What fires since when, what waits for its hold time, the queue, the last results.

    Destinations are named and shown without secrets (a URL cut to its host)."""
    state = load_state(paths)
    body: dict[str, Any] = {
        "firing": [{"alert": key, "title": f.title, "fix": f.fix, "since": f.since}
                   for key, f in sorted(state.firing.items())],
        "pending": [{"alert": key, "since": since}
                    for key, since in sorted(state.pending.items())],
        "queue": [{"destination": d.destination, "kind": d.event.kind, "alert": d.event.alert,
                   "attempts": d.attempts, "next_attempt": d.next_attempt,
                   "last_error": d.last_error} for d in state.queue],
        "last_delivery": state.deliveries[-1] if state.deliveries else None,
        "deliveries": state.deliveries,
        "last_check": state.last_check,
    }
    if config is not None:
        body["destinations"] = [{"name": d.name, "shown": d.shown, "problem": d.problem}
                                for d in destinations(config)]
        body["email"] = email_unavailable_reason(config) or "on"
    return body
