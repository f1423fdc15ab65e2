"""The step runner: order, journal, done only after verify, re-runs, failures, the kill hook."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from firstboot.core.config import DEFAULT_CONFIG_PATH, Appliance, load_config
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.errors import ArkboxError
from firstboot.core.kill_switch import KILL_ENV, KillSwitch
from firstboot.core.step import Outcome, StepFailed
from firstboot.journal import Journal, StepRecord
from firstboot.runner import Runner, run_lock
from firstboot.status import RunResult, Status, StepState
from firstboot.steps import NAMES, ORDER, load_steps

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config() -> Appliance:
    return load_config(DEFAULT_CONFIG_PATH)


class FakeStep:
    """A step whose end state is a file under the root; counts its calls."""

    def __init__(self, name: str, *, applies: bool = True, fail: Exception | None = None,
                 verify_after_run: bool = True) -> None:
        self.NAME = name
        self._applies = applies
        self._fail = fail
        self._verify_after_run = verify_after_run
        self.runs = 0
        self.verifies = 0

    def applies(self, config: Appliance) -> bool:
        return self._applies

    def run(self, ctx: FirstbootContext) -> Outcome:
        self.runs += 1
        if self._fail is not None:
            raise self._fail
        marker = ctx.paths.root / self.NAME
        if marker.exists():
            return Outcome.unchanged(f"{self.NAME} already there")
        if self._verify_after_run:
            marker.write_text("done")
        return Outcome.changed_(f"{self.NAME} made", {"made": self.NAME})

    def verify(self, ctx: FirstbootContext) -> str | None:
        self.verifies += 1
        return None if (ctx.paths.root / self.NAME).exists() else f"{self.NAME} is missing"


def runner_for(config: Appliance, root: Path, steps: list[Any],
               lines: list[str] | None = None) -> Runner:
    ctx = FirstbootContext(config=config, paths=Paths(root))
    out = lines.append if lines is not None else (lambda line: None)
    return Runner(ctx, steps, out=out, kill=KillSwitch(frozenset(), root / "kill"))


def test_order_lists_every_fresh_step() -> None:
    # restore before anything writes /srv/arkbox; its dumps before the services start (#5);
    # acme last: it starts the certificate request in the background (issue 6);
    # seed first: nothing runs before the box has its secrets (#14)
    # alerts early: its timer reports a later step's failure (#16)
    # steps that wait on different things at once (#19): mail beside the backup
    # repository, the status page beside the health wait; acme after health, so its
    # certificate does not swap under the health probes
    assert ORDER == ("seed", "system", "firewall", "alerts", "restore", "engine", "secrets",
                     "tls", ("mail", "backup"), "restore_dumps", "services", "proxy",
                     ("status_page", "health"), ("updates", "acme"))
    assert NAMES == ("seed", "system", "firewall", "alerts", "restore", "engine", "secrets",
                     "tls", "mail", "backup", "restore_dumps", "services", "proxy",
                     "status_page", "health", "updates", "acme")
    loaded = load_steps()
    assert loaded[-1] == (load_steps(("updates",))[0], load_steps(("acme",))[0])


def test_steps_run_in_order_and_are_reported(config: Appliance, tmp_path: Path) -> None:
    order: list[str] = []

    class Recording(FakeStep):
        def run(self, ctx: FirstbootContext) -> Outcome:
            order.append(self.NAME)
            return super().run(ctx)

    lines: list[str] = []
    steps = [Recording("alpha"), Recording("beta"), Recording("gamma")]
    status = runner_for(config, tmp_path, steps, lines).run()
    assert order == ["alpha", "beta", "gamma"]
    assert status.result is RunResult.OK
    assert status.changes == 3
    assert lines[0].split() == ["[1/3]", "alpha", "changed", "alpha", "made"]
    assert lines[2].split()[:3] == ["[3/3]", "gamma", "changed"]
    assert lines[-1].startswith("done in")
    saved = json.loads((tmp_path / "var/lib/arkbox/status.json").read_text())
    assert [s["name"] for s in saved["steps"]] == ["alpha", "beta", "gamma"]
    assert saved["result"] == "ok" and saved["changes"] == 3
    assert saved["steps"][0]["details"] == {"made": "alpha"}
    assert (tmp_path / "var/lib/arkbox/firstboot.done").is_file()
    journal = Journal.load(tmp_path / "var/lib/arkbox/journal.json")
    assert set(journal.steps) == {"alpha", "beta", "gamma"}
    assert journal.steps["alpha"].config_sha256 == config.config_sha256


class MeetingStep(FakeStep):
    """A step of a group that waits for its group's other steps to be running too: run
    one after another, the barrier times out and the step fails."""

    def __init__(self, name: str, barrier: threading.Barrier, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.barrier = barrier
        self.logged_as = ""

    def run(self, ctx: FirstbootContext) -> Outcome:
        try:
            self.barrier.wait(timeout=10)
        except threading.BrokenBarrierError as err:
            raise StepFailed(f"{self.NAME} ran without the rest of its group") from err
        self.logged_as = ctx.current_step
        return super().run(ctx)


def test_a_group_runs_at_once_and_is_reported_in_order(config: Appliance,
                                                       tmp_path: Path) -> None:
    barrier = threading.Barrier(3)
    group = (MeetingStep("b", barrier), MeetingStep("c", barrier), MeetingStep("d", barrier))
    lines: list[str] = []
    status = runner_for(config, tmp_path, [FakeStep("a"), group, FakeStep("e")], lines).run()
    assert status.result is RunResult.OK, status.failures
    assert [step.logged_as for step in group] == ["b", "c", "d"]  # each thread its own step
    assert sorted(line.split()[:2] for line in lines[:-1]) == [
        ["[1/5]", "a"], ["[2/5]", "b"], ["[3/5]", "c"], ["[4/5]", "d"], ["[5/5]", "e"]]
    assert lines[-1].startswith("done in")
    saved = json.loads((tmp_path / "var/lib/arkbox/status.json").read_text())
    assert [s["name"] for s in saved["steps"]] == ["a", "b", "c", "d", "e"]
    assert {s["state"] for s in saved["steps"]} == {"changed"}
    journal = Journal.load(tmp_path / "var/lib/arkbox/journal.json")
    assert set(journal.steps) == {"a", "b", "c", "d", "e"}


def test_a_failure_in_a_group_lets_the_others_end_and_stops_the_run(
        config: Appliance, tmp_path: Path) -> None:
    failing = FakeStep("b", fail=StepFailed("b broke", hint="fix b"))
    other = FakeStep("c")
    last = FakeStep("d")
    lines: list[str] = []
    runner = runner_for(config, tmp_path, [FakeStep("a"), (failing, other), last], lines)
    status = runner.run()
    assert status.result is RunResult.FAILED
    assert [(s.name, str(s.state)) for s in status.steps] == [
        ("a", "changed"), ("b", "failed"), ("c", "changed"), ("d", "not run")]
    assert last.runs == 0
    assert [f.step for f in status.failures] == ["b"]
    assert runner.exit_code == 1
    journal = Journal.load(tmp_path / "var/lib/arkbox/journal.json")
    assert set(journal.steps) == {"a", "c"}  # c ended and was verified: it stays done
    assert not (tmp_path / "var/lib/arkbox/firstboot.done").exists()
    assert "  not run: d" in lines


def test_rerun_skips_done_steps_after_verifying_them(config: Appliance, tmp_path: Path) -> None:
    steps = [FakeStep("alpha"), FakeStep("beta")]
    runner_for(config, tmp_path, steps).run()
    lines: list[str] = []
    status = runner_for(config, tmp_path, steps, lines).run()
    assert [s.runs for s in steps] == [1, 1]
    assert [s.verifies for s in steps] == [2, 2]  # after the first run, and on the re-run
    assert [s.state for s in status.steps] == [StepState.OK, StepState.OK]
    assert status.changes == 0
    assert "ok" in lines[0].split() and "alpha made" in lines[0]
    assert lines[-1].endswith("no changes")


def test_a_done_step_whose_end_state_was_lost_runs_again(config: Appliance,
                                                          tmp_path: Path) -> None:
    steps = [FakeStep("alpha"), FakeStep("beta")]
    runner_for(config, tmp_path, steps).run()
    (tmp_path / "beta").unlink()
    status = runner_for(config, tmp_path, steps).run()
    assert [s.runs for s in steps] == [1, 2]
    assert status.step("beta").state is StepState.CHANGED


def test_a_changed_config_runs_every_step_again(config: Appliance, tmp_path: Path) -> None:
    steps = [FakeStep("alpha")]
    runner_for(config, tmp_path, steps).run()
    journal = Journal.load(tmp_path / "var/lib/arkbox/journal.json")
    record = journal.steps["alpha"]
    journal.record(StepRecord(**{**record.__dict__, "config_sha256": "0" * 64}))
    status = runner_for(config, tmp_path, steps).run()
    assert steps[0].runs == 2
    # idempotent: run again, nothing to do, and it says so
    assert status.step("alpha").state is StepState.UNCHANGED
    assert status.step("alpha").summary == "alpha already there"


def test_step_is_recorded_only_after_verify_passed(config: Appliance, tmp_path: Path) -> None:
    lines: list[str] = []
    steps = [FakeStep("alpha"), FakeStep("beta", verify_after_run=False), FakeStep("gamma")]
    runner = runner_for(config, tmp_path, steps, lines)
    status = runner.run()
    assert status.result is RunResult.FAILED
    assert runner.exit_code == 1
    beta = status.step("beta")
    assert beta.state is StepState.FAILED
    assert "end state does not hold: beta is missing" in beta.summary
    assert status.step("gamma").state is StepState.NOT_RUN
    assert steps[2].runs == 0
    journal = Journal.load(tmp_path / "var/lib/arkbox/journal.json")
    assert set(journal.steps) == {"alpha"}
    assert not (tmp_path / "var/lib/arkbox/firstboot.done").exists()


def test_failure_summary_names_the_step_the_error_and_the_hint(config: Appliance,
                                                               tmp_path: Path) -> None:
    lines: list[str] = []
    failing = FakeStep("beta", fail=StepFailed("the engine did not answer", hint="start it"))
    runner = runner_for(config, tmp_path, [FakeStep("alpha"), failing, FakeStep("gamma")],
                        lines)
    runner.run()
    text = "\n".join(lines)
    assert "[2/3] beta" in text and "failed" in text
    assert "✗ firstboot failed" in text
    assert "  beta: the engine did not answer" in text
    assert "    hint: start it" in text
    assert "  not run: gamma" in text
    saved = Status.load(tmp_path / "var/lib/arkbox/status.json")
    assert saved is not None and saved.result is RunResult.FAILED
    assert [(f.step, f.message, f.hint) for f in saved.failures] == [
        ("beta", "the engine did not answer", "start it")]
    assert runner.exit_code == 1


def test_bad_input_in_a_step_exits_2_and_a_crash_is_an_internal_error(
        config: Appliance, tmp_path: Path) -> None:
    from firstboot.core.errors import BadInputError

    runner = runner_for(config, tmp_path / "a", [FakeStep("x", fail=BadInputError("no secret"))])
    runner.run()
    assert runner.exit_code == 2
    runner = runner_for(config, tmp_path / "b", [FakeStep("x", fail=KeyError("boom"))])
    status = runner.run()
    assert runner.exit_code == 1
    assert status.failures[0].message == "internal error: KeyError: 'boom'"
    assert "--debug" in (status.failures[0].hint or "")


def test_a_step_the_config_does_not_turn_on_is_skipped_and_forgotten(
        config: Appliance, tmp_path: Path) -> None:
    runner_for(config, tmp_path, [FakeStep("mail")]).run()
    off = FakeStep("mail", applies=False)
    status = runner_for(config, tmp_path, [off]).run()
    assert status.step("mail").state is StepState.SKIPPED
    assert off.runs == 0
    assert "mail" not in Journal.load(tmp_path / "var/lib/arkbox/journal.json").steps


def test_journal_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.json"
    journal = Journal(path)
    journal.record(StepRecord("alpha", "t", "c", "v", True, "made"))
    before = path.read_bytes()

    def power_cut(self: Path, target: Path) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(Path, "replace", power_cut)
    with pytest.raises(OSError):
        journal.record(StepRecord("beta", "t", "c", "v", True, "made"))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["journal.json"]  # no temporary left
    assert set(Journal.load(path).steps) == {"alpha"}


def test_an_unreadable_journal_means_every_step_runs_again(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    path.write_text("{not json")
    assert Journal.load(path).steps == {}


def test_only_one_runner_at_a_time(tmp_path: Path) -> None:
    with run_lock(tmp_path), pytest.raises(ArkboxError, match="in progress"), run_lock(tmp_path):
        pass


def test_checkpoints_call_the_kill_switch_with_step_and_point(config: Appliance,
                                                              tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    class WithCheckpoint(FakeStep):
        def run(self, ctx: FirstbootContext) -> Outcome:
            ctx.checkpoint("middle")
            return super().run(ctx)

    runner = runner_for(config, tmp_path, [WithCheckpoint("alpha")])
    runner.kill = lambda step, point: calls.append((step, point))  # type: ignore[assignment]
    runner.run()
    assert calls == [("alpha", "before"), ("alpha", "middle"), ("alpha", "after")]


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from firstboot.core.config import DEFAULT_CONFIG_PATH, load_config
    from firstboot.core.context import FirstbootContext, Paths
    from firstboot.runner import Runner
    from firstboot.core.step import Outcome

    root = Path(sys.argv[1])

    class Step:
        def __init__(self, name):
            self.NAME = name
        def applies(self, config):
            return True
        def run(self, ctx):
            with (root / "calls").open("a") as calls:
                calls.write(self.NAME + "\\n")
            ctx.checkpoint("middle")
            (root / self.NAME).write_text("done")
            return Outcome.changed_(self.NAME)
        def verify(self, ctx):
            return None if (root / self.NAME).exists() else "missing"

    ctx = FirstbootContext(config=load_config(DEFAULT_CONFIG_PATH), paths=Paths(root))
    status = Runner(ctx, [Step("a"), Step("b"), Step("c")]).run()
    sys.exit(0 if status.result.value == "ok" else 1)
""")


