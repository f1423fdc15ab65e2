"""The root fs and disk artefacts the rig tests stand on, built once and reused.

Until the tests run on `arkbox build` output, this builds the base root fs with
`builder.rootfs`, lays the boot files in with `builder.disk`, and writes
NAME.qcow2 and NAME-rootfs.tar — the same bits in both. The result is cached in
ARTIFACT_ROOT under a key that changes with the builder's source, so a second
test run (or CI on a machine that ran one) reuses it.

Point ARKBOX_TEST_ROOTFS_TAR / ARKBOX_TEST_QCOW2 at built artefacts to skip all that.
Imported by tests/integration and (by path) tests/e2e: no pytest import magic needed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT_ROOT = Path(os.environ.get("ARKBOX_TEST_ARTIFACTS", "/var/tmp/arkbox-test-artifacts"))
NAME = "arkbox-test"
# Fixed, so two runs of the same builder source make the same bits.
SOURCE_DATE_EPOCH = 1735689600  # 2025-01-01T00:00:00Z
BUILDER_SOURCES = ("builder/rootfs.py", "builder/disk.py")


@dataclass(frozen=True)
class Artifacts:
    rootfs_tar: Path
    qcow2: Path
    base_tar: Path | None  # the mmdebstrap output, when built here
    log: Path | None


def artifact_key() -> str:
    digest = hashlib.sha256()
    for rel in BUILDER_SOURCES:
        digest.update((ROOT / rel).read_bytes())
    return digest.hexdigest()[:16]


def artifacts() -> Artifacts:
    """The artefacts named by the environment, else built (or reused) here."""
    tar, qcow2 = os.environ.get("ARKBOX_TEST_ROOTFS_TAR"), os.environ.get("ARKBOX_TEST_QCOW2")
    if tar and qcow2:
        return Artifacts(Path(tar), Path(qcow2), None, None)
    return build_artifacts(ARTIFACT_ROOT / artifact_key())


def build_artifacts(work: Path) -> Artifacts:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from builder.disk import build_disk_images, rootfs_tar
    from builder.rootfs import build_rootfs_tar, unpack_rootfs_tar

    done = work / "done"
    result = Artifacts(work / f"{NAME}-rootfs.tar", work / f"{NAME}.qcow2", work / "base.tar",
                       work / "build.log")
    work.mkdir(parents=True, exist_ok=True)
    with (work / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return result
        assert result.log is not None and result.base_tar is not None
        with result.log.open("w") as log:
            def on_line(line: str) -> None:
                log.write(line + "\n")
                log.flush()

            built = build_rootfs_tar(result.base_tar, source_date_epoch=SOURCE_DATE_EPOCH,
                                     work_dir=work, on_line=on_line)
            log.write(f"# rootfs: {built.seconds:.1f} s, {built.size_bytes} bytes\n")
            tree = work / "tree"
            if tree.exists():
                shutil.rmtree(tree)
            unpack_rootfs_tar(result.base_tar, tree)
            images = build_disk_images(tree, work, NAME, source_date_epoch=SOURCE_DATE_EPOCH,
                                       on_line=on_line)
            log.write(f"# disk: {images.seconds:.1f} s\n")
            rootfs_tar(tree, result.rootfs_tar, source_date_epoch=SOURCE_DATE_EPOCH)
            images.raw.unlink()
            shutil.rmtree(tree)
        done.write_text(artifact_key() + "\n")
    prune_other_builds(work)
    return result


def prune_other_builds(keep: Path) -> None:
    """Delete artefacts of other builder sources (1-2 GB each) that no run is using."""
    for other in keep.parent.iterdir():
        if other == keep or not other.is_dir():
            continue
        with (other / ".lock").open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(other)
