"""Step `system`: the commands it builds, and what it writes below a temporary root."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool

from firstboot.core.config import DEFAULT_CONFIG_PATH, Appliance, load_config
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.execute import Completed
from firstboot.core.step import StepFailed
from firstboot.host_names import hosts_content, short_hostname
from firstboot.steps import system

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF6YilbxuYcReyoVRXRnJrBiinY8edFG7Xgx8AxGsXkQ ops@laptop"


@pytest.fixture(scope="module")
def config() -> Appliance:
    return load_config(DEFAULT_CONFIG_PATH)


# ---------------------------------------------------------------- pure parts


def test_useradd_argv_makes_a_key_only_account() -> None:
    assert system.useradd_argv("ops") == (
        "useradd", "--create-home", "--user-group", "--shell", "/bin/bash",
        "--comment", "arkbox administrator", "ops")


def test_host_key_argv_matches_the_hardened_sshd() -> None:
    path = Path("/etc/ssh/ssh_host_rsa_key")
    assert system.host_key_argv(path, "rsa", 4096) == (
        "ssh-keygen", "-q", "-t", "rsa", "-b", "4096", "-N", "", "-C", "", "-f", str(path))
    assert system.host_key_argv(Path("/k"), "ed25519", None) == (
        "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", "/k")
    assert [t for t, _ in system.HOST_KEY_TYPES] == ["ed25519", "rsa"]


def test_other_argv() -> None:
    assert system.sshd_effective_config_argv() == ("sshd", "-T")
    assert system.restart_sshd_argv() == ("systemctl", "restart", "ssh.service")


def test_host_key_argv_really_makes_a_key(tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    path = tmp_path / "ssh_host_ed25519_key"
    subprocess.run(system.host_key_argv(path, "ed25519", None), check=True)
    assert path.is_file() and path.with_name(path.name + ".pub").is_file()


def test_hostname_parts() -> None:
    assert short_hostname("arkbox.test") == "arkbox"
    hosts = hosts_content(
        "127.0.0.1\tlocalhost\n127.0.1.1\told.example old\n::1\tlocalhost\n", "arkbox.test",
        "arkbox")
    assert hosts == "127.0.0.1\tlocalhost\n127.0.1.1\tarkbox.test arkbox\n::1\tlocalhost\n"
    assert "127.0.1.1\tbox.example.org box" in hosts_content(None, "box.example.org", "box")


def test_authorized_keys_and_comments() -> None:
    text = system.authorized_keys_content([KEY + "\n", KEY.replace("ops@laptop", "ci")])
    lines = text.splitlines()
    assert lines[0].startswith("# Written by arkbox")
    assert lines[1] == KEY and lines[2].endswith(" ci")
    assert system.key_comment(KEY) == "ops@laptop"
    assert system.key_comment("ssh-ed25519 AAAA") == "ssh-ed25519"


def test_authorized_keys_are_written_from_their_fields_one_line_each() -> None:
    # A key whose text smuggles a second line with a forced command (issue #17): written
    # anew from type, data and comment, it stays one line and carries no option.
    smuggled = KEY + '\ncommand="/bin/sh -c evil" ' + KEY
    text = system.authorized_keys_content([smuggled, "  " + KEY.replace(" ops", "\t ops")])
    keys = text.splitlines()[1:]
    assert len(keys) == 2
    assert all(line.startswith("ssh-ed25519 AAAAC3") for line in keys)
    assert keys[1] == KEY
    assert not any(line.startswith("command=") for line in text.splitlines())


def test_sshd_mismatch_reads_sshd_t_output() -> None:
    assert system.sshd_mismatch("port 22\nallowusers ops\n", 22, "ops") is None
    assert system.sshd_mismatch("port 22\nport 2222\n", 2222, "ops") is None
    assert "listens on port 22" in (system.sshd_mismatch("port 22\n", 2222, "ops") or "")
    assert "AllowUsers (admin)" in (system.sshd_mismatch("port 22\nallowusers admin\n", 22,
                                                         "ops") or "")


def test_find_account() -> None:
    passwd = "root:x:0:0:root:/root:/bin/bash\nops:x:1000:1000::/home/ops:/bin/bash\n"
    assert system.find_account(passwd, "ops") == system.Account(1000, 1000, Path("/home/ops"))
    assert system.find_account(passwd, "nobody") is None


# ---------------------------------------------------------------- the step, below a temp root


class FakeSystem:
    """Plays useradd, ssh-keygen, sshd -T and systemctl against the temporary root."""

    def __init__(self, root: Path, sshd_config: str = "port 22\nallowusers ops\n") -> None:
        self.root = root
        self.sshd_config = sshd_config
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: tuple[str, ...], **kwargs: Any) -> Completed:
        argv = tuple(argv)
        self.calls.append(argv)
        if argv[0] == "useradd":
            with (self.root / "etc/passwd").open("a") as passwd:
                passwd.write(f"{argv[-1]}:x:1000:1000::/home/{argv[-1]}:/bin/bash\n")
            (self.root / "home" / argv[-1]).mkdir(parents=True, mode=0o700)
        elif argv[0] == "ssh-keygen":
            key = Path(argv[argv.index("-f") + 1])
            key.write_text("private")
            key.with_name(key.name + ".pub").write_text("public")
        elif argv[0] == "sshd":
            return Completed(argv, 0, self.sshd_config)
        return Completed(argv, 0)


def fresh_root(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
    zone = root / "usr/share/zoneinfo/Etc/UTC"
    zone.parent.mkdir(parents=True)
    zone.write_bytes(b"TZif")
    (root / "run/systemd/system").mkdir(parents=True)  # systemd runs: sshd gets restarted
    return root


def test_first_run_sets_everything_up(config: Appliance, tmp_path: Path) -> None:
    root = fresh_root(tmp_path)
    fake = FakeSystem(root)
    ctx = FirstbootContext(config=config, paths=Paths(root), run=fake)
    outcome = system.run(ctx)
    assert outcome.changed
    assert "hostname arkbox (arkbox.test)" in outcome.summary
    assert 'admin key "ops@laptop"' in outcome.summary
    assert "host keys ed25519 rsa made" in outcome.summary
    assert [c[0] for c in fake.calls] == ["ssh-keygen", "ssh-keygen", "useradd", "sshd",
                                          "systemctl"]
    assert fake.calls[-1] == ("systemctl", "restart", "ssh.service")
    assert (root / "etc/hostname").read_text() == "arkbox\n"
    assert "127.0.1.1\tarkbox.test arkbox" in (root / "etc/hosts").read_text()
    assert str((root / "etc/localtime").readlink()) == "/usr/share/zoneinfo/Etc/UTC"
    keys = root / "home/ops/.ssh/authorized_keys"
    assert KEY in keys.read_text()
    assert keys.stat().st_mode & 0o777 == 0o600
    assert keys.parent.stat().st_mode & 0o777 == 0o700
    assert (keys.stat().st_uid, keys.stat().st_gid) == (1000, 1000)
    assert system.verify(ctx) is None


def test_second_run_changes_nothing_and_runs_only_the_sshd_check(config: Appliance,
                                                                 tmp_path: Path) -> None:
    root = fresh_root(tmp_path)
    fake = FakeSystem(root)
    ctx = FirstbootContext(config=config, paths=Paths(root), run=fake)
    system.run(ctx)
    fake.calls.clear()
    outcome = system.run(ctx)
    assert not outcome.changed
    assert outcome.summary == 'hostname arkbox, admin ops with key "ops@laptop"'
    assert fake.calls == [("sshd", "-T")]


def test_a_half_made_host_key_pair_is_made_again(config: Appliance, tmp_path: Path) -> None:
    root = fresh_root(tmp_path)
    (root / "etc/ssh").mkdir()
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("torn")  # no .pub: cut mid-way
    (root / "etc/ssh/ssh_host_rsa_key").write_text("k")
    (root / "etc/ssh/ssh_host_rsa_key.pub").write_text("k")
    fake = FakeSystem(root)
    system.run(FirstbootContext(config=config, paths=Paths(root), run=fake))
    assert [c for c in fake.calls if c[0] == "ssh-keygen"] == [
        system.host_key_argv(root / "etc/ssh/ssh_host_ed25519_key", "ed25519", None)]


def test_changed_keys_are_rewritten_and_verify_notices(config: Appliance, tmp_path: Path) -> None:
    root = fresh_root(tmp_path)
    fake = FakeSystem(root)
    ctx = FirstbootContext(config=config, paths=Paths(root), run=fake)
    system.run(ctx)
    keys = root / "home/ops/.ssh/authorized_keys"
    keys.write_text("ssh-ed25519 AAAA intruder\n")
    assert system.verify(ctx) == f"{keys} does not hold the configured keys"
    outcome = system.run(ctx)
    assert outcome.changed and KEY in keys.read_text()


def test_sshd_on_another_port_stops_the_step(config: Appliance, tmp_path: Path) -> None:
    root = fresh_root(tmp_path)
    ctx = FirstbootContext(config=config, paths=Paths(root),
                           run=FakeSystem(root, sshd_config="port 2222\n"))
    with pytest.raises(StepFailed, match="sshd listens on port 2222") as failed:
        system.run(ctx)
    assert "rebuild" in (failed.value.hint or "")


def test_unknown_time_zone_is_a_clear_failure(config: Appliance, tmp_path: Path) -> None:
    root = fresh_root(tmp_path)
    (root / "usr/share/zoneinfo/Etc/UTC").unlink()
    ctx = FirstbootContext(config=config, paths=Paths(root), run=FakeSystem(root))
    with pytest.raises(StepFailed, match="time zone 'Etc/UTC' is not installed"):
        system.run(ctx)


def test_sudo_rule_only_when_sudo_is_installed(config: Appliance, tmp_path: Path) -> None:
    root = fresh_root(tmp_path)
    ctx = FirstbootContext(config=config, paths=Paths(root), run=FakeSystem(root))
    system.run(ctx)
    sudoers = root / "etc/sudoers.d/arkbox-ops"
    assert not sudoers.exists()
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/sudo").write_text("")
    assert "sudo for ops" in system.run(ctx).summary
    assert sudoers.read_text().endswith("ops ALL=(ALL:ALL) NOPASSWD: ALL\n")
    assert sudoers.stat().st_mode & 0o777 == 0o440
