"""The rig's wait for first boot names the failing steps when it gives up."""

from __future__ import annotations

from typing import Any

import pytest

from builder.rig.parts import AppliancePart, Rig, RigError


class FailingBox(AppliancePart):
    """An appliance whose first boot keeps failing at its restore step (no container)."""

    def exec(self, *argv: str, **kwargs: Any) -> tuple[int, str]:
        return 1, ""  # no done marker

    def read_json(self, path: str) -> Any:
        return {"result": "failed", "failures": [
            {"step": "restore", "message": "the backup server cannot be reached",
             "hint": "check that it is up"}]}


def test_a_first_boot_that_keeps_failing_times_out_naming_the_step_and_reason() -> None:
    box = FailingBox(Rig(client=None), "appliance", "arkbox/appliance:test")  # type: ignore[arg-type]
    with pytest.raises(RigError) as gave_up:
        box.wait_first_boot(timeout=0.2)
    message = str(gave_up.value)
    assert "first boot" in message and "result: failed" in message, message
    assert "restore: the backup server cannot be reached" in message, message
