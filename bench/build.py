"""Benchmark `arkbox build` against a plain mmdebstrap of the same packages, side by side.

Prints, in one run:
  cold build (empty stage cache)   vs  plain `mmdebstrap` of the same package list
  warm rebuild after a config-only change
  qcow2 size                       vs  the plain root fs tarball
  the frozen installer's size (its start-up: bench/installer_start.py)

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder.pipeline import hardening, rootfs  # noqa: E402
from builder.pipeline.build import IMAGE_PACKAGES  # noqa: E402
from builder.pipeline.manifest import read_manifest  # noqa: E402

ARKBOX = str(Path(sys.executable).parent / "arkbox")


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    subprocess.run(argv, check=True, env={**os.environ, **(env or {})},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="arkbox-bench-build-", dir="/var/tmp"))
    try:
        packages = rootfs.package_list([*hardening.HARDENING_PACKAGES, *IMAGE_PACKAGES])
        plain_tar = work / "plain.tar"
        plain = timed(["mmdebstrap", "--variant=apt", f"--include={','.join(packages)}",
                       "trixie", str(plain_tar), rootfs.MIRROR])

        cache = work / "cache"
        out = work / "out"
        cold = timed([ARKBOX, "build", "--out", str(out), "--cache", str(cache)])
        stages = {s.name: s.seconds for s in read_manifest(out / "build-manifest.json").stages}

        config_dir = work / "config"
        config_dir.mkdir()
        text = (ROOT / "config/default.yaml").read_text()
        (config_dir / "appliance.yaml").write_text(text.replace("timezone: Etc/UTC",
                                                                "timezone: Europe/Berlin"))
        (config_dir / "secrets").symlink_to(ROOT / "config/secrets")
        warm = timed([ARKBOX, "build", str(config_dir / "appliance.yaml"), "--out",
                      str(work / "out2"), "--cache", str(cache)])

        qcow2 = (out / "arkbox-test.qcow2").stat().st_size
        installer = out / "arkbox-installer.tar"

        print(f"{'what':<44}{'arkbox':>12}{'baseline':>12}{'ratio':>8}")
        print(f"{'cold build vs plain mmdebstrap (s)':<44}{cold:>12.1f}{plain:>12.1f}"
              f"{cold / plain:>8.2f}")
        print(f"{'warm rebuild, config-only change (s)':<44}{warm:>12.1f}{plain:>12.1f}"
              f"{warm / plain:>8.2f}")
        print(f"{'qcow2 vs plain root fs tar (MiB)':<44}{qcow2 / 2**20:>12.0f}"
              f"{plain_tar.stat().st_size / 2**20:>12.0f}"
              f"{qcow2 / plain_tar.stat().st_size:>8.2f}")
        print(f"{'installer folder as tar (MiB)':<44}{installer.stat().st_size / 2**20:>12.1f}")
        print("cold build stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
