"""A box of the built image in a VM, reached as a VPS is: HTTPS and SSH through slirp's
host forwards (this machine's 127.0.0.1), its seed as a systemd credential (qemu fw_cfg)
or on its own partition, and the rig's backup server through a guest forward.

`VmBox` answers `exec`, `read_json`, `journal` and `wait_first_boot` like the rig's
ApplianceContainer, so the restore checks of tests/e2e/restore_checks.py run unchanged
against a VM.
"""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu import qemu_argv

from builder.rig.waits import BOX, first_boot_not_done, wait_until
from firstboot.core.seed import CREDENTIAL

# The address the guest dials for its backup server (config's backup.repository);
# slirp hands each connection to socat, which carries it to the server's host port.
BACKUP_GUEST_ADDRESS = "10.0.2.100"
SSH_TIMEOUT_S = 120
MEMORY_MIB = 4096  # every service of config/default.yaml, with room for dockerd


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class VmBox:
    role: str
    ssh_port: int
    https_port: int
    key: Path  # the admin's private key
    user: str
    serial_log: Path

    def exec(self, *argv: str, user: str = "root", timeout: float = SSH_TIMEOUT_S,
             stdin: bytes | None = None) -> tuple[int, str]:
        """Run argv on the box over SSH as the admin (through sudo for root), `stdin` fed
        to it; killed after `timeout` seconds."""
        command = shlex.join(argv)
        if user == "root":
            command = f"sudo -n {command}"
        ssh = [shutil.which("ssh") or "ssh", "-i", str(self.key), "-p", str(self.ssh_port),
               "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "ConnectTimeout=20", f"{self.user}@127.0.0.1", command]
        try:
            result = subprocess.run(ssh, capture_output=True, timeout=timeout,
                                    **({"input": stdin} if stdin is not None
                                       else {"stdin": subprocess.DEVNULL}))
        except subprocess.TimeoutExpired:
            return 255, f"ssh gave no answer within {timeout:.0f} s"
        return result.returncode, (result.stdout + result.stderr).decode(errors="replace")

    def read_json(self, path: str) -> Any:
        code, out = self.exec("cat", path)
        if code != 0:
            return None
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            return None

    def journal(self, unit: str = "arkbox-firstboot") -> str:
        code, out = self.exec("journalctl", "-u", unit, "--no-pager", "-o", "cat")
        return out if code == 0 else f"(no journal over SSH: {out.strip()})\n{self.console()}"

    def wait_first_boot(self, timeout: float) -> dict[str, Any]:
        """Until first boot's done marker is there (asked over SSH, as the rig asks its
        containers); status.json. A failed run raises FirstBootFailed at once."""
        name = f"the {self.role} VM"
        wait_until(f"first boot ({name})",
                   lambda: first_boot_not_done(self, name, False,
                                               "journalctl -u arkbox-firstboot on the VM"),
                   timeout, interval=10)
        status: dict[str, Any] = self.read_json(str(BOX.status)) or {}
        return status

    def console(self) -> str:
        try:
            return self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def https(self, host: str, path: str) -> tuple[str, str]:
        """GET https://host/path from this machine through the forwarded 443: code, body."""
        curl = shutil.which("curl") or "curl"
        result = subprocess.run(
            [curl, "-sk", "--max-time", "60", "-w", "\n%{http_code}",
             "--resolve", f"{host}:{self.https_port}:127.0.0.1",
             f"https://{host}:{self.https_port}{path}"],
            capture_output=True, text=True, timeout=90)
        body, _, code = result.stdout.rpartition("\n")
        return code, body


@contextmanager
def running_vm(role: str, disk: Path, workdir: Path, *, key: Path, user: str,
               disk_format: str = "qcow2", seed: Path | None = None,
               backup_port: int | None = None) -> Iterator[VmBox]:
    """The VM, booting; powered off (qemu killed: a lost server) when the block ends."""
    ssh_port, https_port = free_port(), free_port()
    nic = (f"user,model=virtio-net-pci,restrict=on,"
           f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22,hostfwd=tcp:127.0.0.1:{https_port}-:443")
    if backup_port is not None:
        nic += (f",guestfwd=tcp:{BACKUP_GUEST_ADDRESS}:22-"
                f"cmd:{shutil.which('socat') or 'socat'} - TCP:127.0.0.1:{backup_port}")
    extra: tuple[str, ...] = ()
    if seed is not None:
        # systemd imports it as the system credential arkbox-seed (never on the command line)
        extra = ("-fw_cfg", f"name=opt/io.systemd.credentials/{CREDENTIAL},file={seed}")
    serial_log = workdir / f"serial-{role}.log"
    argv = qemu_argv(disk, serial_log, "bios", None, MEMORY_MIB, disk_format=disk_format,
                     nic=nic, extra=extra)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=(workdir / f"qemu-{role}.err").open("wb"))
    box = VmBox(role, ssh_port, https_port, key, user, serial_log)
    try:
        time.sleep(2)
        if proc.poll() is not None:
            raise RuntimeError(f"qemu exited at once ({proc.returncode}): "
                               f"{(workdir / f'qemu-{role}.err').read_text()}")
        yield box
    finally:
        proc.kill()
        proc.wait(timeout=30)
