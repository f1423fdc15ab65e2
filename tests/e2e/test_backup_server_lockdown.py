"""Issue 17, item 2: the built backup server, booted in the rig, is locked down by itself.

No first boot runs on that role, so the build lays what first boot does on an appliance:
the firewall (one SSH port, IPv4 and IPv6) and the admin account (its keys, sudo, no
password), which sshd lets in only from `appliance.admin.allow_from`. The server is the
role's root fs tar (tests/built.py, config/default-backup-server.yaml: the admin from
172.30.0.0/15 only, so over the rig's IPv6 it is refused); the client container on the
rig's network is the outside world: nmap, ssh-audit, ssh, borg.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from backup_server import running_backup_server
from built import BACKUP_SERVER_CONFIG
from conftest import IN_CI
from rig_fixtures import ClientContainer, add_client, nmap, the_client_image

from builder.rig.parts import BackupServerContainer, files_tar
from firstboot.core.config import load_config
from firstboot.firewall_rules import ruleset_id_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "tests/data/ssh-audit/arkbox-debian13.txt"
BORG_KEY = ROOT / "config/secrets/backup-ssh-key"
PASSPHRASE = (ROOT / "config/secrets/borg-passphrase").read_text().strip()
SSH_PORT = 22
ADMIN_KEY = "/root/admin-key"  # in the client: a key made for this run
SSH = ("ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
       "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20", "-o", "IdentitiesOnly=yes")


@dataclass
class Lockdown:
    server: BackupServerContainer
    client: ClientContainer
    admin: str
    client_image: str

    def address(self, family: int) -> str:
        return self.server.ip(family)

    def ssh(self, user: str, key: str, family: int, *command: str,
            options: tuple[str, ...] = ()) -> tuple[int, str]:
        """ssh from the client; its output is stdout and stderr (the banner, refusals)."""
        return self.client.exec(*SSH, *options, "-i", key, "-p", str(SSH_PORT),
                                f"{user}@{self.address(family)}", *command)


@pytest.fixture(scope="module")
def box(docker_engine: None) -> Iterator[Lockdown]:
    client_image = the_client_image()
    admin = load_config(BACKUP_SERVER_CONFIG).appliance.admin.user
    with running_backup_server("arkbox-lock", "172.30.152.0/24", "fd42:a7b0:c552::/64") as server:
        client = add_client(server.rig, client_image)
        assert client.container is not None
        client.container.put_archive("/", files_tar({
            "/root/borg-key": (BORG_KEY.read_bytes(), 0o600)}))
        code, out = client.exec("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e",
                                "-f", ADMIN_KEY)
        assert code == 0, out
        yield Lockdown(server, client, admin, client_image)


@pytest.fixture(scope="module")
def admin_key(box: Lockdown) -> str:
    """The config's admin keys are what the build laid; this run's key is added beside them
    (the config's private halves are nowhere), keeping the file's owner and mode."""
    home = f"/home/{box.admin}"
    code, baked = box.server.exec("cat", f"{home}/.ssh/authorized_keys")
    assert code == 0, baked
    wanted = [k.strip() for k in load_config(BACKUP_SERVER_CONFIG).appliance.admin.ssh_keys]
    assert [line for line in baked.splitlines() if not line.startswith("#")] == wanted
    _, public = box.client.exec("cat", f"{ADMIN_KEY}.pub")
    code, out = box.server.exec("sh", "-c",
                                f"echo '{public.strip()}' >> {home}/.ssh/authorized_keys")
    assert code == 0, out
    return ADMIN_KEY




@pytest.mark.parametrize("family", [4, 6])
def test_port_scan_finds_exactly_the_ssh_port(box: Lockdown, family: int) -> None:
    scanned = nmap(box.client, box.address(family), family)
    opened, closed, raw = scanned.open, scanned.closed, scanned.raw
    print(f"\nIPv{family} open: {sorted(opened)} closed: {sorted(closed)}")
    assert opened == {SSH_PORT}, raw
    assert closed == set(), raw  # every other port is dropped, not refused


def test_nothing_but_sshd_listens_beyond_loopback(box: Lockdown) -> None:
    # No engine either: nothing of it is enabled, and nothing may pull it in at boot.
    _, engine = box.server.exec("systemctl", "is-active", "docker.service", "containerd.service")
    assert engine.split() == ["inactive", "inactive"], engine
    code, out = box.server.exec("ss", "-Hltnup")
    assert code == 0, out
    print(f"\n{out}")
    exposed = []
    for line in out.splitlines():
        fields = line.split()
        local = fields[4]
        address = local.rsplit(":", 1)[0].strip("[]")
        if address.startswith("127.") or address == "::1" or address.endswith("%lo"):
            continue
        exposed.append((fields[0], local, fields[-1] if "users:" in fields[-1] else ""))
    assert exposed, out
    for proto, local, users in exposed:
        assert proto == "tcp" and local.endswith(f":{SSH_PORT}") and '"sshd' in users, exposed


def test_nftables_loads_the_built_ruleset_at_boot(box: Lockdown) -> None:
    code, state = box.server.exec("systemctl", "is-active", "nftables.service")
    assert state.strip() == "active", state
    _, rendered = box.server.exec("cat", "/etc/arkbox/rendered/nftables.conf")
    code, live = box.server.exec("nft", "list", "table", "inet", "arkbox")
    assert code == 0, live
    assert ruleset_id_of(live) == ruleset_id_of(rendered) is not None


def test_ssh_audit_hardened_policy_passes_from_outside(box: Lockdown) -> None:
    # From a source of its own: sshd penalises (PerSourcePenalties) an address that connects
    # again and again without logging in, as ssh-audit does, and the other tests' client
    # would then be refused for a while.
    scanner = ClientContainer(box.server.rig, "scanner", box.client_image)
    box.server.rig.add(scanner)
    assert scanner.container is not None
    scanner.container.put_archive("/", files_tar({"/root/policy.txt": (POLICY.read_bytes(),
                                                                       0o644)}))
    install = scanner.exec("sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                           "apt-get install -y -qq --no-install-recommends ssh-audit")
    if install[0] != 0:
        if IN_CI:
            pytest.fail(f"cannot install ssh-audit from the mirror: {install[1]}")
        pytest.skip("the Debian mirror is not reachable from the client container")
    address = box.address(4)
    code, out = scanner.exec("ssh-audit", "-n", "-P", "/root/policy.txt", "-p",
                             str(SSH_PORT), address)
    print(f"\n{out}")
    assert code == 0 and "Passed" in out, out
    _, scan = scanner.exec("ssh-audit", "-n", "-p", str(SSH_PORT), address)
    assert "[fail]" not in scan and "[warn]" not in scan, scan


def test_the_admin_logs_in_with_its_key_and_compacts_through_sudo(box: Lockdown,
                                                                   admin_key: str) -> None:
    # A repository to compact, made as a client makes it (append-only, through borg serve).
    code, out = box.client.exec(
        "env", f"BORG_PASSPHRASE={PASSPHRASE}", "BORG_BASE_DIR=/root/borg-base",
        f"BORG_RSH=ssh -i /root/borg-key {' '.join(SSH[1:])}",
        "borg", "init", "--encryption=repokey-blake2",
        f"ssh://borg@{box.address(4)}:{SSH_PORT}/./arkbox")
    assert code == 0, out
    code, out = box.ssh(box.admin, admin_key, 4,
                        "sudo -n id -u && sudo -n arkbox-borg-compact /srv/borg/arkbox")
    assert code == 0, out
    assert re.search(r"^0$", out, re.M), out  # root through sudo, asked for no password
    code, status = box.server.exec("passwd", "-S", box.admin)
    assert status.split()[1] == "L", status  # no password to guess


def test_the_admin_is_refused_outside_allow_from_while_clients_get_in(
        box: Lockdown, admin_key: str) -> None:
    # Over IPv6 the rig's addresses are not in appliance.admin.allow_from (172.30.0.0/15).
    code, out = box.ssh(box.admin, admin_key, 6, "true")
    assert code == 255 and "Permission denied" in out, out
    # The same port and address serve the borg clients: the key is let in (and forced
    # into borg serve, which ends at once without a borg client on stdin).
    _, out = box.ssh("borg", "/root/borg-key", 6, "true", options=("-v",))
    assert "Authenticated to" in out, out


def test_the_borg_key_gets_no_shell(box: Lockdown) -> None:
    _, out = box.ssh("borg", "/root/borg-key", 4, "id; cat /etc/passwd", options=("-v", "-tt"))
    assert "Authenticated to" in out, out  # let in, and still no shell:
    assert "uid=" not in out and "root:" not in out, out
    assert "PTY allocation request failed" in out, out
