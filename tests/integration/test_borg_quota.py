"""The forced command of a backup client, run by real borg: its storage quota holds, and the
appliance's error says what to do (issue #17, item 6). No Docker: the "ssh" borg runs is a
script that starts the forced command as sshd would, for a repository in a temp dir."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from conftest import require_tool

from builder.pipeline import backup_server as bs
from firstboot.backup.borg import diagnose, init_argv

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAwC1DRQY/x3qGXy6prYbPx+Bpi3uUVeeMZWEl9qGWCh x@y"


def _borg(args: list[str], rsh: Path, passphrase: str = ""
          ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BORG_RSH": str(rsh), "BORG_PASSPHRASE": passphrase,
           "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
           "BORG_BASE_DIR": str(rsh.parent / "borg-base")}
    return subprocess.run(["borg", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def _forced_command(tmp_path: Path, client: bs.Client) -> tuple[Path, str]:
    """An "ssh" that runs the client's forced command, its repository moved from /srv/borg
    into `tmp_path`; and the repository's URL."""
    repository = tmp_path / "home" / client.directory.relative_to(bs.BORG_HOME)
    served = list(bs.serve_argv(client))
    served[served.index("--restrict-to-repository") + 1] = str(repository)
    rsh = tmp_path / "ssh"
    rsh.write_text(f"#!/bin/sh\nexec {shlex.join(served)}\n")
    rsh.chmod(0o755)
    (tmp_path / "home").mkdir(exist_ok=True)
    return rsh, f"ssh://borg@backup.invalid{repository}"


def test_the_forced_command_enforces_the_quota(tmp_path: Path) -> None:
    require_tool("borg")
    rsh, url = _forced_command(tmp_path, bs.Client("club", KEY, "./club", "10M"))
    init = _borg(["init", "--encryption=none", url], rsh)
    assert init.returncode == 0, init.stderr
    data = tmp_path / "data"
    data.mkdir()
    (data / "random").write_bytes(os.urandom(16 * 1000**2))  # incompressible, above 10M
    create = _borg(["create", f"{url}::first", str(data)], rsh)
    assert create.returncode != 0
    diagnosis = diagnose(create.stderr)
    assert diagnosis is not None, create.stderr
    assert "quota" in diagnosis[0] and "arkbox-borg-compact" in diagnosis[1]


def test_the_appliance_creates_a_repository_one_level_down(tmp_path: Path) -> None:
    # ./clients/club is a valid path: the appliance's own init makes its parent directory
    # (borg refuses a repository whose parent does not exist).
    require_tool("borg")
    rsh, url = _forced_command(tmp_path, bs.Client("club", KEY, "./clients/club"))
    init = _borg([*init_argv()[1:], url], rsh, passphrase="not-a-secret")
    assert init.returncode == 0, init.stderr
