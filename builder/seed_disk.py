"""`arkbox seed --into DISK.raw`: a copy of the raw image with the seed as one more partition.

For providers whose only way in is "write this image to the disk" (dd from a rescue
system): the box finds the GPT partition named `arkbox-seed` at first boot, reads the
seed and wipes the partition. The original image stays generic and untouched:

    copy (reflink when the filesystem can, holes kept) → grow the copy by 2 MiB →
    move the backup GPT to the new end → append a 1 MiB partition → write the seed
    (NUL-padded) at its offset → rename the copy to OUT, 0600
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from firstboot.core.errors import ArkboxError, BadInputError
from firstboot.core.execute import run
from firstboot.core.seed import PARTITION_LABEL

MIB = 1024 * 1024
PARTITION_BYTES = MIB
# "Linux filesystem data": a type nothing mounts or grows on its own (systemd's
# gpt-auto and repart look for root/home/srv/... types only).
PARTITION_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
TIMEOUT_S = 600  # a copy of a multi-GiB image without reflink


@dataclass(frozen=True)
class GptPartition:
    name: str
    start: int  # sectors
    size: int  # sectors


@dataclass(frozen=True)
class GptTable:
    sector_size: int
    partitions: tuple[GptPartition, ...]

    def named(self, name: str) -> GptPartition | None:
        return next((p for p in self.partitions if p.name == name), None)


def copy_argv(src: Path, dest: Path) -> tuple[str, ...]:
    return ("cp", "--reflink=auto", "--sparse=always", "--", str(src), str(dest))


def relocate_argv(image: Path) -> tuple[str, ...]:
    return ("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel",
            "--relocate", "gpt-bak-std", str(image))


def append_argv(image: Path) -> tuple[str, ...]:
    return ("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--append", str(image))


def append_script() -> str:
    return f'size={PARTITION_BYTES // MIB}MiB, type={PARTITION_TYPE}, name="{PARTITION_LABEL}"\n'


def parse_table(sfdisk_json: str, source: Path) -> GptTable:
    """The GPT of `sfdisk -J` output; BadInputError when it is no GPT disk image."""
    try:
        table = json.loads(sfdisk_json)["partitiontable"]
    except (json.JSONDecodeError, KeyError, TypeError):
        table = None
    if not isinstance(table, dict) or table.get("label") != "gpt":
        raise BadInputError(f"{source} is not a GPT disk image",
                            hint="give the raw image of an arkbox build: out/NAME.raw")
    parts = tuple(GptPartition(str(p.get("name", "")), int(p["start"]), int(p["size"]))
                  for p in table.get("partitions", []))
    return GptTable(int(table.get("sectorsize", 512)), parts)


def read_table(image: Path) -> GptTable:
    result = run(("sfdisk", "--json", str(image)), timeout=60, check=False)
    if result.returncode != 0:
        raise BadInputError(f"{image}: no partition table sfdisk can read",
                            hint="give the raw image of an arkbox build: out/NAME.raw")
    return parse_table(result.stdout, image)


def _check_input(raw: Path, seed: bytes, out: Path) -> GptTable:
    if not raw.is_file():
        raise BadInputError(f"{raw}: no such disk image", hint="build it first: arkbox build")
    if out.exists() and out.resolve() == raw.resolve():
        raise BadInputError(f"--out {out} is the image itself; it must stay generic",
                            hint="write the seeded copy elsewhere, e.g. --out box1.raw")
    if len(seed) > PARTITION_BYTES:
        raise BadInputError(f"the seed is {len(seed)} bytes; the partition holds "
                            f"{PARTITION_BYTES}")
    table = read_table(raw)
    if table.named(PARTITION_LABEL) is not None:
        raise BadInputError(f"{raw} already has a partition named {PARTITION_LABEL}",
                            hint="seed the image as built (out/NAME.raw), not a seeded copy")
    return table


def append_seed_partition(raw: Path, seed: bytes, out: Path) -> Path:
    """Write a copy of `raw` with `seed` in a new last partition named arkbox-seed to `out`.

    `raw` is only read. `out` appears whole or not at all, mode 0600 (it holds secrets).
    """
    _check_input(raw, seed, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)  # mkstemp made it 0600; cp writes into it and keeps that mode
    partial = Path(name)
    try:
        run(copy_argv(raw, partial), timeout=TIMEOUT_S)
        # Room for the partition at the next MiB boundary, plus a MiB for the backup GPT.
        size = partial.stat().st_size
        os.truncate(partial, -(-size // MIB) * MIB + 2 * MIB)
        run(relocate_argv(partial), timeout=60)
        run(append_argv(partial), input_data=append_script(), timeout=60)
        table = read_table(partial)
        added = table.named(PARTITION_LABEL)
        if added is None or added.size * table.sector_size < PARTITION_BYTES:
            raise ArkboxError(f"sfdisk did not append the {PARTITION_LABEL} partition",
                              hint="check the image with: sfdisk --verify " + str(raw))
        _write_at(partial, added.start * table.sector_size, seed.ljust(PARTITION_BYTES, b"\0"))
        partial.chmod(0o600)
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out


def _write_at(image: Path, offset: int, data: bytes) -> None:
    with image.open("r+b") as handle:
        handle.seek(offset)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def read_seed_partition(image: Path) -> bytes:
    """The bytes of the arkbox-seed partition of `image` (NUL padding included)."""
    table = read_table(image)
    part = table.named(PARTITION_LABEL)
    if part is None:
        raise BadInputError(f"{image} has no {PARTITION_LABEL} partition")
    with image.open("rb") as handle:
        handle.seek(part.start * table.sector_size)
        return handle.read(part.size * table.sector_size)
