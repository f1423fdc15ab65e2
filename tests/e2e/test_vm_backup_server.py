"""Issue 17: the backup-server role's disk image booted in a VM, audited by Lynis on its own
kernel (the rig's figure, bench/lynis.py, reads the host's kernel and iptables modules).

Opt-in like the appliance's audit in test_vm_firstboot.py (ARKBOX_TEST_VM_LYNIS=1): under
TCG the build, the boot and the audit take ~25-30 min. The role has no first boot: its
firewall and admin account are laid by the build (builder/pipeline/backup_server_host.py),
so the VM is ready when its admin gets in over SSH and systemd says the system is running.

The config is tests/built.py's BACKUP_SERVER_CONFIG with this test's admin key, let in from
slirp's side of the NIC (10.0.2.0/24: qemu's host forward connects from 10.0.2.2): that
build's own image holds a key nobody here has the private half of, so this module builds
its own, once.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from built import BACKUP_SERVER_CONFIG, BUILD_OUT, arkbox_build
from conftest import require_tool
from qemu import overlay
from rig_fixtures import ROOT, admin_key_pair
from vm import VmBox, running_vm
from vm_lynis import LYNIS_BAR, VM_LYNIS, VM_LYNIS_REASON, LynisAudit, lynis_audit

from firstboot.core.config import load_config

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not VM_LYNIS, reason=VM_LYNIS_REASON)]

SLIRP_NETWORK = "10.0.2.0/24"  # where the guest sees this machine's SSH come from
READY_TIMEOUT_S = 900  # TCG on 2 cores, shared: a plain boot takes a few minutes
DISK_SIZE = "4G"
KEPT_AS = "vm-backup-server"  # .pytest_cache/KEPT_AS-lynis-report.dat, serial-KEPT_AS.log


@dataclass(frozen=True)
class ServerBuild:
    qcow2: Path
    key: Path  # the admin's private key
    admin: str


def server_config(where: Path, admin_key: str) -> Path:
    """BACKUP_SERVER_CONFIG with this test's admin key, let in from slirp's network."""
    config: dict[str, Any] = yaml.safe_load(BACKUP_SERVER_CONFIG.read_text())
    config["appliance"]["admin"]["ssh_keys"] = [admin_key]
    config["appliance"]["admin"]["allow_from"] = [SLIRP_NETWORK]
    where.mkdir(parents=True, exist_ok=True)
    path = where / "backup-server.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def server_build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerBuild]:
    """The role's disk image of this module's config; removed when the module is done."""
    for tool in ("qemu-system-x86_64", "qemu-img", "ssh"):
        require_tool(tool)
    work = tmp_path_factory.mktemp("vm-backup-server")
    out = BUILD_OUT / "vm-backup-server"
    try:
        key = work / "admin-key"
        config = server_config(BUILD_OUT / "vm-backup-server-config",
                               admin_key_pair(key, "vm-backup-server-test"))
        started = time.monotonic()
        result = arkbox_build(config, out, BUILD_OUT / "vm-backup-server-build.log",
                              "--role", "backup-server")
        assert result.returncode == 0, result.stderr[-3000:]
        print(f"\nbackup-server VM image built in {time.monotonic() - started:.0f} s")
        appliance = load_config(config).appliance
        yield ServerBuild(out / f"{appliance.name}-backup-server.qcow2", key,
                          appliance.admin.user)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def wait_ready(box: VmBox, timeout_s: float) -> str:
    """Wait for the admin's SSH (through sudo) and then for systemd's boot to finish;
    returns `systemctl is-system-running --wait`'s answer."""
    deadline = time.monotonic() + timeout_s
    out = ""
    while time.monotonic() < deadline:
        code, out = box.exec("true", timeout=60)
        if code == 0:
            break
        if "Kernel panic" in box.console():  # seen once under TCG, in the kernel's own init
            raise AssertionError(f"the guest's kernel panicked while booting:\n"
                                 f"{box.console()[-3000:]}")
        time.sleep(5)
    else:
        raise AssertionError(f"gave up waiting for the admin's SSH (sudo -n true) after "
                             f"{timeout_s:.0f} s: {out.strip()}\n{box.console()[-3000:]}")
    remaining = max(deadline - time.monotonic(), 60)
    code, out = box.exec("systemctl", "is-system-running", "--wait", timeout=remaining)
    # The answer is the first line: exec gives stdout, then stderr.
    state = (out.strip().splitlines() or [""])[0]
    if state != "running":
        _, failed = box.exec("systemctl", "--failed", "--no-legend")
        raise AssertionError(f"systemd's boot did not finish running ({code}): "
                             f"{out.strip()}; failed units: {failed.strip()}")
    return state


@pytest.fixture(scope="module")
def audit(server_build: ServerBuild, tmp_path_factory: pytest.TempPathFactory
          ) -> LynisAudit:
    """The server booted from its qcow2, ready, audited by Lynis, powered off."""
    work = tmp_path_factory.mktemp("vm-backup-server-run")
    disk = overlay(server_build.qcow2, work / "disk.qcow2", DISK_SIZE)
    started = time.monotonic()
    with running_vm("backup-server", disk, work, key=server_build.key,
                    user=server_build.admin) as box:
        try:
            wait_ready(box, READY_TIMEOUT_S)
            print(f"\nbackup-server: booted and running after "
                  f"{time.monotonic() - started:.0f} s")
            result = lynis_audit(box, KEPT_AS)
        finally:
            (ROOT / ".pytest_cache").mkdir(exist_ok=True)
            shutil.copy(box.serial_log, ROOT / f".pytest_cache/serial-{KEPT_AS}.log")
    disk.unlink()
    print("warnings:\n  " + "\n  ".join(result.warnings or ["(none)"]))
    print("suggestions:\n  " + "\n  ".join(result.suggestions or ["(none)"]))
    return result


def test_lynis_on_the_booted_backup_server_reaches_the_bar_with_no_warning(
        audit: LynisAudit) -> None:
    assert audit.warnings == [], audit.warnings
    assert audit.index >= LYNIS_BAR, audit
