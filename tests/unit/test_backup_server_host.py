"""The backup server's host at build time: its firewall, its admin account, sshd's AllowUsers
for that admin, and resolved kept off the network (issue 17, item 2)."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import require_tool

from builder.pipeline import backup_server as bs
from builder.pipeline.backup_server_host import add_account
from builder.pipeline.hardening import (
    HARDENING_TREE,
    template_values,
    tree_files,
    vars_from_config,
)
from firstboot.core.config import Appliance, load_config
from firstboot.core.errors import BadInputError
from firstboot.firewall_rules import render_ruleset, ruleset_id_of

ROOT = Path(__file__).resolve().parents[2]
DEV_SERVER = ROOT / "config/default-backup-server.yaml"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF6YilbxuYcReyoVRXRnJrBiinY8edFG7Xgx8AxGsXkQ ops@laptop"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown and nft -c need root")


@pytest.fixture
def server() -> Appliance:
    return load_config(DEV_SERVER)


def mini_rootfs(root: Path) -> Path:
    """What install_backup_server reads of a Debian root fs."""
    etc = root / "etc"
    (etc / "skel").mkdir(parents=True)
    for name, text in (
            ("passwd", "root:x:0:0::/root:/bin/bash\n"
                       "systemd-network:x:998:998::/:/usr/sbin/nologin\n"
                       "nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n"),
            ("group", "root:x:0:\nsystemd-network:x:998:\nsudo:x:27:\nnogroup:x:65534:\n"),
            ("shadow", "root:!:20000::::::\n"),
            ("gshadow", "root:*::\n")):
        (etc / name).write_text(text)
    (etc / "skel/.profile").write_text("# skel\n")
    for path in ("usr/bin/sudo", "usr/lib/systemd/system/nftables.service"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("")
    return root


def config_with_admin(tmp_path: Path, admin: str) -> Appliance:
    path = tmp_path / "server.yaml"
    path.write_text(textwrap.dedent(f"""\
        appliance:
          name: backup
          domain: example.org
          hostname: backup.example.org
          admin: {admin}
        backup_server:
          port: 2200
        """))
    return load_config(path)


# ---------------------------------------------------------------- the firewall


def test_the_ruleset_opens_the_ssh_port_only_and_forwards_nothing(server: Appliance,
                                                                   tmp_path: Path) -> None:
    text = render_ruleset(server, "backup-server")
    input_chain = text[text.index("chain input"):text.index("chain admin_ssh")]
    dports = [line.strip() for line in input_chain.splitlines() if "dport" in line]
    # DHCP client replies, then SSH: no web, no mail port although mail's default is on.
    assert dports == ["udp sport 67 udp dport 68 accept",
                      "ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept",
                      "tcp dport 22 ct state new jump admin_ssh"]
    assert "elements = { 0.0.0.0/0 }" in text and "elements = { ::/0 }" in text
    forward = text[text.index("chain forward"):]
    assert "accept" not in forward and "policy drop" in forward
    assert ruleset_id_of(text) not in (None, ruleset_id_of(render_ruleset(server)))
    require_tool("nft")
    path = tmp_path / "rules.nft"
    path.write_text(text)
    check = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_install_lays_the_firewall_and_enables_it(server: Appliance, tmp_path: Path) -> None:
    require_tool("nft")
    root = mini_rootfs(tmp_path / "root")
    changes = bs.install_backup_server(root, server, "backup-server")
    assert "firewall: open: 22(ssh), loaded at boot by nftables.service" in changes
    rendered = root / "etc/arkbox/rendered/nftables.conf"
    assert rendered.read_text() == render_ruleset(server, "backup-server")
    assert rendered.stat().st_mode & 0o777 == 0o600
    assert not rendered.with_name("nftables.conf.new").exists()
    assert 'include "/etc/arkbox/rendered/nftables.conf"' in (
        root / "etc/nftables.conf").read_text()
    link = root / "etc/systemd/system/sysinit.target.wants/nftables.service"
    assert str(link.readlink()) == "/usr/lib/systemd/system/nftables.service"
    assert "ExecStop=/usr/sbin/nft delete table inet arkbox" in (
        root / "etc/systemd/system/nftables.service.d/arkbox.conf").read_text()


# ---------------------------------------------------------------- the admin


def test_install_makes_the_admin_with_its_keys_sudo_and_no_password(
        server: Appliance, tmp_path: Path) -> None:
    require_tool("nft")
    root = mini_rootfs(tmp_path / "root")
    changes = bs.install_backup_server(root, server, "backup-server")
    assert "admin account ops (uid 1000), no password" in changes
    etc = root / "etc"
    assert "ops:x:1000:1000:arkbox administrator:/home/ops:/bin/bash\n" in (
        etc / "passwd").read_text()
    assert "ops:x:1000:\n" in (etc / "group").read_text()
    shadow = (etc / "shadow").read_text().splitlines()
    (entry,) = [line for line in shadow if line.startswith("ops:")]
    fields = entry.split(":")
    assert len(fields) == 9 and fields[1] == "!"  # locked: no password to guess or ask
    assert "ops:!::" in (etc / "gshadow").read_text()
    home = root / "home/ops"
    keys = home / ".ssh/authorized_keys"
    assert [line for line in keys.read_text().splitlines() if not line.startswith("#")] == [
        key.strip() for key in server.appliance.admin.ssh_keys]
    for path, mode in ((home, 0o700), (home / ".ssh", 0o700), (keys, 0o600),
                       (home / ".profile", 0o644)):
        info = path.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (1000, 1000, mode), path
    sudoers = etc / "sudoers.d/arkbox-ops"
    assert sudoers.read_text().endswith("ops ALL=(ALL:ALL) NOPASSWD: ALL\n")
    assert sudoers.stat().st_mode & 0o777 == 0o440
    if (visudo := require_visudo()) is not None:
        check = subprocess.run([visudo, "-c", "-f", str(sudoers)], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def require_visudo() -> str | None:
    for candidate in ("/usr/sbin/visudo", "/sbin/visudo"):
        if Path(candidate).exists():
            return candidate
    return None


def test_nothing_starts_the_engine_at_boot(server: Appliance, tmp_path: Path) -> None:
    require_tool("nft")
    root = mini_rootfs(tmp_path / "root")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "arkbox-images.service").symlink_to("/etc/systemd/system/arkbox-images.service")
    changes = bs.install_backup_server(root, server, "backup-server")
    assert not (wants / "arkbox-images.service").is_symlink()
    assert any("arkbox-images.service not enabled" in c for c in changes)


def test_every_group_has_its_gshadow_line(server: Appliance, tmp_path: Path) -> None:
    require_tool("nft")
    root = mini_rootfs(tmp_path / "root")
    bs.install_backup_server(root, server, "backup-server")
    groups = {line.split(":")[0] for line in (root / "etc/group").read_text().splitlines()}
    shadowed = {line.split(":")[0] for line in (root / "etc/gshadow").read_text().splitlines()}
    assert {"borg", "ops"} <= groups and groups <= shadowed  # grpck finds nothing missing


def test_the_host_name_is_the_configs_and_resolves_locally(server: Appliance,
                                                           tmp_path: Path) -> None:
    # No first boot writes it on this role: the image's "arkbox" resolved nowhere, and sudo
    # said "unable to resolve host arkbox" on every call of the admin.
    require_tool("nft")
    root = mini_rootfs(tmp_path / "root")
    (root / "etc/hostname").write_text("arkbox\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n")
    changes = bs.install_backup_server(root, server, "backup-server")
    assert (root / "etc/hostname").read_text() == "backup\n"
    assert (root / "etc/hosts").read_text() == (
        "127.0.0.1\tlocalhost\n127.0.1.1\tbackup.arkbox.test backup\n"
        "::1\tlocalhost ip6-localhost\n")
    assert "host name backup (backup.arkbox.test) in /etc/hostname and /etc/hosts" in changes


def test_a_second_install_changes_nothing(server: Appliance, tmp_path: Path) -> None:
    require_tool("nft")
    root = mini_rootfs(tmp_path / "root")
    bs.install_backup_server(root, server, "backup-server")
    before = {p: p.read_bytes() for p in (root / "etc").rglob("*") if p.is_file()}
    changes = bs.install_backup_server(root, server, "backup-server")
    assert not [c for c in changes if c.startswith(("firewall", "admin", "sudo", "host name"))
                ], changes
    assert {p: p.read_bytes() for p in (root / "etc").rglob("*") if p.is_file()} == before


def test_an_admin_named_as_an_account_of_the_image_is_refused(tmp_path: Path) -> None:
    # The config model refuses the usual names (borg, nobody, ...); the image may hold others.
    root = mini_rootfs(tmp_path / "root")
    with pytest.raises(BadInputError) as refused:
        add_account(root, "systemd-network")
    assert "appliance.admin.user: 'systemd-network' is an account of the image" in (
        refused.value.message)
    assert refused.value.hint


def test_the_first_free_id_of_a_person_is_taken(tmp_path: Path) -> None:
    root = mini_rootfs(tmp_path / "root")
    with (root / "etc/group").open("a") as f:
        f.write("staff:x:1000:\n")
    (ids, created) = add_account(root, "ops")
    assert ids == (1001, 1001) and created
    assert add_account(root, "ops") == ((1001, 1001), False)


def test_no_sudo_in_the_image_is_an_error_that_says_so(server: Appliance,
                                                      tmp_path: Path) -> None:
    require_tool("nft")
    root = mini_rootfs(tmp_path / "root")
    (root / "usr/bin/sudo").unlink()
    with pytest.raises(Exception, match="sudo is not in the root fs"):
        bs.install_backup_server(root, server, "backup-server")


# ---------------------------------------------------------------- sshd and resolved


def test_sshd_lets_the_admin_in_only_from_allow_from(server: Appliance) -> None:
    values = template_values(vars_from_config(server, "backup-server"), "backup-server")
    assert values["ssh_allow_users"] == ("ops@203.0.113.0/24", "ops@172.30.0.0/15", "borg")
    # An appliance's firewall already keeps the admin's port to allow_from.
    values = template_values(vars_from_config(server, "appliance"), "appliance")
    assert values["ssh_allow_users"] == ("ops",)


def test_an_admin_allowed_from_anywhere_is_not_restricted_by_sshd(tmp_path: Path) -> None:
    config = config_with_admin(tmp_path, f'{{user: ops, ssh_keys: ["{KEY}"]}}')
    values = template_values(vars_from_config(config, "backup-server"), "backup-server")
    assert values["ssh_allow_users"] == ("ops", "borg")
    config = config_with_admin(
        tmp_path, f'{{user: ops, ssh_keys: ["{KEY}"], allow_from: ["0.0.0.0/0"]}}')
    values = template_values(vars_from_config(config, "backup-server"), "backup-server")
    assert values["ssh_allow_users"] == ("ops@0.0.0.0/0", "borg")  # not over IPv6


def test_resolved_answers_no_llmnr_or_mdns_on_either_role() -> None:
    for role in ("appliance", "backup-server"):
        (item,) = [f for f in tree_files(HARDENING_TREE, role)
                   if f.target == "etc/systemd/resolved.conf.d/90-arkbox.conf"]
        text = item.source.read_text()
        assert "LLMNR=no\n" in text and "MulticastDNS=no\n" in text


def test_only_the_backup_server_keeps_the_legacy_iptables_module_out() -> None:
    # systemd loaded ip_tables at boot in the VM, an empty legacy table beside the nftables
    # ruleset (Lynis FIRE-4512); Docker on an appliance needs it.
    target = "etc/modprobe.d/arkbox-no-legacy-iptables.conf"
    (item,) = [f for f in tree_files(HARDENING_TREE, "backup-server") if f.target == target]
    lines = [line for line in item.source.read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines == ["blacklist ip_tables", "install ip_tables /bin/false"]
    assert target not in {f.target for f in tree_files(HARDENING_TREE, "appliance")}
