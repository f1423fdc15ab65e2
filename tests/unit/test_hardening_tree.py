"""builder.pipeline.hardening: its settings (from the config), the tree, the data edits, unit
commands, run nowhere."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from builder.pipeline import hardening
from builder.pipeline.hardening import (
    HARDENING_TREE,
    ROLE_SSH_USERS,
    ROLES,
    HardeningVars,
    apply_hardening,
    id_names,
    lock_passwords,
    render,
    set_login_defs,
    set_statoverrides,
    statoverride_line,
    systemctl_argv,
    template_values,
    tree_files,
    vars_from_config,
)
from firstboot.core.config import DEFAULT_CONFIG_PATH, Appliance, ConfigInvalid, load_config
from firstboot.core.config.hardening import Hardening
from firstboot.core.errors import ArkboxError, BadInputError
from firstboot.core.execute import Completed

GOLDEN_SSHD = Path(__file__).resolve().parents[1] / "data/golden/sshd_config.conf"
SAMPLE = HardeningVars(admin_user="ops", ssh_port=2222)
SSHD_TEMPLATE = HARDENING_TREE / "etc/ssh/sshd_config.d/10-arkbox.conf.j2"
APT_TEMPLATE = HARDENING_TREE / "etc/apt/apt.conf.d/52arkbox-unattended-upgrades.j2"
JOURNALD_TEMPLATE = HARDENING_TREE / "etc/systemd/journald.conf.d/90-arkbox.conf.j2"


def default_config_with(**paths: object) -> dict[str, object]:
    """config/default.yaml's data with some values set, by dotted path ("build.hardening.x")."""
    data: dict[str, object] = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    for dotted, value in paths.items():
        *parents, key = dotted.split(".")
        section = data
        for part in parents:
            section = section.setdefault(part, {})  # type: ignore[assignment]
        section[key] = value
    return data


# --- variables -------------------------------------------------------------------------


def test_defaults_fill_in_what_the_config_leaves_out() -> None:
    assert HardeningVars(admin_user="ops", ssh_port=2222, settings=Hardening()) == SAMPLE
    values = template_values(SAMPLE, "appliance")
    assert values["ssh_allow_users"] == ("ops",)
    assert (values["auto_reboot"], values["journal_max_use"], values["ssh_required_rsa_size"]) \
        == (False, "1G", 3072)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """The config model checks the hardening settings; all problems come out together."""
    config = tmp_path / "appliance.yaml"
    config.write_text(yaml.safe_dump(default_config_with(**{
        "appliance.admin.ssh_port": 70000,
        "build.hardening": {"journal_max_use": "lots", "colour": "red"},
    }), sort_keys=False))
    with pytest.raises(ConfigInvalid) as e:
        load_config(config, check_secrets=False)
    message = str(e.value)
    for expected in ("appliance.admin.ssh_port: must be between 1 and 65535, got 70000",
                     "build.hardening.colour: unknown key",
                     'build.hardening.journal_max_use: must be a size like "512M" or "4G"'):
        assert expected in message
    assert all(p.line is not None for p in e.value.problems)
    with pytest.raises(BadInputError, match="role: must be one of appliance, backup-server, "
                                            "got 'vps'"):
        template_values(SAMPLE, "vps")


@pytest.mark.parametrize("bad", [
    {"appliance.admin.user": "root"},
    {"appliance.admin.user": "Bad User"},
    {"appliance.admin.ssh_port": True},
    {"appliance.admin.ssh_port": "22"},
    {"build.hardening.ssh_extra_users": ["root"]},  # derived from the role, not a setting
    {"build.hardening.auto_reboot": "yes"},
    {"build.hardening.auto_reboot_time": "25:00"},
    {"build.hardening.auto_reboot_time": 270},  # what YAML makes of an unquoted 04:30
    {"build.hardening.ssh_required_rsa_size": 1024},
    {"build.hardening.journal_max_use": "1 GB"},
])
def test_bad_values_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Appliance.model_validate(default_config_with(**bad))


