"""One way to wait: poll a check until it is satisfied, or give up saying what and why.

    address = wait.until("the engine's socket", engine_answers, timeout_s=60)

`check` returns the result when the wait is over, or `NotYet("why not")` while it is
not; the last reason goes into the error when the time runs out. An exception from
`check` ends the wait at once (a failure that waiting cannot mend).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from firstboot.core.errors import ArkboxError

T = TypeVar("T")


@dataclass(frozen=True)
class NotYet:
    """What a check returns while the awaited state does not hold, and why."""

    reason: str


class WaitTimedOut(ArkboxError):
    """The awaited state did not come about in time; the message says what and the last reason."""


def until(what: str, check: Callable[[], T | NotYet], timeout_s: float, *,
          interval_s: float = 1.0, max_interval_s: float | None = None,
          hint: str | None = None,
          clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `check` every `interval_s` until it returns something other than NotYet. With
    `max_interval_s` the interval grows by half after each poll up to that: a state that
    comes soon is seen soon, and a long wait does not poll at the first pace throughout."""
    deadline = clock() + timeout_s
    while True:
        result = check()
        if not isinstance(result, NotYet):
            return result
        remaining = deadline - clock()
        if remaining <= 0:
            raise WaitTimedOut(f"gave up waiting for {what} after {timeout_s:g} s: "
                               f"{result.reason}", hint=hint)
        sleep(min(interval_s, remaining))
        if max_interval_s is not None:
            interval_s = min(interval_s * 1.5, max_interval_s)
