"""`arkbox update CONFIG --host HOST`: what it runs, and the box's exit code passed on.

ssh and scp are stand-in scripts on PATH here that note their arguments; the rig test
(tests/e2e/test_update.py) runs the real ones against a booted appliance.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.remote_update import REMOTE_BUNDLE, Target, scp_argv, ssh_argv, update_host
from firstboot.core.config import DEFAULT_CONFIG_PATH
from firstboot.core.errors import BadInputError


def test_argv_carry_the_port_key_and_known_hosts() -> None:
    target = Target("ops", "203.0.113.5", 2222, Path("/k"), Path("/kh"), True)
    assert ssh_argv(target, "true")[:10] == (
        "ssh", "-p", "2222", "-i", "/k", "-o", "UserKnownHostsFile=/kh",
        "-o", "StrictHostKeyChecking=accept-new", "-o")
    assert ssh_argv(target, "true")[-2:] == ("ops@203.0.113.5", "true")
    copy = scp_argv(target, Path("/out/box-update.tar"), REMOTE_BUNDLE)
    assert copy[:4] == ("scp", "-q", "-P", "2222")
    assert copy[-2:] == ("/out/box-update.tar", "ops@203.0.113.5:arkbox-update.tar")
    assert "BatchMode=yes" in ssh_argv(Target("ops", "h", 22), "true")


def fake_tools(folder: Path, ssh_exit: int) -> Path:
    """ssh and scp that append their arguments to calls.log; ssh exits `ssh_exit` when
    asked to update, 0 otherwise."""
    folder.mkdir()
    log = folder / "calls.log"
    for tool, code in (("scp", "0"), ("ssh", f'$(case "$*" in *update*) echo {ssh_exit};; '
                                              '*) echo 0;; esac)')):
        script = folder / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexit {code}\n')
        script.chmod(0o755)
    return log


@pytest.mark.parametrize("box_exit", [0, 1, 2])
def test_the_boxs_exit_code_is_this_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             box_exit: int) -> None:
    log = fake_tools(tmp_path / "bin", box_exit)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    out = tmp_path / "out"
    out.mkdir()
    (out / "arkbox-test-update.tar").write_bytes(b"bundle")
    lines: list[str] = []
    assert update_host(DEFAULT_CONFIG_PATH, "box.example", out, out=lines.append) == box_exit
    calls = log.read_text().splitlines()
    assert calls[0].startswith("scp -q -P 22 ") and calls[0].endswith(
        f"{out}/arkbox-test-update.tar ops@box.example:arkbox-update.tar")
    assert calls[1].endswith('ops@box.example sudo /usr/local/sbin/arkbox-installer update '
                             '"$HOME"/arkbox-update.tar')
    assert calls[2].endswith("ops@box.example rm -f arkbox-update.tar")  # also on failure


def test_a_missing_bundle_names_the_build_to_run(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no update bundle") as caught:
        update_host(DEFAULT_CONFIG_PATH, "box.example", tmp_path)
    assert caught.value.hint is not None and caught.value.hint.startswith("arkbox build ")