def test_settings_reach_the_rendered_files() -> None:
    config = Appliance.model_validate(default_config_with(**{"build.hardening": {
        "auto_reboot": True, "auto_reboot_time": "03:15", "journal_max_use": "500M",
        "ssh_required_rsa_size": 4096}}))
    values = template_values(vars_from_config(config, "appliance"), "appliance")
    apt = render(APT_TEMPLATE, values)
    assert 'Unattended-Upgrade::Automatic-Reboot "true";' in apt
    assert 'Unattended-Upgrade::Automatic-Reboot-Time "03:15";' in apt
    assert "SystemMaxUse=500M\n" in render(JOURNALD_TEMPLATE, values)
    assert "RequiredRSASize 4096\n" in render(SSHD_TEMPLATE, values)


def test_backup_server_lets_in_the_account_its_clients_use() -> None:
    assert template_values(SAMPLE, "backup-server")["ssh_allow_users"] == ("ops", "borg")
    assert template_values(SAMPLE, "appliance")["ssh_allow_users"] == ("ops",)
    # no duplicate, admin first
    assert template_values(HardeningVars("borg", 22), "backup-server")["ssh_allow_users"] == (
        "borg",)


def test_vars_from_the_default_config_are_valid_for_both_roles() -> None:
    config = load_config(DEFAULT_CONFIG_PATH, check_secrets=False)
    admin = config.appliance.admin
    v = vars_from_config(config, "appliance")
    assert (v.admin_user, v.ssh_port, v.settings) == (admin.user, admin.ssh_port,
                                                      config.build.hardening)
    assert template_values(v, "appliance")["ssh_allow_users"] == (admin.user,)
    v = vars_from_config(config, "backup-server")
    assert template_values(v, "backup-server")["ssh_allow_users"] == (
        admin.user, *ROLE_SSH_USERS["backup-server"])


# --- the tree and its templates --------------------------------------------------------


def test_rendered_sshd_config_matches_the_golden_file() -> None:
    rendered = render(SSHD_TEMPLATE, template_values(SAMPLE, "appliance"))
    assert rendered == GOLDEN_SSHD.read_text()


def test_sshd_config_says_what_the_policy_requires() -> None:
    text = GOLDEN_SSHD.read_text()
    settings = {line.split()[0]: line.split(None, 1)[1]
                for line in text.splitlines()
                if line and not line.startswith((" ", "#", "Match"))}
    assert settings["Port"] == "2222"
    assert settings["PasswordAuthentication"] == "no"
    assert settings["PermitRootLogin"] == "no"
    assert settings["AuthenticationMethods"] == "publickey"
    assert settings["MaxAuthTries"] == "3"
    assert settings["LoginGraceTime"] == "30"
    assert all(m.endswith("-etm@openssh.com") for m in settings["MACs"].split(","))
    assert set(settings["Ciphers"].split(",")) == {
        "chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com"}
    kex = settings["KexAlgorithms"].split(",")
    assert {"sntrup761x25519-sha512", "mlkem768x25519-sha256", "curve25519-sha256"} <= set(kex)
    assert not [k for k in kex if "sha1" in k or "nistp" in k or "diffie-hellman" in k]
    assert all(a.startswith(("ssh-ed25519", "rsa-sha2-"))
               for a in settings["HostKeyAlgorithms"].split(","))
    for forwarding in ("X11Forwarding", "AllowAgentForwarding", "AllowTcpForwarding"):
        assert settings[forwarding] == "no"
    # the only exception: local tunnels for the administrator
    assert text.rstrip().endswith("Match User ops\n    AllowTcpForwarding local")


@pytest.mark.parametrize("role", ["appliance", "backup-server"])
def test_every_template_renders_for_every_role(role: str) -> None:
    values = template_values(SAMPLE, role)
    for item in tree_files(HARDENING_TREE, role):
        text = hardening.file_content(item, values).decode()
        assert "{{" not in text and "{%" not in text, item.target


