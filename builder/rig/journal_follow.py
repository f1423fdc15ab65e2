"""Following first boot from outside the appliance: its unit's journal by cursor, the
done marker and status.json, printed live until it finishes, fails or times out."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from builder.rig.parts import BOX, FIRSTBOOT_UNIT, ApplianceContainer, RigContainer
from builder.rig.screens import Say, say
from firstboot.core import wait

FAILED_PREFIX = "✗ firstboot failed"
JOURNAL_POLL_S = 1.0


@dataclass
class JournalFollower:
    """New lines of a unit's journal in a part, by cursor (no process left behind in it)."""

    part: RigContainer
    unit: str = FIRSTBOOT_UNIT
    cursor: str | None = None

    def new_lines(self) -> list[str]:
        argv = ["journalctl", "-u", self.unit, "-o", "cat", "--no-pager", "--show-cursor"]
        if self.cursor:
            argv.append(f"--after-cursor={self.cursor}")
        code, text = self.part.exec(*argv)
        if code != 0:
            return []
        lines = []
        for line in text.splitlines():
            if line.startswith("-- cursor: "):
                self.cursor = line.removeprefix("-- cursor: ").strip()
            elif line != "-- No entries --":
                lines.append(line)
        return lines


def first_boot_state(part: RigContainer) -> str:
    """done (the marker), failed (the last run, per status.json), or running."""
    code, text = part.exec("sh", "-c", f"test -e {BOX.done_marker} && echo done; "
                           f"cat {BOX.status} 2>/dev/null")
    if code == 0 and text.startswith("done"):
        return "done"
    try:
        status = json.loads(text)
    except ValueError:
        return "running"
    return "failed" if isinstance(status, dict) and status.get("result") == "failed" \
        else "running"


def container_running(part: RigContainer) -> bool:
    return part.not_running() is None


@dataclass
class BootOutcome:
    ok: bool
    seconds: float
    summary: str
    lines: list[str] = field(default_factory=list)


@dataclass
class _BootWatch:
    """One look at first boot per poll: its new journal lines shown, then its state."""

    appliance: ApplianceContainer
    out: Say
    follower: JournalFollower
    started: float = field(default_factory=time.monotonic)
    seen: list[str] = field(default_factory=list)
    failed_at: float | None = None

    def outcome(self, ok: bool, summary: str) -> BootOutcome:
        return BootOutcome(ok, time.monotonic() - self.started, summary, self.seen)

    def show_new_lines(self) -> list[str]:
        lines = self.follower.new_lines()
        for line in lines:
            self.out(f"  │ {line}")
        self.seen.extend(lines)
        return lines

    def look(self) -> BootOutcome | wait.NotYet:
        lines = self.show_new_lines()
        state = first_boot_state(self.appliance)
        if state == "done":
            self.show_new_lines()  # the last lines, written just before the marker
            return self.outcome(True, "first boot finished")
        # A failed run says so in its last lines and in status.json (a config that does
        # not load only in status.json); systemd retries it after a pause.
        failed = state == "failed" or any(line.startswith(FAILED_PREFIX) for line in lines)
        if self.failed_at is None and failed:
            self.failed_at = time.monotonic()
        if self.failed_at is not None and time.monotonic() - self.failed_at > 2 * JOURNAL_POLL_S:
            return self.outcome(False, "first boot failed (it retries by itself)")
        if not container_running(self.appliance):
            return self.outcome(False, "the appliance container stopped")
        return wait.NotYet(f"first boot is {state}")


def follow_first_boot(appliance: ApplianceContainer, timeout: float, out: Say = say) -> BootOutcome:
    """Print first boot's lines as they come; stop at the done marker or a failed run."""
    watch = _BootWatch(appliance, out, JournalFollower(appliance))
    try:
        return wait.until("first boot", watch.look, timeout, interval_s=JOURNAL_POLL_S)
    except wait.WaitTimedOut:
        return watch.outcome(False, f"first boot not done after {timeout:.0f} s")
