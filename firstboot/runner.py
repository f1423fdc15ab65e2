"""The step runner: run the steps in order, record each as done only once it is verified.

For each step, in firstboot.steps.ORDER (a group of steps runs at the same time, one
thread each; the next entry starts once every step of the group ended):

* the config does not turn it on       -> skipped (and forgotten, so turning it on runs it)
* recorded as done, for this config and
  installer, and verify() still passes  -> ok, not run again
* otherwise                             -> run(), then verify(); recorded as done only
                                           when both passed (cloud-init marks a module done
                                           *before* running it, so a power cut skips it
                                           forever; this runner never does)

The first failing step stops the run: later steps depend on earlier ones
(services need the firewall closed and the engine up). A failure in a group lets the
group's other steps end, then stops. An interrupt (Ctrl-C, SIGTERM) during a group
leaves its threads to die with the process, like a power cut: their steps are not
recorded, so the next run does them again. status.json is written
at the start and after every step; at the end of a run that succeeded, the
done marker stops arkbox-firstboot.service from starting again.

Test hook (core/kill_switch.py): ARKBOX_TEST_KILL_AT=<step>:before|<step>:after|
<step>:<point>[,...] SIGKILLs the installer there (before run(); after run() returned but
before the step is verified and recorded; or where the step calls ctx.checkpoint(point)),
once per point.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from firstboot import __version__
from firstboot.core.context import FirstbootContext
from firstboot.core.errors import EXIT_FAILURE, EXIT_OK, ArkboxError
from firstboot.core.files import atomic_write
from firstboot.core.kill_switch import KillSwitch
from firstboot.core.locks import held_or_refused, lock_held
from firstboot.core.step import Outcome, Step, StepFailed
from firstboot.journal import Journal, StepRecord
from firstboot.status import Failure, RunResult, Status, StepReport, StepState

log = logging.getLogger("arkbox.firstboot")

Print = Callable[[str], None]


def print_line(line: str) -> None:
    # The unit sends stdout to the serial console and the journal: one line at a time.
    print(line, flush=True)


def run_lock(state_dir: Path) -> contextlib.AbstractContextManager[None]:
    """One runner at a time: `apply` must not race the first-boot unit."""
    return held_or_refused(state_dir / "runner.lock", ArkboxError(
        "another arkbox-installer run (first boot or apply) is in progress",
        hint="wait for it to finish: systemctl status arkbox-firstboot; "
        "then arkbox-installer status"))


def runner_active(state_dir: Path) -> bool:
    """True while a runner holds the lock (a status saying "running" without one was cut)."""
    return lock_held(state_dir / "runner.lock")


Entry = Step | tuple[Step, ...]  # a tuple: steps that run at the same time


class Runner:
    def __init__(
        self,
        ctx: FirstbootContext,
        steps: Sequence[Entry],
        *,
        command: str = "firstboot",
        out: Print = print_line,
        kill: KillSwitch | None = None,
    ) -> None:
        self.ctx = ctx
        self.entries = [entry if isinstance(entry, tuple) else (entry,) for entry in steps]
        self.steps = [step for group in self.entries for step in group]
        # The journal, status.json and the output are shared by a group's threads.
        self._lock = threading.RLock()
        self.command = command
        self.out = out
        self.kill = kill or KillSwitch.from_env(os.environ, ctx.paths.state)
        self.journal = Journal.load(ctx.paths.journal)
        self.exit_code = EXIT_OK
        config = ctx.config
        self.config_sha256 = config.config_sha256
        self.status = Status(
            command=command,
            installer_version=__version__,
            started_at=self._now(),
            config_path=str(config.source_path) if config.source_path else None,
            config_sha256=self.config_sha256,
            mode=str(ctx.mode),
            mode_reason=ctx.mode_reason,
            steps=[StepReport(step.NAME) for step in self.steps],
        )

    def _now(self) -> str:
        return self.ctx.now().isoformat(timespec="seconds")

    def _save(self) -> None:
        with self._lock:
            self.status.save(self.ctx.paths.status)

    def run(self) -> Status:
        """Run every step; the returned status says what happened (also in status.json)."""
        started = time.monotonic()
        self.ctx.on_checkpoint = self.kill
        with run_lock(self.ctx.paths.state):
            self._save()
            failed = False
            index = 1
            for group in self.entries:
                if failed:
                    for step in group:
                        self.status.step(step.NAME).state = StepState.NOT_RUN
                elif len(group) == 1:
                    failed = not self._run_one(index, group[0])
                else:
                    failed = not self._run_at_once(index, group)
                index += len(group)
                # The restore step decides RESTORE or FRESH; status shows its verdict.
                self.status.mode, self.status.mode_reason = str(self.ctx.mode), self.ctx.mode_reason
                self._save()
            self.status.result = RunResult.FAILED if failed else RunResult.OK
            self.status.finished_at = self._now()
            self.status.seconds = round(time.monotonic() - started, 2)
            self._save()
            if not failed:
                atomic_write(self.ctx.paths.done_marker, self.status.finished_at + "\n")
        self.ctx.current_step = ""
        self._print_summary()
        return self.status

    # ------------------------------------------------------------------ one step

    def _run_at_once(self, first_index: int, group: tuple[Step, ...]) -> bool:
        """Run a group's steps in threads at once; False when any failed."""
        ok: dict[str, bool] = {}

        def lane(index: int, step: Step) -> None:
            ok[step.NAME] = self._run_one(index, step)

        # Daemon threads: an interrupt ends the process without waiting for them.
        threads = [threading.Thread(target=lane, args=(first_index + offset, step),
                                    name=f"step-{step.NAME}", daemon=True)
                   for offset, step in enumerate(group)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:
            with self._lock:
                for step in group:
                    if step.NAME not in ok:
                        self._fail(self.status.step(step.NAME), ArkboxError("interrupted"))
                self._save()
            raise
        # A lane that died of something _run_one does not catch (it catches Exception).
        return all(ok.get(step.NAME, False) for step in group)

    def _run_one(self, index: int, step: Step) -> bool:
        """Bring one step to its end state; False when it failed."""
        name = step.NAME
        report = self.status.step(name)
        self.ctx.current_step = name
        report.state = StepState.RUNNING
        self._save()
        started = time.monotonic()
        try:
            self._converge(step, report)
        except KeyboardInterrupt:
            self._fail(report, ArkboxError("interrupted"))
            self._save()
            raise
        except ArkboxError as err:
            self._fail(report, err)
        except Exception as err:
            log.debug("%s: traceback", name, exc_info=True)
            self._fail(report, ArkboxError(
                f"internal error: {type(err).__name__}: {err}",
                hint="run again with --debug for the traceback, and report it"))
        report.seconds = round(time.monotonic() - started, 2)
        report.finished_at = self._now()
        with self._lock:
            self._progress(index, report)
        return report.state is not StepState.FAILED

    def _converge(self, step: Step, report: StepReport) -> None:
        name = step.NAME
        if not step.applies(self.ctx.config):
            with self._lock:
                self.journal.forget(name)
            report.state = StepState.SKIPPED
            report.summary = "not turned on by the config"
            return
        record = self.journal.get(name)
        if record is not None:
            why_again = record.stale_because(self.config_sha256, __version__)
            if why_again is None:
                why_again = step.verify(self.ctx)
            if why_again is None:
                report.state = StepState.OK
                report.summary = record.summary
                report.done_at = record.done_at
                report.details = dict(record.details)
                return
            self.ctx.log.info("running again: %s", why_again)
        self.kill(name, "before")
        outcome = step.run(self.ctx)
        self.kill(name, "after")
        why_not = step.verify(self.ctx)
        if why_not is not None:
            raise StepFailed(
                f"finished, but its end state does not hold: {why_not}",
                hint="run `arkbox-installer apply` again; if this repeats, report it with "
                "the output of `journalctl -u arkbox-firstboot`",
            )
        self._record(name, outcome)
        report.state = StepState.CHANGED if outcome.changed else StepState.UNCHANGED
        report.summary = outcome.summary
        report.details = dict(outcome.details)

    def _record(self, name: str, outcome: Outcome) -> None:
        record = StepRecord(
            name=name,
            done_at=self._now(),
            config_sha256=self.config_sha256,
            installer_version=__version__,
            changed=outcome.changed,
            summary=outcome.summary,
            details=dict(outcome.details),
        )
        with self._lock:
            self.journal.record(record)

    def _fail(self, report: StepReport, err: ArkboxError) -> None:
        with self._lock:
            report.state = StepState.FAILED
            report.summary = err.message
            report.hint = err.hint
            self.status.failures.append(Failure(report.name, err.message, err.hint))
            if self.exit_code == EXIT_OK:
                self.exit_code = err.exit_code if err.exit_code != EXIT_OK else EXIT_FAILURE
        self.ctx.log.error("%s", err.message)
        if err.hint:
            self.ctx.log.error("hint: %s", err.hint)

    # ------------------------------------------------------------------ output

    @property
    def _indent(self) -> int:
        return len(f"  [{len(self.steps)}/{len(self.steps)}] ")

    def _progress(self, index: int, report: StepReport) -> None:
        counter = f"[{index}/{len(self.steps)}]"
        width = len(f"[{len(self.steps)}/{len(self.steps)}]")
        first, *rest = (report.summary or "").splitlines() or [""]
        self.out(f"  {counter:>{width}} {report.name:<12} {report.state:<9} {first}".rstrip())
        for line in rest:
            self.out(f"{'':{self._indent}}{line}")

    def _print_summary(self) -> None:
        status = self.status
        if status.result is RunResult.OK:
            self.out(f"done in {status.seconds:.0f} s · {_changes(status.changes)}")
            return
        self.out(f"✗ {self.command} failed after {status.seconds:.0f} s")
        for failure in status.failures:
            first, *rest = failure.message.splitlines()
            self.out(f"  {failure.step}: {first}")
            for line in rest:
                self.out(f"    {line.strip()}")
            if failure.hint:
                self.out(f"    hint: {failure.hint}")
        not_run = [s.name for s in status.steps if s.state is StepState.NOT_RUN]
        if not_run:
            self.out(f"  not run: {', '.join(not_run)}")


def _changes(count: int) -> str:
    return "no changes" if count == 0 else f"{count} step{'s' if count != 1 else ''} changed"
