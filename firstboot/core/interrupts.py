"""Signals that end a command early unwind it like Ctrl-C, so its cleanup runs."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def terminate_as_interrupt() -> Iterator[Callable[[], None]]:
    """SIGTERM/SIGHUP (systemd, a closed SSH session) unwind like Ctrl-C, so cleanup runs.

    Yields `shield`: called when the cleanup starts, it ignores further signals, so a
    second one (systemd signals every process of the unit, and a parent forwards its own
    too; a second Ctrl-C) cannot cut the cleanup short.
    """
    signals = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    fired: list[int] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if fired:
            return
        fired.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    def shield() -> None:
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)

    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield shield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
