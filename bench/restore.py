"""Benchmark arkbox's restore against one raw `borg extract` of the same backup, side by side.

Boots the built backup-server role (tests/built.py builds it once, or reuses it with
ARKBOX_TEST_REUSE_BUILD=1) in a rig, generates a data set spread over the service
volumes of a two-service appliance, backs it up with `run_backup`, then times, each
onto a fresh directory of a fresh tmpfs-free ext4 area (a new directory tree; see
DESIGN.md on freshly wiped ext4):

  raw     one `borg extract` of the backup's archive
  arkbox  restore(): find the latest backup, extract it (each paused service's volumes by
          a borg of its own beside the rest, two at a time), verify, swap

Also: the backup with no change since the last one vs a raw `borg create` of the same tree.

Run as root on a machine prepared by scripts/setup:
    .venv/bin/python bench/restore.py [--mib 256] [--files 4000]
(The issue's full figure is --mib 2048 --files 20000; it takes several minutes.)
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import docker  # noqa: E402

from builder.rig.parts import Rig, SystemdPart, image_from_rootfs_tar, wait_until  # noqa: E402
from firstboot.backup import borg  # noqa: E402
from firstboot.backup.backup import run_backup  # noqa: E402
from firstboot.backup.client import Borg, prepare_client  # noqa: E402
from firstboot.backup.restore import find_backup, restore  # noqa: E402
from firstboot.core.context import FirstbootContext, Paths  # noqa: E402
from firstboot.steps import backup as backup_step  # noqa: E402

BENCH_SERVICES = (("calendar", "collections"), ("wiki", "data"))  # service, volume


def generate(data: Path, mib: int, files: int) -> None:
    """`files` files totalling ~`mib` MiB: half compressible text, half random bytes."""
    rng = random.Random(5)
    per_file = max(1, (mib << 20) // files)
    (data / "secrets").mkdir(parents=True)
    (data / "manifest.json").write_text('{"appliance": "arkbox-test", "services": []}\n')
    for index in range(files):
        service, volume = BENCH_SERVICES[index % len(BENCH_SERVICES)]
        folder = data / "volumes" / service / volume / f"d{index % 97:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        if index % 2:
            content = os.urandom(per_file)
        else:
            words = [rng.choice(("arkbox", "borg", "restore", "calendar", "wiki", "backup"))
                     for _ in range(per_file // 7 + 1)]
            content = " ".join(words).encode()[:per_file]
        (folder / f"f{index}.bin").write_bytes(content)


def bench_config(directory: Path, ip: str) -> Path:
    from integration.test_backup_server import write_config  # the integration test's box

    write_config(directory, ip)
    text = (directory / "appliance.yaml").read_text()
    # The bench has no database container: drop the dumped service.
    text = text.split("  db:\n")[0] + "backup:" + text.split("\nbackup:", 1)[1]
    text = text.replace("  calendar:\n", "  wiki:\n    image: \"registry.example/dokuwiki:1\"\n"
                        "    volumes: {data: /var/lib/dokuwiki/data}\n    backup: "
                        "{consistency: none}\n  calendar:\n", 1)
    (directory / "appliance.yaml").write_text(text)
    return directory / "appliance.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=4000)
    args = parser.parse_args()
    from built import built_backup_server

    from firstboot.core.config import load_config

    client = docker.from_env(timeout=300)
    image = image_from_rootfs_tar(client, built_backup_server(), "arkbox/backup-server-role")
    rig = Rig(name=f"arkbox-bench{os.getpid()}", client=client,
              ipv4_subnet="172.30.153.0/24", ipv6_subnet="fd42:a7b0:c553::/64")
    work = Path(tempfile.mkdtemp(prefix="arkbox-bench-restore-", dir="/var/tmp"))
    try:
        with rig.running():
            server = SystemdPart(rig, "backup", image, aliases=("backup.arkbox.test",))
            rig.add(server)
            wait_until("sshd", lambda: None if server.exec("systemctl", "is-active", "ssh")[1]
                       .strip() == "active" else "not yet", 60)
            config = load_config(bench_config(work / "config", server.ip()))
            source = FirstbootContext(config=config, paths=Paths(work / "a"))
            generate(source.paths.data, args.mib, args.files)
            backup_step.run(source)
            started = time.monotonic()
            first = run_backup(source, prune=False)
            first_s = time.monotonic() - started
            started = time.monotonic()
            again = run_backup(source, prune=False)
            again_s = time.monotonic() - started
            runner = Borg(source)
            started = time.monotonic()
            runner.run(borg.create_argv("raw-unchanged", ["."], compression="lz4"),
                       cwd=source.paths.data, what="raw create")
            raw_create_s = time.monotonic() - started

            raw_dir = work / "raw"
            raw_dir.mkdir()
            started = time.monotonic()
            runner.run(borg.extract_argv(first.archive), cwd=raw_dir, what="raw extract")
            raw_s = time.monotonic() - started

            target = FirstbootContext(config=config, paths=Paths(work / "b"))
            started = time.monotonic()
            prepare_client(target)
            backup = find_backup(target, first.archive)
            assert backup is not None
            report = restore(target, backup)
            arkbox_s = time.monotonic() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = first.totals()
    print(f"data set: {total['nfiles']} files, {total['original_size'] / 2**20:.0f} MiB "
          f"({args.files} generated, {args.mib} MiB asked)")
    print(f"first backup            {first_s:7.1f} s")
    print(f"backup, no change       {again_s:7.1f} s   vs raw borg create {raw_create_s:6.1f} s"
          f"   ratio {again_s / raw_create_s:.2f}x  (pauses {again.pauses})")
    print(f"restore (arkbox)        {arkbox_s:7.1f} s   vs raw borg extract {raw_s:6.1f} s"
          f"   ratio {arkbox_s / raw_s:.2f}x  (extracts {report.seconds_by_part})")


if __name__ == "__main__":
    main()
