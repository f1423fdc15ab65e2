"""`arkbox seed` shows the backup server's host key to pin (builder.host_key)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool
from test_backup_trust import REPO

from builder import host_key
from firstboot.core.config import Appliance, load_config
from firstboot.core.execute import Completed


def _config(tmp_path: Path, port: int, pinned: bool = False) -> Appliance:
    text = (REPO / "config/default.yaml").read_text().replace(
        "ssh://borg@backup.arkbox.test:22/", f"ssh://borg@127.0.0.1:{port}/")
    if pinned:
        text = text.replace("  restore: auto\n", "  restore: auto\n  host_key: ssh-ed25519 "
                            "AAAAC3NzaC1lZDI1NTE5AAAAIALjbvmFclSOCISfqnkRMivfo2vDh0/XUO/QtDA1fI7y\n")
    (tmp_path / "secrets").symlink_to(REPO / "config/secrets")
    (tmp_path / "appliance.yaml").write_text(text)
    return load_config(tmp_path / "appliance.yaml")


def test_the_scanned_key_is_shown_with_the_fingerprint_ssh_keygen_shows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("ssh-keygen")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True, timeout=30)
    public = (tmp_path / "k.pub").read_text().split()
    shown = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], check=True,
                           capture_output=True, text=True, timeout=30).stdout.split()[1]
    scan = f"# 127.0.0.1:2222 SSH-2.0-OpenSSH_10.0\n[127.0.0.1]:2222 {public[0]} {public[1]}\n"
    assert host_key.scanned_key(scan) == f"{public[0]} {public[1]}"
    assert host_key.fingerprint(f"{public[0]} {public[1]}") == shown
    assert host_key.keyscan_argv("backup.example", 2222) == (
        "ssh-keyscan", "-T", "5", "-t", "ed25519", "-p", "2222", "backup.example")

    def fake_run(argv: tuple[str, ...], **kwargs: object) -> Completed:
        assert argv == host_key.keyscan_argv("127.0.0.1", 2222) and kwargs["timeout"]
        return Completed(argv, 0, scan)

    monkeypatch.setattr(host_key, "run", fake_run)
    config = _config(tmp_path, 2222)
    note = host_key.host_key_note(config)
    assert note is not None and f"{public[0]} {public[1]}" in note and shown in note
    assert "Compare it with the server's own" in note


def test_nothing_to_say_when_pinned_and_a_dead_server_is_reported_not_waited_for(
        tmp_path: Path) -> None:
    require_tool("ssh-keyscan")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert host_key.host_key_note(_config(tmp_path / "a", port, pinned=True)) is None
    note = host_key.host_key_note(_config(tmp_path / "b", port))
    assert note is not None and f"127.0.0.1:{port} could not be scanned" in note
    assert "ssh_host_ed25519_key.pub" in note