def test_an_undefined_template_variable_is_an_error(tmp_path: Path) -> None:
    template = tmp_path / "x.conf.j2"
    template.write_text("Port {{ ssh_portt }}\n")
    with pytest.raises(ArkboxError, match="ssh_portt"):
        render(template, template_values(SAMPLE, "appliance"))


def test_tree_targets_modes_and_roles() -> None:
    appliance = {f.target: f for f in tree_files(HARDENING_TREE, "appliance")}
    backup = {f.target for f in tree_files(HARDENING_TREE, "backup-server")}
    sshd = appliance["etc/ssh/sshd_config.d/10-arkbox.conf"]
    assert sshd.template and sshd.mode == 0o600
    assert appliance["etc/sysctl.d/90-arkbox.conf"].mode == 0o644
    assert "etc/docker/daemon.json" in appliance and "etc/docker/daemon.json" not in backup
    assert all(not t.endswith(".j2") for t in appliance)


def test_docker_daemon_config_is_valid_json_with_the_hardening_options() -> None:
    config = json.loads((HARDENING_TREE / "etc/docker/daemon.json").read_text())
    assert config["no-new-privileges"] is True
    assert config["live-restore"] is True
    assert config["userland-proxy"] is False
    assert config["log-opts"]["max-size"] and config["log-opts"]["max-file"]
    # "experimental" only for "ip6tables": trixie's dockerd 26.1 refuses ip6tables without it
    # (docs/hardening.md, Docker). Docker 27 needs it no more.
    assert config["ip6tables"] is True
    assert config.get("experimental", False) == config["ip6tables"]


def test_sysctl_file_is_well_formed_and_covers_the_issue() -> None:
    text = (HARDENING_TREE / "etc/sysctl.d/90-arkbox.conf").read_text()
    settings = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            m = re.fullmatch(r"-?([a-z0-9_.]+) = (\S+)", line)
            assert m, line
            settings[m.group(1)] = m.group(2)
    wanted = {
        "net.ipv4.conf.all.rp_filter": "1", "net.ipv4.conf.all.accept_redirects": "0",
        "net.ipv4.conf.all.send_redirects": "0", "net.ipv6.conf.all.accept_redirects": "0",
        "net.ipv4.conf.all.accept_source_route": "0", "net.ipv4.tcp_syncookies": "1",
        "kernel.kptr_restrict": "2", "kernel.dmesg_restrict": "1",
        "fs.protected_hardlinks": "1", "fs.protected_symlinks": "1", "fs.protected_fifos": "2",
        "kernel.unprivileged_bpf_disabled": "1",
    }
    assert {k: settings.get(k) for k in wanted} == wanted
    # Docker routes container traffic: forwarding must not be switched off here.
    assert not [k for k in settings if k.endswith("forwarding") or k.endswith("ip_forward")]


# --- data edits ------------------------------------------------------------------------


LOGIN_DEFS = """\
# comment about UMASK
UMASK\t\t022
PASS_MIN_DAYS\t0
PASS_MIN_DAYS\t5
ENCRYPT_METHOD SHA512
"""


def test_login_defs_keys_are_replaced_deduplicated_or_appended() -> None:
    new = set_login_defs(LOGIN_DEFS, [("UMASK", "027"), ("PASS_MIN_DAYS", "1"),
                                      ("HOME_MODE", "0700")])
    assert new == ("# comment about UMASK\nUMASK\t027\nPASS_MIN_DAYS\t1\n"
                   "ENCRYPT_METHOD SHA512\n\n# arkbox hardening (docs/hardening.md)\n"
                   "HOME_MODE\t0700\n")
    assert set_login_defs(new, [("UMASK", "027"), ("HOME_MODE", "0700")]) == new


def test_a_key_that_is_a_prefix_of_another_is_not_confused() -> None:
    text = "UMASK_EXTRA 1\n"
    assert set_login_defs(text, [("UMASK", "027")]).startswith("UMASK_EXTRA 1\n")


