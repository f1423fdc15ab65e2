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
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from backup_rig import box_with_data, timed  # noqa: E402

from firstboot.backup import borg  # noqa: E402
from firstboot.backup.backup import run_backup  # noqa: E402
from firstboot.backup.client import Borg, prepare_client  # noqa: E402
from firstboot.backup.restore import RestoreReport, find_backup, restore  # noqa: E402
from firstboot.core.context import FirstbootContext, Paths  # noqa: E402


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


def arkbox_restore(target: FirstbootContext, archive: str) -> RestoreReport:
    """What the restore step does on a fresh box: its key, the backup, the restore."""
    prepare_client(target)
    backup = find_backup(target, archive)
    assert backup is not None
    return restore(target, backup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=4000)
    args = parser.parse_args()
    with box_with_data("arkbox-bench", "172.30.153.0/24", "fd42:a7b0:c553::/64",
                       bench_config, args.mib, args.files) as (source, work):
        first, first_s = timed(lambda: run_backup(source, prune=False))
        again, again_s = timed(lambda: run_backup(source, prune=False))
        runner = Borg(source)
        raw_create = borg.create_argv("raw-unchanged", ["."], compression="lz4")
        _, raw_create_s = timed(lambda: runner.run(raw_create, cwd=source.paths.data,
                                                   what="raw create"))
        raw_dir = work / "raw"
        raw_dir.mkdir()
        _, raw_s = timed(lambda: runner.run(borg.extract_argv(first.archive), cwd=raw_dir,
                                            what="raw extract"))
        target = FirstbootContext(config=source.config, paths=Paths(work / "b"))
        report, arkbox_s = timed(lambda: arkbox_restore(target, first.archive))
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
