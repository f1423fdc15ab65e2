"""The contract of a first-boot step (one module per step in firstboot/steps/).

A step module defines:

    NAME = "firewall"                         # shown as [2/11] firewall
    def applies(config: Appliance) -> bool    # the config keys that turn it on
    def run(ctx: FirstbootContext) -> Outcome # check before acting; idempotent
    def verify(ctx: FirstbootContext) -> str | None
        # cheap re-check on a re-run: None when the end state holds, else why not

The runner calls run() only when the step is not recorded as done or verify()
says the end state no longer holds, and records it as done only after run()
returned and verify() passed.

Inside a step: log through `ctx.log` (lines carry the step name), run commands
through `ctx.run` (execute.run; tests record instead), and call
`ctx.checkpoint("point")` between actions a power cut could separate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from firstboot.core.errors import ArkboxError

if TYPE_CHECKING:
    from firstboot.core.config import Appliance
    from firstboot.core.context import FirstbootContext


@dataclass(frozen=True)
class Outcome:
    changed: bool
    summary: str  # e.g. "open: 22(admin) 80 443" or "ruleset unchanged"
    # Facts for status.json (JSON-able), e.g. {"certificate": "fallback", "reason": ...}.
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def changed_(cls, summary: str, details: Mapping[str, Any] | None = None) -> Outcome:
        return cls(True, summary, dict(details or {}))

    @classmethod
    def unchanged(cls, summary: str, details: Mapping[str, Any] | None = None) -> Outcome:
        return cls(False, summary, dict(details or {}))


class StepFailed(ArkboxError):
    """A step could not reach its end state; the message and hint go to status and journal."""


class Step(Protocol):
    """What the runner needs of a step; each module in firstboot/steps/ is one."""

    NAME: str

    def applies(self, config: Appliance) -> bool: ...

    def run(self, ctx: FirstbootContext) -> Outcome: ...

    def verify(self, ctx: FirstbootContext) -> str | None: ...