def test_lock_passwords_prefixes_a_bang_once() -> None:
    shadow = "root:*:20000:0:99999:7:::\nops:$y$hash:20000:0:99999:7:::\n"
    locked, changed = lock_passwords(shadow, ["root"])
    assert locked.splitlines()[0] == "root:!*:20000:0:99999:7:::"
    assert locked.splitlines()[1] == "ops:$y$hash:20000:0:99999:7:::"
    assert changed == ["root"]
    assert lock_passwords(locked, ["root"]) == (locked, [])


def test_statoverrides_replace_entries_of_the_same_path() -> None:
    line = statoverride_line("root", "shadow", 0o755, "usr/bin/chage")
    assert line == "root shadow 755 /usr/bin/chage"
    old = "root ssl-cert 710 /etc/ssl/private\nroot shadow 2755 /usr/bin/chage\n"
    assert set_statoverrides(old, [line]) == \
        "root ssl-cert 710 /etc/ssl/private\nroot shadow 755 /usr/bin/chage\n"


def test_id_names_reads_passwd_and_group_text() -> None:
    assert id_names("root:x:0:0::/root:/bin/sh\nshadow:x:42:\n") == {0: "root", 42: "shadow"}


def test_systemctl_acts_offline_on_the_root_fs() -> None:
    assert systemctl_argv(Path("/r"), "mask", ["a.service", "b.target"]) == (
        "systemctl", "--root=/r", "--no-reload", "mask", "a.service", "b.target")


# --- the whole stage on a miniature root fs --------------------------------------------


def _mini_rootfs(root: Path) -> None:
    files = {
        "etc/login.defs": "UMASK\t\t022\nPASS_MIN_DAYS\t0\n",
        "etc/shadow": "root:*:20000:0:99999:7:::\n",
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n",
        "etc/group": "root:x:0:\n",
        "etc/ssh/ssh_host_ed25519_key": "secret",
        "etc/ssh/ssh_host_ed25519_key.pub": "public",
        "usr/sbin/dockerd": "",
        "usr/lib/systemd/system/e2scrub_all.timer": "",
        "usr/lib/systemd/system/sshd-keygen.service": "",
        "etc/systemd/system/arkbox-ssh-hostkeys.service": "",
        "usr/bin/chfn": "",
        "var/lib/dpkg/status": "",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "etc/shadow").chmod(0o640)
    (root / "usr/bin/chfn").chmod(0o4755)


