"""Benchmark `arkbox build`: issue 19's build goals, measured against their targets, and
a plain mmdebstrap of the same packages side by side.

Prints, in one run:
  goals     config-only rebuild (s)              vs 15 s
            qcow2 size / the root fs tar's size  vs 1.0
            cold build (s)                       vs 2.0 x (plain mmdebstrap + the service
                                                   images' own build: the cold build's
                                                   "service images" stage)
  baseline  cold build and qcow2 vs a plain `mmdebstrap` of the same package list
  stages    the cold build's and the warm rebuild's seconds per stage
  load      the 1-minute load average when each build ended (2 cores: figures vary with it)

Run as root on a machine prepared by scripts/setup:  .venv/bin/python bench/build.py
Both cold runs start with an empty deb cache of their own, so both download.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder.pipeline import hardening, rootfs  # noqa: E402
from builder.pipeline.build import IMAGE_PACKAGES  # noqa: E402
from builder.pipeline.manifest import read_manifest  # noqa: E402

ARKBOX = str(Path(sys.executable).parent / "arkbox")
NAME = "arkbox-test"
REBUILD_TARGET_S = 15.0
QCOW2_TARGET_RATIO = 1.0
COLD_TARGET_FACTOR = 2.0


@dataclass(frozen=True)
class Run:
    seconds: float
    load: float  # 1-minute load average when it ended


def timed(argv: list[str]) -> Run:
    start = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Run(time.monotonic() - start, os.getloadavg()[0])


def stage_seconds(out: Path) -> dict[str, float]:
    return {s.name: s.seconds for s in read_manifest(out / "build-manifest.json").stages}


def config_only_change(work: Path) -> Path:
    """The default config with another time zone (the secrets beside it, as a link)."""
    config_dir = work / "config"
    config_dir.mkdir()
    text = (ROOT / "config/default.yaml").read_text()
    (config_dir / "appliance.yaml").write_text(text.replace("timezone: Etc/UTC",
                                                            "timezone: Europe/Berlin"))
    (config_dir / "secrets").symlink_to(ROOT / "config/secrets")
    return config_dir / "appliance.yaml"


def goal(what: str, measured: float, target: float, unit: str = "") -> str:
    verdict = "met" if measured <= target else "NOT met"
    return f"{what:<56}{measured:>10.2f}{unit:<2}{target:>10.2f}{unit:<2}  {verdict}"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="arkbox-bench-build-", dir="/var/tmp"))
    try:
        packages = rootfs.package_list([*hardening.HARDENING_PACKAGES, *IMAGE_PACKAGES])
        plain_tar = work / "plain.tar"
        plain = timed(["mmdebstrap", "--variant=apt", f"--include={','.join(packages)}",
                       "trixie", str(plain_tar), rootfs.MIRROR])

        cache, out, out2 = work / "cache", work / "out", work / "out2"
        cold = timed([ARKBOX, "build", "--out", str(out), "--cache", str(cache)])
        warm = timed([ARKBOX, "build", str(config_only_change(work)), "--out", str(out2),
                      "--cache", str(cache)])
        cold_stages, warm_stages = stage_seconds(out), stage_seconds(out2)
        images_s = cold_stages["service images"]

        qcow2 = (out2 / f"{NAME}.qcow2").stat().st_size
        rootfs_tar = (out2 / f"{NAME}-rootfs.tar").stat().st_size
        plain_size = plain_tar.stat().st_size
        installer = out / "arkbox-installer.tar"

        print(f"{'issue 19 goal':<56}{'measured':>12}{'target':>12}")
        print(goal("config-only rebuild (s)", warm.seconds, REBUILD_TARGET_S))
        print(goal("qcow2 / root fs tar (size)", qcow2 / rootfs_tar, QCOW2_TARGET_RATIO, "x"))
        print(goal(f"cold build (s) vs {COLD_TARGET_FACTOR} x (mmdebstrap {plain.seconds:.0f}"
                   f" + service images {images_s:.0f})", cold.seconds,
                   COLD_TARGET_FACTOR * (plain.seconds + images_s)))
        print()
        print(f"{'baseline':<44}{'arkbox':>12}{'plain':>12}{'ratio':>8}")
        print(f"{'cold build vs plain mmdebstrap (s)':<44}{cold.seconds:>12.1f}"
              f"{plain.seconds:>12.1f}{cold.seconds / plain.seconds:>8.2f}")
        print(f"{'qcow2 vs plain root fs tar (MiB)':<44}{qcow2 / 2**20:>12.0f}"
              f"{plain_size / 2**20:>12.0f}{qcow2 / plain_size:>8.2f}")
        print(f"{'root fs tar (MiB)':<44}{rootfs_tar / 2**20:>12.0f}")
        print(f"{'installer folder as tar (MiB)':<44}{installer.stat().st_size / 2**20:>12.1f}")
        print()
        print("cold build stages (s): "
              + ", ".join(f"{k} {v:.1f}" for k, v in cold_stages.items()))
        print("config-only rebuild stages (s): "
              + ", ".join(f"{k} {v:.1f}" for k, v in warm_stages.items()))
        print(f"load average (1 min) at the end: mmdebstrap {plain.load:.1f}, cold build "
              f"{cold.load:.1f}, rebuild {warm.load:.1f} (on {os.cpu_count()} cores)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
