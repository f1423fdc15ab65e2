"""The appliance every rig and boot test stands on: one `arkbox build` per test run.

The builder caches its expensive stages in /var/cache/arkbox, so a run after
the first redoes only assembly, disk and tarball. ARKBOX_TEST_REUSE_BUILD=1
(never in CI) reuses the last output as it is, for quick local loops.
ARKBOX_TEST_BUILT_SINCE=EPOCH reuses only an output written since then: scripts/test
passes its start time to the checks it runs after the suite (scripts/test-alone), whose
separate pytest processes then reuse the suite's build of this very checkout.
"""

from __future__ import annotations

import fcntl
import functools
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_OUT = Path(os.environ.get("ARKBOX_TEST_OUT", "/var/tmp/arkbox-test-out"))
NAME = "arkbox-test"


class Built:
    """One `arkbox build`'s output folder and log, and the files the tests use in it."""

    def __init__(self, out: Path, log: Path) -> None:
        self.out, self.log = out, log
        self.rootfs_tar = out / f"{NAME}-rootfs.tar"
        self.qcow2 = out / f"{NAME}.qcow2"
        self.manifest = out / "build-manifest.json"
        self.installer_tar = out / "arkbox-installer.tar"


def arkbox_build(
    config: Path, out: Path, log: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Run `arkbox build` as an operator would; its output goes to `log`."""
    arkbox = str(Path(sys.executable).parent / "arkbox")
    result = subprocess.run([arkbox, "build", str(config), "--out", str(out), *extra],
                            cwd=ROOT, capture_output=True, text=True, timeout=3600)
    log.write_text(result.stdout + result.stderr)
    return result


def reusable(output: Path) -> bool:
    """Whether an existing build output may stand for this run's build (see above)."""
    if not output.exists():
        return False
    if os.environ.get("ARKBOX_TEST_REUSE_BUILD") == "1" and not os.environ.get("CI"):
        return True
    since = os.environ.get("ARKBOX_TEST_BUILT_SINCE")
    return since is not None and output.stat().st_mtime >= float(since)


@functools.cache
def built_appliance() -> Built:
    BUILD_OUT.mkdir(parents=True, exist_ok=True)
    built = Built(BUILD_OUT / "appliance", BUILD_OUT / "appliance-build.log")
    with (BUILD_OUT / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel pytest processes build once
        if reusable(built.manifest):
            return built
        result = arkbox_build(ROOT / "config/default.yaml", built.out, built.log)
        if result.returncode != 0:
            raise RuntimeError(f"arkbox build failed (exit {result.returncode}); "
                               f"last lines:\n{result.stderr[-3000:]}")
    return built


# Authorizes the default appliance's (published, development) backup key.
BACKUP_SERVER_CONFIG = ROOT / "config/default-backup-server.yaml"
BACKUP_SERVER_NAME = "backup"


@functools.cache
def built_backup_server() -> Path:
    """The backup-server role's root fs tar, one build per run (same reuse rule as above)."""
    BUILD_OUT.mkdir(parents=True, exist_ok=True)
    out, log = BUILD_OUT / "backup-server", BUILD_OUT / "backup-server-build.log"
    tar = out / f"{BACKUP_SERVER_NAME}-backup-server-rootfs.tar"
    with (BUILD_OUT / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if reusable(tar):
            return tar
        result = arkbox_build(BACKUP_SERVER_CONFIG, out, log, "--role", "backup-server")
        if result.returncode != 0:
            raise RuntimeError(f"arkbox build --role backup-server failed "
                               f"(exit {result.returncode}); last lines:\n{result.stderr[-3000:]}")
    return tar
