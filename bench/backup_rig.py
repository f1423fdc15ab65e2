"""What the backup and restore benchmarks stand on: a backup server booted in a rig of its
own, and a box whose generated data set is ready to back up."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from backup_server import running_backup_server

from firstboot.core.config import load_config
from firstboot.core.context import FirstbootContext, Paths
from firstboot.steps import backup as backup_step

BENCH_SERVICES = (("calendar", "collections"), ("wiki", "data"))  # service, volume
T = TypeVar("T")


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


@contextmanager
def box_with_data(rig_name: str, ipv4_subnet: str, ipv6_subnet: str,
                  write_config: Callable[[Path, str], Path], mib: int, files: int
                  ) -> Iterator[tuple[FirstbootContext, Path]]:
    """The backup-server role in a rig (tests/backup_server.py), and a box (under a scratch
    directory) configured by `write_config(directory, server_ip)`, with `mib` MiB in `files`
    generated files and its backup step done. Yields the box and the scratch directory; the
    rig and the directory are removed after."""
    work = Path(tempfile.mkdtemp(prefix=f"{rig_name}-", dir="/var/tmp"))
    try:
        with running_backup_server(rig_name, ipv4_subnet, ipv6_subnet) as server:
            config = load_config(write_config(work / "config", server.ip()))
            source = FirstbootContext(config=config, paths=Paths(work / "a"))
            generate(source.paths.data, mib, files)
            backup_step.run(source)
            yield source, work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def timed(action: Callable[[], T]) -> tuple[T, float]:
    """What `action` returned, and how many seconds it took."""
    started = time.monotonic()
    result = action()
    return result, time.monotonic() - started
