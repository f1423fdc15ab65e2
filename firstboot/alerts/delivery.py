"""The delivery queue: each event goes to each destination that takes it; a failed
delivery stays queued and is retried on later checks, 1 minute after the first
failure, doubling to at most 6 hours apart, and given up after MAX_ATTEMPTS (about
a day). Nothing here raises: a destination that refuses is a fact for status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from firstboot.alerts.destinations import Destination
from firstboot.alerts.senders import DeliveryFailed
from firstboot.alerts.state import AlertState, Delivery, Event
from firstboot.core.execute import mask

log = logging.getLogger("arkbox.alerts")

RETRY_FIRST = timedelta(minutes=1)
RETRY_MAX = timedelta(hours=6)
MAX_ATTEMPTS = 12  # 1+2+4+...+6 h: the last try a little over a day after the first
PING_MAX_ATTEMPTS = 3  # a late "backup ok" ping would hide a newer failure: few retries

# send(destination, event); raises DeliveryFailed.
Sender = Callable[[Destination, Event], None]


def retry_delay(attempts: int) -> timedelta:
    """The wait after `attempts` failed attempts."""
    doubled: timedelta = RETRY_FIRST * (2 ** min(max(attempts - 1, 0), 16))
    return min(doubled, RETRY_MAX)


def enqueue(state: AlertState, events: list[Event], targets: list[Destination]) -> int:
    """Queue each event for each destination that takes its kind; returns how many."""
    added = 0
    for event in events:
        for destination in targets:
            if event.kind in destination.events:
                state.queue.append(Delivery(destination.name, event, next_attempt=event.at))
                added += 1
    return added


def deliver_due(state: AlertState, targets: list[Destination], now: datetime,
                send: Sender) -> list[dict[str, object]]:
    """Try every queued delivery that is due; returns this round's results."""
    by_name = {d.name: d for d in targets}
    results: list[dict[str, object]] = []
    kept: list[Delivery] = []
    for item in state.queue:
        destination = by_name.get(item.destination)
        if destination is None:
            log.info("dropped an alert for %s: no longer configured", item.destination)
            continue
        if item.next_attempt and datetime.fromisoformat(item.next_attempt) > now:
            kept.append(item)
            continue
        result = _attempt(item, destination, now, send)
        results.append(result)
        state.record(result)
        if not result["ok"] and not result.get("gave_up"):
            kept.append(item)
    state.queue = kept
    return results


def _send_safely(send: Sender, destination: Destination, event: Event) -> None:
    """`send`, with any other error (a bug in a sender) made a failed delivery: it must
    not stop the deliveries after it, nor every later check."""
    try:
        send(destination, event)
    except DeliveryFailed:
        raise
    except Exception as err:
        secrets = [destination.url] if destination.url else []
        raise DeliveryFailed(mask(f"{type(err).__name__}: {err}", secrets)) from err


def _attempt(item: Delivery, destination: Destination, now: datetime,
             send: Sender) -> dict[str, object]:
    item.attempts += 1
    result: dict[str, object] = {
        "at": now.isoformat(timespec="seconds"), "destination": item.destination,
        "shown": destination.shown, "kind": item.event.kind, "alert": item.event.alert,
        "attempt": item.attempts, "ok": True, "error": None}
    try:
        _send_safely(send, destination, item.event)
    except DeliveryFailed as err:
        item.last_error = err.message
        limit = PING_MAX_ATTEMPTS if destination.kind == "ping" else MAX_ATTEMPTS
        result.update(ok=False, error=err.message)
        if item.attempts >= limit:
            result["gave_up"] = True
            log.error("gave up sending %s %s to %s after %d attempts: %s", item.event.kind,
                      item.event.alert, destination.shown, item.attempts, err.message)
        else:
            item.next_attempt = (now + retry_delay(item.attempts)).isoformat(
                timespec="seconds")
            result["next_attempt"] = item.next_attempt
            log.warning("could not send %s %s to %s (attempt %d, retry at %s): %s",
                        item.event.kind, item.event.alert, destination.shown, item.attempts,
                        item.next_attempt, err.message)
        return result
    log.info("sent %s %s to %s", item.event.kind, item.event.alert, destination.shown)
    return result
