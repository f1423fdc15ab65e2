"""Lynis in a VM booted by tests/e2e/vm.py: a measurement of the hardening on the image's
own kernel (issue 17), opt-in with ARKBOX_TEST_VM_LYNIS=1. Used by the VM modules of both
roles (test_vm_firstboot, test_vm_backup_server); their figures are in docs/hardening.md."""

from __future__ import annotations

import hashlib
import lzma
import os
import time
import urllib.request
from dataclasses import dataclass

from rig_fixtures import ROOT
from vm import VmBox

VM_LYNIS = os.environ.get("ARKBOX_TEST_VM_LYNIS") == "1"
VM_LYNIS_REASON = ("Lynis in a VM is a measurement, opt-in: ARKBOX_TEST_VM_LYNIS=1 "
                   "(docs/hardening.md has its figures)")
LYNIS_BAR = 80


@dataclass(frozen=True)
class LynisAudit:
    index: int
    warnings: list[str]
    suggestions: list[str]


def trixie_package(name: str) -> bytes:
    """A package of trixie (arch all or amd64), fetched by this machine from Debian's
    archive and checked against the SHA256 its Packages index names: the guest's own
    apt-get could not resolve deb.debian.org through slirp on this network."""
    from builder.pipeline.rootfs import MIRROR

    def fetch(url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=120) as answer:
            data: bytes = answer.read()
        return data

    index = lzma.decompress(fetch(f"{MIRROR}/dists/trixie/main/binary-amd64/Packages.xz"))
    for stanza in index.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                      if ": " in line and not line.startswith(" "))
        if fields.get("Package") == name:
            deb = fetch(f"{MIRROR}/{fields['Filename']}")
            assert hashlib.sha256(deb).hexdigest() == fields["SHA256"], name
            return deb
    raise AssertionError(f"{name} is not in trixie's main")


def lynis_audit(box: VmBox, kept_as: str = "vm") -> LynisAudit:
    """trixie's Lynis, installed into the running guest for the audit only (as
    bench/lynis.py does in the rig), run as root. Its report and log are kept in
    .pytest_cache (KEPT_AS-lynis-report.dat, KEPT_AS-lynis.log)."""
    started = time.monotonic()
    code, out = box.exec("sh", "-c", "cat > /root/lynis.deb && dpkg -i /root/lynis.deb",
                         stdin=trixie_package("lynis"), timeout=600)
    assert code == 0, out[-3000:]
    code, out = box.exec("sh", "-c", "lynis audit system --quick --no-colors "
                         ">/root/lynis.txt 2>&1", timeout=1800)
    assert code == 0, out[-3000:]
    code, report = box.exec("cat", "/var/log/lynis-report.dat")
    assert code == 0, report
    code, log = box.exec("cat", "/var/log/lynis.log")
    (ROOT / ".pytest_cache").mkdir(exist_ok=True)
    (ROOT / f".pytest_cache/{kept_as}-lynis-report.dat").write_text(report)
    (ROOT / f".pytest_cache/{kept_as}-lynis.log").write_text(log)

    def values(key: str) -> list[str]:
        return [line.split("=", 1)[1] for line in report.splitlines()
                if line.startswith(f"{key}=")]

    audit = LynisAudit(int(values("hardening_index")[0]), values("warning[]"),
                       values("suggestion[]"))
    print(f"\n{box.role}: Lynis in the VM after {time.monotonic() - started:.0f} s: "
          f"index {audit.index}, {len(audit.warnings)} warning(s), "
          f"{len(audit.suggestions)} suggestion(s)")
    return audit
