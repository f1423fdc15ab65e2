"""wait.until: returns the first result, or says what it waited for and why it gave up."""

from __future__ import annotations

import pytest

from firstboot.core import wait
from firstboot.core.wait import NotYet


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_result_once_the_check_is_satisfied() -> None:
    clock = FakeClock()
    answers = iter([NotYet("starting"), NotYet("still starting"), "ready"])
    result = wait.until("the thing", lambda: next(answers), 10, interval_s=2,
                        clock=clock, sleep=clock.sleep)
    assert result == "ready"
    assert clock.sleeps == [2, 2]


def test_gives_up_naming_what_and_the_last_reason() -> None:
    clock = FakeClock()
    with pytest.raises(wait.WaitTimedOut) as gave_up:
        wait.until("the CA's directory", lambda: NotYet("connection refused"), 5,
                   interval_s=2, hint="see the CA's log", clock=clock, sleep=clock.sleep)
    assert str(gave_up.value) == ("gave up waiting for the CA's directory after 5 s: "
                                  "connection refused")
    assert gave_up.value.hint == "see the CA's log"
    assert clock.sleeps == [2, 2, 1]  # never sleeps past the deadline


def test_an_error_in_the_check_ends_the_wait_at_once() -> None:
    clock = FakeClock()

    def broken() -> NotYet:
        raise ValueError("no such container")

    with pytest.raises(ValueError, match="no such container"):
        wait.until("the container", broken, 60, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []


def test_the_interval_grows_to_its_maximum() -> None:
    clock = FakeClock()
    with pytest.raises(wait.WaitTimedOut):
        wait.until("the health checks", lambda: NotYet("starting"), 6, interval_s=0.2,
                   max_interval_s=1.0, clock=clock, sleep=clock.sleep)
    assert [round(s, 3) for s in clock.sleeps[:6]] == [0.2, 0.3, 0.45, 0.675, 1.0, 1.0]
    assert sum(clock.sleeps) == pytest.approx(6)
