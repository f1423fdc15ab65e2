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
"""

from __future__ import annotations

from dataclasses import dataclass

from firstboot.errors import ArkboxError


@dataclass(frozen=True)
class Outcome:
    changed: bool
    summary: str  # e.g. "open: 22(admin) 80 443" or "ruleset unchanged"

    @classmethod
    def changed_(cls, summary: str) -> Outcome:
        return cls(True, summary)

    @classmethod
    def unchanged(cls, summary: str) -> Outcome:
        return cls(False, summary)


class StepFailed(ArkboxError):
    """A step could not reach its end state; the message and hint go to status and journal."""
