import logging
import sys

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