@pytest.fixture
def systemctl_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Record the systemctl commands instead of running them; `mask` links to /dev/null."""
    calls: list[tuple[str, ...]] = []

    def fake_run(argv: tuple[str, ...], **_: object) -> Completed:
        calls.append(argv)
        root = Path(argv[1].removeprefix("--root="))
        if argv[3] == "mask":
            for unit in argv[4:]:
                (root / "etc/systemd/system" / unit).symlink_to("/dev/null")
        if argv[3] == "enable":  # the timers' WantedBy=timers.target
            wants = root / "etc/systemd/system/timers.target.wants"
            wants.mkdir(parents=True, exist_ok=True)
            for unit in argv[4:]:
                (wants / unit).symlink_to(f"/etc/systemd/system/{unit}")
        return Completed(argv, 0, "", "Removed '/etc/...'." if argv[3] == "disable" else "")

    monkeypatch.setattr(hardening, "run", fake_run)
    return calls


def test_apply_hardening_changes_the_tree_once(
    tmp_path: Path, systemctl_calls: list[tuple[str, ...]]
) -> None:
    _mini_rootfs(tmp_path)
    changes = apply_hardening(tmp_path, SAMPLE, "appliance")

    assert "wrote /etc/ssh/sshd_config.d/10-arkbox.conf (0600)" in changes
    sshd = tmp_path / "etc/ssh/sshd_config.d/10-arkbox.conf"
    assert sshd.read_text() == GOLDEN_SSHD.read_text()
    assert stat.S_IMODE(sshd.stat().st_mode) == 0o600
    assert stat.S_IMODE(sshd.parent.stat().st_mode) == 0o755
    assert "wrote /etc/docker/daemon.json (0644)" in changes
    assert "skipped /etc/needrestart/conf.d/90-arkbox.conf: /usr/sbin/needrestart is not " \
           "in the root fs" in changes
    assert (tmp_path / "etc/systemd/system/arkbox-ssh-hostkeys.service.d").is_dir()

    assert (tmp_path / "etc/shadow").read_text() == "root:!*:20000:0:99999:7:::\n"
    assert stat.S_IMODE((tmp_path / "etc/shadow").stat().st_mode) == 0o640
    assert "UMASK\t027" in (tmp_path / "etc/login.defs").read_text()
    assert not list((tmp_path / "etc/ssh").glob("ssh_host_*"))
    assert stat.S_IMODE((tmp_path / "usr/bin/chfn").stat().st_mode) == 0o755
    assert (tmp_path / "var/lib/dpkg/statoverride").read_text() == "root root 755 /usr/bin/chfn\n"

    assert systemctl_calls == [
        systemctl_argv(tmp_path, "disable", ["e2scrub_all.timer"]),
        systemctl_argv(tmp_path, "mask", ["debug-shell.service", "ctrl-alt-del.target",
                                           "sshd-keygen.service"]),
    ]
    systemctl_calls.clear()
    assert [c for c in apply_hardening(tmp_path, SAMPLE, "appliance")
            if not c.startswith(("skipped", "disabled"))] == []
    assert [c[3] for c in systemctl_calls] == ["disable"]  # nothing left to mask


def test_backup_server_gets_no_docker_config_and_docker_disabled(
    tmp_path: Path, systemctl_calls: list[tuple[str, ...]]
) -> None:
    _mini_rootfs(tmp_path)
    for unit in ("docker.service", "docker.socket", "containerd.service"):
        (tmp_path / "usr/lib/systemd/system" / unit).write_text("")
    apply_hardening(tmp_path, SAMPLE, "backup-server")
    assert not (tmp_path / "etc/docker/daemon.json").exists()
    assert "AllowUsers ops borg\n" in \
        (tmp_path / "etc/ssh/sshd_config.d/10-arkbox.conf").read_text()
    assert systemctl_calls[0] == systemctl_argv(
        tmp_path, "disable",
        ["e2scrub_all.timer", "docker.service", "docker.socket", "containerd.service"])


@pytest.mark.parametrize("role", ROLES)
def test_debsums_checks_weekly_where_it_is_installed(
    tmp_path: Path, systemctl_calls: list[tuple[str, ...]], role: str
) -> None:
    _mini_rootfs(tmp_path)
    changes = apply_hardening(tmp_path, SAMPLE, role)
    assert "skipped /etc/default/debsums: /usr/bin/debsums is not in the root fs" in changes
    assert not any(c[3] == "enable" for c in systemctl_calls)

    (tmp_path / "usr/bin/debsums").write_text("")
    systemctl_calls.clear()
    changes = apply_hardening(tmp_path, SAMPLE, role)
    assert "CRON_CHECK=weekly\n" in (tmp_path / "etc/default/debsums").read_text()
    service = (tmp_path / "etc/systemd/system/arkbox-debsums.service").read_text()
    assert "ExecStart=/usr/bin/debsums --silent\n" in service
    timer = (tmp_path / "etc/systemd/system/arkbox-debsums.timer").read_text()
    assert "OnCalendar=weekly\n" in timer and "WantedBy=timers.target\n" in timer
    assert systemctl_argv(tmp_path, "enable", ["arkbox-debsums.timer"]) in systemctl_calls
    assert "enabled arkbox-debsums.timer" in changes
    systemctl_calls.clear()
    apply_hardening(tmp_path, SAMPLE, role)
    assert not any(c[3] == "enable" for c in systemctl_calls)  # enabled once


def test_a_directory_that_is_no_root_fs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArkboxError, match="not an unpacked root fs"):
        apply_hardening(tmp_path, SAMPLE, "appliance")


def test_target_paths_cannot_leave_the_root_fs(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        hardening.write_file(tmp_path, "../escape", b"", 0o644)
