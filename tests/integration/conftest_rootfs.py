"""The root fs and disk artefacts the rig tests stand on: this run's `arkbox build` output.

Point ARKBOX_TEST_ROOTFS_TAR / ARKBOX_TEST_QCOW2 at other built artefacts to use those.
Imported by tests/integration and (by path) tests/e2e: no pytest import magic needed.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = "arkbox-test"
# The builder's fixed SOURCE_DATE_EPOCH (builder/context.py).
SOURCE_DATE_EPOCH = 1735689600  # 2025-01-01T00:00:00Z


@dataclass(frozen=True)
class Artifacts:
    rootfs_tar: Path
    qcow2: Path
    base_tar: Path | None  # the mmdebstrap output, when built here
    log: Path | None


def artifacts() -> Artifacts:
    """The artefacts named by the environment, else this run's `arkbox build` output."""
    tar, qcow2 = os.environ.get("ARKBOX_TEST_ROOTFS_TAR"), os.environ.get("ARKBOX_TEST_QCOW2")
    if tar and qcow2:
        return Artifacts(Path(tar), Path(qcow2), None, None)
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from built import built_appliance

    built = built_appliance()
    return Artifacts(built.rootfs_tar, built.qcow2, None, built.log)
