"""One alert check: gather the facts, judge every condition, record the transitions,
queue what changed for every destination, and deliver what is due.

Run by arkbox-alerts.timer (`arkbox-installer alert check`) and after each backup.
One check at a time (a lock beside the state); the state is saved after every
check, delivered or not, so a refused destination is retried next time.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from firstboot.alerts import conditions, delivery
from firstboot.alerts.destinations import Destination, destinations
from firstboot.alerts.facts import BoxFacts
from firstboot.alerts.gather import gather
from firstboot.alerts.senders import DeliveryFailed, send
from firstboot.alerts.state import (
    AlertState,
    Event,
    digest_event,
    load_state,
    save_state,
    transition,
)
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.errors import ArkboxError
from firstboot.core.files import ensure_dir

LOCK_FILE = "alerts.lock"
LOCK_WAIT_S = 60.0


class AlertsBusy(ArkboxError):
    """Another alert check held the lock for too long."""


@dataclass
class CheckReport:
    events: list[Event] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    firing: list[str] = field(default_factory=list)
    queued: int = 0

    def lines(self) -> list[str]:
        lines = [f"{e.kind}: {e.title}" for e in self.events]
        lines += [f"{'sent' if r['ok'] else 'not sent'} {r['kind']} {r['alert']} to "
                  f"{r['shown']}" + ("" if r["ok"] else f": {r['error']}") for r in self.results]
        lines.append(f"{len(self.firing)} firing" + (f" ({', '.join(self.firing)})"
                                                     if self.firing else "")
                     + (f"; {self.queued} deliveries queued for retry" if self.queued else ""))
        return lines


@contextmanager
def locked(paths: Paths, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    lock = paths.state / LOCK_FILE
    ensure_dir(lock.parent, 0o755)
    deadline = time.monotonic() + wait_s
    with lock.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise AlertsBusy(f"another alert check holds {lock}",
                                     hint="it finishes by itself; or see: systemctl status "
                                     "arkbox-alerts") from None
                time.sleep(0.5)
        yield


def _sender(ctx: FirstbootContext) -> delivery.Sender:
    def sender(destination: Destination, event: Event) -> None:
        send(ctx.config, destination, event)
    return sender


def run_check(ctx: FirstbootContext, extra: list[Event] | None = None,
              facts: BoxFacts | None = None, sender: delivery.Sender | None = None
              ) -> CheckReport:
    """Judge the box now and deliver; `extra` events (a backup ping) go out with it."""
    with locked(ctx.paths):
        state = load_state(ctx.paths)
        now = ctx.now()
        facts = facts if facts is not None else gather(ctx)
        verdicts = conditions.evaluate(facts, ctx.config.alerts.thresholds)
        events = [*(extra or []), *_transitions(state, verdicts, ctx)]
        targets = destinations(ctx.config)
        delivery.enqueue(state, events, targets)
        # Saved before sending: a check killed while sending (a power cut, the unit's
        # time-out) sends again next time rather than lose what it had to tell.
        save_state(ctx.paths, state)
        try:
            results = delivery.deliver_due(state, targets, now, sender or _sender(ctx))
        finally:
            save_state(ctx.paths, state)
    return CheckReport(events, results, sorted(state.firing), len(state.queue))


def _transitions(state: AlertState, verdicts: conditions.Verdicts,
                 ctx: FirstbootContext) -> list[Event]:
    events = transition(state, verdicts, ctx.now())
    if ctx.config.alerts.digest == "daily":
        digest = digest_event(state, ctx.now())
        if digest is not None:
            events.append(digest)
    return events


def send_test(ctx: FirstbootContext, sender: delivery.Sender | None = None
              ) -> list[tuple[Destination, str | None]]:
    """One test event to every destination, now, outside the queue: (destination, error)."""
    now = ctx.now().isoformat(timespec="seconds")
    event = Event("test", "test", "a test alert: this destination works",
                  "nothing to fix; sent by arkbox-installer alert test", None, now)
    deliver = sender or _sender(ctx)
    results: list[tuple[Destination, str | None]] = []
    for destination in destinations(ctx.config):
        try:
            deliver(destination, event)
        except DeliveryFailed as err:
            results.append((destination, err.message))
        else:
            results.append((destination, None))
    return results
