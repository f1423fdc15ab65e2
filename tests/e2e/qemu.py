"""Boot a disk image under qemu (TCG; KVM with ARKBOX_QEMU_ACCEL=kvm), watch its serial console.

The guest's NIC is slirp with restrict=on: DHCP and DNS answers come from qemu
itself and no packet leaves this machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Firmware = Literal["bios", "uefi"]
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")
ANSI = re.compile(r"\x1b\[[0-9;?!]*[A-Za-z]")


@dataclass(frozen=True)
class Boot:
    firmware: Firmware
    seconds: float  # from qemu start to the marker
    match: re.Match[str] | None
    log: str  # the serial console, ANSI colour codes removed


def overlay(base: Path, dest: Path, size: str) -> Path:
    """A qcow2 on top of `base` (left untouched) whose disk is `size` — larger than base's."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                    "-b", str(base.resolve()), str(dest), size], check=True)
    return dest


NIC = "user,model=virtio-net-pci,restrict=on"
# TCG (software emulation) unless told otherwise: these machines have a /dev/kvm on which
# qemu aborts, so KVM cannot be detected by its presence. ARKBOX_QEMU_ACCEL=kvm where it works.
ACCEL = os.environ.get("ARKBOX_QEMU_ACCEL", "tcg")
# Under TCG the guest gets a baseline x86-64 CPU (no SSSE3): rspamd then does without
# Hyperscan, whose one-off compile of its URL and regexp databases (~10 s of CPU natively)
# still ran after 5 minutes emulated, so the mail container never became healthy in time.
# With KVM the guest sees what the host has, as on a VPS.
CPU = "max" if ACCEL == "kvm" else "qemu64"


def qemu_argv(disk: Path, serial_log: Path, firmware: Firmware, vars_copy: Path | None,
              memory_mib: int = 2048, *, disk_format: str = "qcow2", nic: str = NIC,
              extra: tuple[str, ...] = ()) -> list[str]:
    # i440fx ("pc") for BIOS, q35 for UEFI: both chipsets a VPS host may give us.
    machine = f"pc,accel={ACCEL}" if firmware == "bios" else f"q35,accel={ACCEL}"
    argv = ["qemu-system-x86_64", "-machine", machine, "-cpu", CPU, "-smp", "2",
            "-m", str(memory_mib), "-nographic", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{serial_log}",
            "-drive", f"file={disk},if=virtio,format={disk_format}",
            "-nic", nic, *extra]
    if firmware == "uefi":
        assert vars_copy is not None
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    return argv


def boot_until(disk: Path, firmware: Firmware, marker: str, workdir: Path,
               timeout: float = 240) -> Boot:
    """Boot `disk`, wait for `marker` (a regex) on the serial console, then kill qemu."""
    serial_log = workdir / f"serial-{firmware}.log"
    vars_copy = None
    if firmware == "uefi":
        vars_copy = workdir / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
    pattern = re.compile(marker)
    started = time.monotonic()
    proc = subprocess.Popen(qemu_argv(disk, serial_log, firmware, vars_copy),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    match: re.Match[str] | None = None
    text = ""
    try:
        while time.monotonic() - started < timeout and proc.poll() is None:
            time.sleep(1)
            text = _read(serial_log)
            match = pattern.search(text)
            if match:
                break
        seconds = time.monotonic() - started
    finally:
        proc.kill()
        proc.wait(timeout=30)
    text = _read(serial_log)
    if match is None and proc.stderr is not None:
        text += "\n[qemu stderr] " + proc.stderr.read().decode(errors="replace")
    return Boot(firmware, seconds, match, text)


def _read(path: Path) -> str:
    try:
        return ANSI.sub("", path.read_bytes().decode(errors="replace"))
    except FileNotFoundError:
        return ""
