"""The rig's wait for first boot: a failed run raises at once with the failing step and its
message; waiting out the unit's retries gives up naming the last failing steps."""

from __future__ import annotations

import time
from typing import Any

import pytest

from builder.rig.parts import ApplianceContainer, FirstBootFailed, Rig, RigError
from builder.rig.waits import FirstBootDone, SystemdState

FAILED = {"result": "failed", "failures": [
    {"step": "restore", "message": "the backup server cannot be reached",
     "hint": "check that it is up"}]}


class FakeEngineApi:
    api_version = "1.41"


class FakeEngine:
    api = FakeEngineApi()


class ScriptedBox(ApplianceContainer):
    """An appliance without a container: status.json answers from a script (the last
    answer repeats), no done marker until the script says "done"."""

    def __init__(self, answers: list[dict[str, Any] | str]) -> None:
        super().__init__(Rig(name="unit", client=FakeEngine()),  # type: ignore[arg-type]
                         "appliance", "arkbox/appliance:test")
        self.answers = answers
        self.asked = 0

    def current(self) -> dict[str, Any] | str:
        return self.answers[min(self.asked, len(self.answers) - 1)]

    def exec(self, *argv: str, **kwargs: Any) -> tuple[int, str]:  # type: ignore[override]
        if argv[:2] == ("test", "-e"):
            return (0, "") if self.current() == "done" else (1, "")
        return 1, ""

    def read_json(self, path: str) -> Any:
        answer = self.current()
        self.asked += 1
        return {"result": "ok", "steps": []} if answer == "done" else answer

    def not_running(self) -> str | None:
        return None


def test_a_failed_first_boot_raises_at_once_naming_the_step_and_its_message() -> None:
    box = ScriptedBox([{"result": "running"}, FAILED])
    started = time.monotonic()
    with pytest.raises(FirstBootFailed) as failed:
        FirstBootDone(timeout=30, interval=0.01).wait_until_ready(box)
    assert time.monotonic() - started < 5, "a failed run is not waited out"
    message = str(failed.value)
    assert "first boot of unit-appliance failed" in message, message
    assert "restore: the backup server cannot be reached" in message, message
    assert failed.value.hint == "check that it is up"


def test_a_first_boot_that_keeps_failing_times_out_naming_the_step_and_reason() -> None:
    box = ScriptedBox([FAILED])
    with pytest.raises(RigError) as gave_up:
        box.wait_first_boot(timeout=0.2, retry_failures=True)
    assert not isinstance(gave_up.value, FirstBootFailed)
    message = str(gave_up.value)
    assert "gave up waiting for first boot (unit-appliance) after 0.2 s" in message, message
    assert "result: failed" in message, message
    assert "restore: the backup server cannot be reached" in message, message


def test_waiting_out_the_retries_returns_the_status_of_the_run_that_succeeded() -> None:
    box = ScriptedBox([FAILED, FAILED, "done"])
    wait = FirstBootDone(timeout=30, interval=0.01, retry_failures=True)
    wait.wait_until_ready(box)
    assert box.status_json() == {"result": "ok", "steps": []}


def test_systemd_wait_says_what_it_waited_for_and_the_last_state() -> None:
    class Booting(ScriptedBox):
        def exec(self, *argv: str, **kwargs: Any) -> tuple[int, str]:  # type: ignore[override]
            return 1, "starting\n"

    with pytest.raises(RigError, match=r"gave up waiting for systemd degraded/running "
                                        r"\(unit-appliance\) after 0.05 s: systemd is starting"):
        SystemdState(0.05, interval=0.01).wait_until_ready(Booting([]))