GROUP_SCRIPT = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    from firstboot.core.config import DEFAULT_CONFIG_PATH, load_config
    from firstboot.core.context import FirstbootContext, Paths
    from firstboot.runner import Runner
    from firstboot.core.step import Outcome

    root = Path(sys.argv[1])

    class Step:
        def __init__(self, name, hang):
            self.NAME, self.hang = name, hang
        def applies(self, config):
            return True
        def run(self, ctx):
            (root / (self.NAME + ".started")).write_text("")
            time.sleep(600 if self.hang else 0)
            return Outcome.changed_(self.NAME)
        def verify(self, ctx):
            return None

    # Ctrl-C raises KeyboardInterrupt even when the test runs in a background job, whose
    # children inherit SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ctx = FirstbootContext(config=load_config(DEFAULT_CONFIG_PATH), paths=Paths(root))
    Runner(ctx, [Step("a", False), (Step("b", True), Step("c", True))]).run()
""")


def test_an_interrupt_during_a_group_ends_the_run_at_once_and_records_neither(
        tmp_path: Path) -> None:
    script = tmp_path / "group_run.py"
    script.write_text(GROUP_SCRIPT)
    root = tmp_path / "root"
    root.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, str(script), str(root)], env=env,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            wait_for = [root / "b.started", root / "c.started"]
            for _ in range(600):
                if all(p.exists() for p in wait_for) or proc.poll() is not None:
                    break
                time.sleep(0.05)
            assert all(p.exists() for p in wait_for), "b and c never both started"
            proc.send_signal(signal.SIGINT)
            # The hanging steps' threads must not hold the process: it ends now, not in
            # 600 s (the bound only keeps a regression from hanging the suite).
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert "KeyboardInterrupt" in stderr
    status = json.loads((root / "var/lib/arkbox/status.json").read_text())
    assert [(s["name"], s["state"], s["summary"]) for s in status["steps"][1:]] == [
        ("b", "failed", "interrupted"), ("c", "failed", "interrupted")]
    assert set(Journal.load(root / "var/lib/arkbox/journal.json").steps) == {"a"}


@pytest.mark.parametrize("point", ["b:before", "b:middle", "b:after"])
def test_kill_hook_simulates_a_power_cut_and_the_rerun_converges(tmp_path: Path,
                                                                 point: str) -> None:
    script = tmp_path / "kill_run.py"
    script.write_text(KILL_SCRIPT)
    root = tmp_path / "root"
    root.mkdir()
    env = {**os.environ, KILL_ENV: point, "PYTHONPATH": str(ROOT)}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), str(root)], env=env,
                              capture_output=True, text=True, timeout=120)

    first = run()
    assert first.returncode == -9, first.stderr
    journal = Journal.load(root / "var/lib/arkbox/journal.json")
    assert set(journal.steps) == {"a"}  # b never recorded: it was cut before verify
    status = json.loads((root / "var/lib/arkbox/status.json").read_text())
    assert status["result"] == "running"
    assert not (root / "var/lib/arkbox/firstboot.done").exists()

    second = run()  # "after the reboot": the hook fires once per point
    assert second.returncode == 0, second.stdout + second.stderr
    calls = (root / "calls").read_text().split()
    expected_b_runs = 1 if point == "b:before" else 2
    assert calls == ["a", *["b"] * expected_b_runs, "c"]
    assert set(Journal.load(root / "var/lib/arkbox/journal.json").steps) == {"a", "b", "c"}
    assert (root / "var/lib/arkbox/firstboot.done").exists()
    # a third run is a no-op
    assert run().returncode == 0
    assert (root / "calls").read_text().split() == calls


def test_kill_switch_parses_a_list_and_ignores_other_points(tmp_path: Path) -> None:
    switch = KillSwitch.from_env({KILL_ENV: "tls:before, services:after"}, tmp_path)
    assert switch.points == frozenset({"tls:before", "services:after"})
    switch("tls", "after")  # not named: returns
    assert KillSwitch.from_env({}, tmp_path).points == frozenset()
