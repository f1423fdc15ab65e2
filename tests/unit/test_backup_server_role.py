"""The backup-server role: forced append-only borg serve lines, the account, the check timer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.pipeline import backup_server as bs
from firstboot.core.config import load_config
from firstboot.core.errors import BadInputError

ROOT = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAwC1DRQY/x3qGXy6prYbPx+Bpi3uUVeeMZWEl9qGWCh x@y"


def test_line_forces_append_only_serve_restricted_to_one_repository() -> None:
    line = bs.authorized_keys_line(bs.Client("arkbox-test", KEY, "./arkbox", "200G"))
    assert line.startswith('command="borg serve --append-only --restrict-to-repository '
                           '/srv/borg/arkbox --storage-quota 200G",restrict ssh-ed25519 ')
    assert line.endswith(" arkbox-client:arkbox-test")  # the key's own comment is replaced


def test_every_client_gets_a_storage_quota() -> None:
    # Without one, a single client could fill the server's disk (issue #17, item 6).
    line = bs.authorized_keys_line(bs.Client("x", KEY, "./x"))
    assert "--storage-quota 100G\"" in line
    assert "--storage-quota 100G\"" in bs.cmd_add_client("x", KEY, None, None, None)[0]
    config = load_config(ROOT / "config/examples/backup-server.yaml")
    assert [c.quota for c in bs.clients_from_config(config)] == ["200G", "100G"]
    with pytest.raises(BadInputError, match="quota"):
        bs.Client("x", KEY, "./x", "100G\n")


def test_paths_are_normalised_below_the_borg_home_and_refusals() -> None:
    for written in ("./arkbox", "/srv/borg/arkbox", "./arkbox/", "./././arkbox",
                    "/srv//borg/./arkbox"):
        assert str(bs.Client("x", KEY, written).directory) == "/srv/borg/arkbox"
    assert str(bs.Client("x", KEY, "./clients/x").directory) == "/srv/borg/clients/x"
    for outside in ("./../etc", "/data/repos/a", "/srv/borg", "./.", "/srv/borgs/a", "./a\n",
                    "./a/b/c"):
        with pytest.raises(BadInputError, match="path"):
            bs.Client("x", KEY, outside)
    with pytest.raises(BadInputError):
        bs.Client("x", "not a key", "./x")
    with pytest.raises(BadInputError):
        bs.authorized_keys([bs.Client("x", KEY, "./x"), bs.Client("x", KEY, "./y")])


def test_add_client_is_idempotent_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "authorized_keys"
    line, changed = bs.cmd_add_client("club", KEY, None, None, target)
    assert changed and "/srv/borg/club" in line
    assert bs.cmd_add_client("club", KEY, None, None, target)[1] is False
    _, changed = bs.cmd_add_client("club", KEY, "./club2", None, target)
    text = target.read_text()
    assert changed and text.count("arkbox-client:club") == 1 and "/srv/borg/club2" in text
    bs.cmd_add_client("other", KEY, None, None, target)
    assert target.read_text().count("arkbox-client:") == 2


@pytest.mark.parametrize(("path", "overlap"), [
    ("./club", "is the same directory as"), ("/srv/borg/club/", "is the same directory as"),
    ("./././club", "is the same directory as"), ("./club/inner", "is inside"),
    ("./nest", "holds")])
def test_add_client_refuses_a_repository_of_another_client(tmp_path: Path, path: str,
                                                            overlap: str) -> None:
    target = tmp_path / "authorized_keys"
    bs.cmd_add_client("club", KEY, None, None, target)
    bs.cmd_add_client("nested", KEY, "./nest/inner", None, target)
    before = target.read_text()
    with pytest.raises(BadInputError, match=f"{overlap} the repository of client"):
        bs.cmd_add_client("other", KEY, path, None, target)
    assert target.read_text() == before
    # The client itself may move (its old line is replaced), and others sit side by side.
    assert bs.cmd_add_client("club", KEY, "./club/v2", None, target)[1]
    assert bs.cmd_add_client("other", KEY, "./clubhouse", None, target)[1]


def test_the_build_refuses_overlapping_repositories() -> None:
    with pytest.raises(BadInputError, match="is inside the repository of client 'a'"):
        bs.authorized_keys([bs.Client("a", KEY, "./a"), bs.Client("b", KEY, "/srv/borg/a/b")])


def test_a_key_of_more_than_one_line_is_refused() -> None:
    for key in (KEY + "\n" + KEY, KEY + "\r" + KEY, KEY.replace(" x@y", "\nx@y")):
        with pytest.raises(BadInputError, match="public key"):
            bs.Client("x", key, "./x")
    line = bs.authorized_keys_line(bs.Client("x", "  " + KEY + "\n", "./x"))
    assert "\n" not in line and line.count("ssh-ed25519") == 1


def test_printing_only_writes_nothing(tmp_path: Path) -> None:
    line, changed = bs.cmd_add_client("club", KEY, None, None, None)
    assert not changed and line.startswith("command=")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown of the borg home needs root")
def test_install_into_a_tree(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    for name, text in (("passwd", "root:x:0:0::/root:/bin/sh\nsr:x:999:999::/:/bin/false\n"),
                       ("group", "root:x:0:\nsr:x:999:\n"),
                       ("shadow", "root:*:1::::::\n")):
        (tmp_path / "etc" / name).write_text(text)
    for path in ("usr/bin/sudo", "usr/lib/systemd/system/nftables.service"):  # the host's
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)  # lockdown needs both
        (tmp_path / path).write_text("")
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / bs.FIRSTBOOT_UNIT).symlink_to("/etc/systemd/system/" + bs.FIRSTBOOT_UNIT)
    config = load_config(ROOT / "config/examples/backup-server.yaml")
    changes = bs.install_backup_server(tmp_path, config, "backup-server")
    assert any("2 client(s)" in c for c in changes)
    keys = (tmp_path / "etc/ssh/borg_authorized_keys").read_text()
    assert "--restrict-to-repository /srv/borg/club-server" in keys
    # The first free system id (999 is taken here, as systemd's users take some on trixie).
    assert "borg:x:998:998:borg repositories:/srv/borg:/bin/sh" in (
        tmp_path / "etc/passwd").read_text()
    home = tmp_path / "srv/borg"
    assert home.stat().st_uid == 998 and (home.stat().st_mode & 0o777) == 0o700
    assert (tmp_path / "etc/systemd/system/timers.target.wants" / bs.CHECK_TIMER).is_symlink()
    assert not (wants / bs.FIRSTBOOT_UNIT).exists()
    dropin = (tmp_path / "etc/ssh/sshd_config.d/20-arkbox-borg.conf").read_text()
    assert "Match User borg" in dropin and "ClientAliveInterval 30" in dropin
    # Idempotent: a second run adds no second account.
    bs.install_backup_server(tmp_path, config, "backup-server")
    assert (tmp_path / "etc/passwd").read_text().count("\nborg:") == 1
    assert bs.install_backup_server(tmp_path, config, "appliance") == []
