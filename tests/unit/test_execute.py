import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from firstboot.core.execute import MASK, CommandError, Secret, mask, run, secret_values, shown_argv

PASSPHRASE = "correct horse battery staple"


def test_secret_in_argv_is_masked_in_log_and_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="arkbox.exec")
    argv = (sys.executable, "-c", "import sys; print(sys.argv[1]); sys.exit(3)", Secret(PASSPHRASE))
    with pytest.raises(CommandError) as err:
        run(argv)
    assert PASSPHRASE not in str(err.value)
    assert MASK in " ".join(err.value.argv)
    assert err.value.exit_code_of_command == 3
    assert PASSPHRASE not in caplog.text
    assert MASK in caplog.text


def test_secret_from_env_is_masked_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="arkbox.exec")
    script = (
        "import os, sys; p = os.environ['BORG_PASSPHRASE']; print('out', p); "
        "print('err', p, file=sys.stderr); sys.exit(2)"
    )
    with pytest.raises(CommandError) as err:
        run((sys.executable, "-c", script), env={"BORG_PASSPHRASE": PASSPHRASE})
    assert PASSPHRASE not in str(err.value)
    assert f"err {MASK}" in err.value.stderr_tail
    assert PASSPHRASE not in caplog.text
    ok = run((sys.executable, "-c", "import os; print(os.environ['BORG_PASSPHRASE'])"),
             env={"BORG_PASSPHRASE": PASSPHRASE})
    assert ok.stdout.strip() == MASK


def test_explicit_secret_masked_inside_a_longer_argument() -> None:
    shown = shown_argv(("curl", f"--user=admin:{PASSPHRASE}"), [PASSPHRASE])
    assert shown == ("curl", f"--user=admin:{MASK}")


def test_secret_values_by_env_name() -> None:
    values = secret_values({"BORG_PASSPHRASE": "a", "DB_PASSWORD": "b", "PATH": "/usr/bin",
                            "SSH_PRIVATE_KEY": "c"})
    assert set(values) == {"a", "b", "c"}


def test_longest_secret_masked_first() -> None:
    assert mask("abc abcdef", secret_values(None, ["abc", "abcdef"])) == f"{MASK} {MASK}"


def test_missing_tool_is_exit_127_with_hint() -> None:
    with pytest.raises(CommandError) as err:
        run(("arkbox-no-such-tool-xyz", "--help"))
    assert err.value.exit_code_of_command == 127
    assert "not installed" in str(err.value)
    assert err.value.hint and "scripts/setup" in err.value.hint


def test_timeout_raises_with_reason() -> None:
    with pytest.raises(CommandError) as err:
        run((sys.executable, "-c", "import time; time.sleep(5)"), timeout=0.5)
    assert err.value.timed_out
    assert "timed out" in str(err.value)


def test_stderr_tail_keeps_last_lines_only() -> None:
    script = "import sys\nfor i in range(100): print('line', i, file=sys.stderr)\nsys.exit(1)"
    with pytest.raises(CommandError) as err:
        run((sys.executable, "-c", script))
    assert "line 99" in err.value.stderr_tail
    assert "line 10\n" not in err.value.stderr_tail + "\n"


def test_streaming_lines_and_check_false() -> None:
    seen: list[str] = []
    result = run((sys.executable, "-c", "print('a'); print('b'); raise SystemExit(4)"),
                 on_line=seen.append, check=False)
    assert seen == ["a", "b"]
    assert result.returncode == 4


def test_frozen_binary_does_not_leak_its_library_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from firstboot.core.execute import child_environment

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setenv("LD_LIBRARY_PATH", "/tmp/_MEIxyz")
    monkeypatch.delenv("LD_LIBRARY_PATH_ORIG", raising=False)
    env = child_environment({"A": "1"})
    assert env is not None and "LD_LIBRARY_PATH" not in env and env["A"] == "1"
    monkeypatch.setenv("LD_LIBRARY_PATH_ORIG", "/opt/lib")
    env = child_environment(None)
    assert env is not None and env["LD_LIBRARY_PATH"] == "/opt/lib"
    assert "LD_LIBRARY_PATH_ORIG" not in env


def _gone(pid: int) -> bool:
    """Whether `pid` has exited; a killed grandchild is not ours to wait for, so it gets a
    moment to finish dying (a zombie, only its exit status left, counts as gone)."""
    deadline = time.monotonic() + 2
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        status = Path(f"/proc/{pid}/status")
        with contextlib.suppress(FileNotFoundError):
            if "\nState:\tZ" in status.read_text():
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _feed_nothing(stdin: IO[bytes], alive: Callable[[], bool]) -> None:
    pass


@pytest.mark.parametrize("how", ["on_line", "captured", "fed"])
def test_timeout_ends_a_child_that_keeps_its_output_open(how: str) -> None:
    # The shell forks sleep (it is not its last command), so both hold the output open:
    # the timeout must apply while they do, and end the shell and its child alike.
    seen: list[str] = []
    argv = ("sh", "-c", "sleep 30 & echo $$ $! >&2; wait")
    started = time.monotonic()
    with pytest.raises(CommandError) as err:
        if how == "on_line":
            run(argv, on_line=seen.append, timeout=1)
        elif how == "fed":
            run(argv, feed=_feed_nothing, timeout=1)
        else:
            run(argv, timeout=1)
    assert time.monotonic() - started < 5
    assert err.value.timed_out
    assert "timed out" in str(err.value)
    pids = [int(p) for p in (seen[0] if seen else err.value.stderr_tail).split()]
    assert len(pids) == 2
    assert all(_gone(pid) for pid in pids), pids


def test_leaving_a_streaming_run_early_ends_its_group() -> None:
    # What leaves a run early (Ctrl-C, a failing callback) must not leave its children behind.
    pids: list[int] = []

    def fail(line: str) -> None:
        pids.extend(int(p) for p in line.split())
        raise RuntimeError("stop")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="stop"):
        run(("sh", "-c", "sleep 30 & echo $$ $!; wait"), on_line=fail, timeout=60)
    assert time.monotonic() - started < 5
    assert len(pids) == 2
    assert all(_gone(pid) for pid in pids), pids


def test_streaming_with_an_input_larger_than_a_pipe() -> None:
    data = "".join(f"line {i}\n" for i in range(100_000))
    seen: list[str] = []
    result = run(("cat",), input_data=data, on_line=seen.append, timeout=30)
    assert result.returncode == 0
    assert len(seen) == 100_000 and seen[-1] == "line 99999"


def test_a_child_reads_no_input_unless_given_some() -> None:
    assert run(("cat",), timeout=10).stdout == ""
    assert run(("cat",), input_data="given", timeout=10).stdout == "given"


def test_a_command_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL to the caller's process group (a killed `arkbox-installer backup`) must not
    leave its command running: the command has a group of its own, so the kernel ends it."""
    import signal
    import subprocess

    pid_file = tmp_path / "child.pid"
    script = ("import sys; from firstboot.core import execute; "
              f"execute.run(['sh', '-c', 'echo $$ > {pid_file}; exec sleep 30'], timeout=60)")
    parent = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the command did not start"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    os.killpg(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and "zombie" not in _state(child):
        assert time.monotonic() < deadline, f"pid {child} outlived its killed parent"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return "zombie"
