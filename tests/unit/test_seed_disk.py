"""`arkbox seed --into`: a copy of a real GPT image (the build's own layout, written by real
sfdisk) with the seed in one more partition; the original is never touched."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.pipeline import disk
from builder.seed_disk import (
    PARTITION_BYTES,
    append_seed_partition,
    read_seed_partition,
    read_table,
)
from firstboot.core.config import DEFAULT_CONFIG_PATH
from firstboot.core.errors import BadInputError
from firstboot.core.execute import run
from firstboot.core.seed import PARTITION_LABEL, Seed, decode, encode

ARKBOX = str(Path(sys.executable).parent / "arkbox")
SEED = encode(Seed(appliance="arkbox-test", role="appliance", config_sha256="ab" * 32,
                   secrets={"file:secrets/borg-passphrase": b"not a real one\n"}))


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """A sparse image with the build's GPT: BIOS boot, ESP, a 64 MiB root, a marker in it."""
    layout = disk.disk_layout(disk.disk_ids("arkbox-test", 0), 64)
    image = tmp_path / "arkbox-test.raw"
    with image.open("wb") as handle:
        handle.truncate(layout.size_bytes)
    run(disk.sfdisk_argv(image), input_data=disk.sfdisk_script(layout), timeout=60)
    with image.open("r+b") as handle:
        handle.seek(layout.root.offset)
        handle.write(b"root file system")
    image.chmod(0o644)
    return image


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_seeded_copy_has_the_seed_in_a_last_partition(raw: Path, tmp_path: Path) -> None:
    before, mode = sha256(raw), raw.stat().st_mode
    out = append_seed_partition(raw, SEED, tmp_path / "box.raw")
    assert sha256(raw) == before and raw.stat().st_mode == mode
    assert (out.stat().st_mode & 0o777) == 0o600
    original, seeded = read_table(raw), read_table(out)
    assert seeded.partitions[:-1] == original.partitions  # nothing else moved
    last = seeded.partitions[-1]
    assert last.name == PARTITION_LABEL and last.size * 512 == PARTITION_BYTES
    assert last.start >= max(p.start + p.size for p in original.partitions)
    assert last.start % 2048 == 0
    data = read_seed_partition(out)
    assert len(data) == PARTITION_BYTES and data.endswith(b"\0" * 1024)
    assert decode(data, "partition") == decode(SEED, "file")
    # The backup GPT sits at the new end: sfdisk finds nothing to correct.
    verify = run(("sfdisk", "--verify", str(out)), timeout=60, check=False)
    assert verify.returncode == 0 and "No errors detected" in verify.stdout, verify.stdout
    named = json.loads(run(("sfdisk", "-J", str(out)), timeout=60).stdout)
    assert named["partitiontable"]["partitions"][-1]["name"] == PARTITION_LABEL
    with out.open("rb") as handle:  # the root partition's content came along
        handle.seek(original.partitions[2].start * 512)
        assert handle.read(16) == b"root file system"


def test_refuses_to_write_over_the_image_itself(raw: Path) -> None:
    before = sha256(raw)
    with pytest.raises(BadInputError, match="must stay generic"):
        append_seed_partition(raw, SEED, raw)
    assert sha256(raw) == before


def test_refuses_a_seeded_copy_a_missing_image_and_a_non_disk(raw: Path, tmp_path: Path) -> None:
    seeded = append_seed_partition(raw, SEED, tmp_path / "once.raw")
    with pytest.raises(BadInputError, match="already has a partition named arkbox-seed"):
        append_seed_partition(seeded, SEED, tmp_path / "twice.raw")
    with pytest.raises(BadInputError, match="no such disk image"):
        append_seed_partition(tmp_path / "absent.raw", SEED, tmp_path / "x.raw")
    text = tmp_path / "notes.txt"
    text.write_text("not a disk\n" * 100)
    with pytest.raises(BadInputError, match="no partition table"):
        append_seed_partition(text, SEED, tmp_path / "y.raw")
    with pytest.raises(BadInputError, match="the partition holds"):
        append_seed_partition(raw, b"{" * (PARTITION_BYTES + 1), tmp_path / "z.raw")
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["arkbox-test.raw", "notes.txt", "once.raw"]


def test_cli_into_writes_the_configs_seed(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "box1.raw"
    result = subprocess.run([ARKBOX, "seed", str(DEFAULT_CONFIG_PATH), "--into", str(raw),
                             "--out", str(out)], capture_output=True, text=True, timeout=300,
                            env=os.environ)
    assert result.returncode == 0, result.stderr
    seed = decode(read_seed_partition(out), str(out))
    assert seed.appliance == "arkbox-test" and len(seed.secrets) == 7
    assert (out.stat().st_mode & 0o777) == 0o600
