"""NAME.qcow2 as arkbox lays it out: the entries and layout (pure), and with the real
qemu-img on a small raw: the same disk as the raw, only changed clusters compressed again,
and the same bytes whatever the cache held."""

from __future__ import annotations

import hashlib
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool

from builder.pipeline import qcow2
from builder.pipeline.qcow2 import CLUSTER, Piece, Stored

MIB = 1 << 20


def test_a_compressed_entry_names_the_sectors_its_data_touches() -> None:
    entry = qcow2.compressed_entry(5 * CLUSTER + 700, 1000)  # sectors 1 .. 3 of the cluster
    assert entry & qcow2.COMPRESSED and not entry & qcow2.COPIED
    assert qcow2.compressed_span(entry) == (5 * CLUSTER + 700, 3 * 512 - 700 + 512)


def test_the_zstd_frame_length_ends_at_its_last_block() -> None:
    # magic, descriptor (single segment, 1-byte content size), size 5, one last raw block
    frame = qcow2.ZSTD_MAGIC + bytes([0x20, 5]) + (5 << 3 | 1).to_bytes(3, "little") + b"hello"
    assert qcow2.zstd_frame_length(frame + b"next cluster's bytes") == len(frame)
    with pytest.raises(qcow2.ArkboxError, match="not a zstd frame"):
        qcow2.zstd_frame_length(b"\0" * 16)


def test_whole_clusters_come_first_then_compressed_ones_back_to_back() -> None:
    pieces = [Piece(7, Path("/a"), Stored(0, 1000, True)), Piece(2, Path("/a"),
              Stored(0, CLUSTER, False)), Piece(3, Path("/b"), Stored(0, 600, True))]
    layout = qcow2.plan(64 * MIB, pieces)
    data = 5 * CLUSTER  # header, L1, refcount table and block, one L2 table
    assert layout.placed == {2: Stored(data, CLUSTER, False),
                             3: Stored(data + CLUSTER, 600, True),
                             7: Stored(data + CLUSTER + 600, 1000, True)}
    assert layout.size % 512 == 0
    # both compressed clusters share one host cluster; the whole one has its own
    assert layout.refcounts() == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 2}


def test_the_header_is_version_3_with_zstd() -> None:
    head = qcow2.header(4 << 30, 1)
    magic, version = struct.unpack(">II", head[:8])
    assert (magic, version) == (qcow2.MAGIC, 3)
    assert struct.unpack(">I", head[100:104])[0] == qcow2.HEADER_LENGTH == 112
    assert head[104] == qcow2.ZSTD


def _raw(path: Path, clusters: dict[int, bytes], size: int = 16 * MIB) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
        for n, data in clusters.items():
            f.seek(n * CLUSTER)
            f.write(data)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_rebuild_compresses_only_what_changed_and_gives_the_same_file(tmp_path: Path) -> None:
    qemu_img = require_tool("qemu-img")
    text = b"arkbox " * (CLUSTER // 7)
    first = _raw(tmp_path / "1.raw", {0: text, 3: text[::-1], 5: bytes(range(256)) * 8192})
    cache, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    cold = qcow2.write_qcow2(first, tmp_path / "1.qcow2", cache=cache, work=work)
    assert (cold.compressed, cold.clusters) == (3, 3)
    assert cache.stat().st_mode & 0o777 == 0o700  # it holds the box's disk, as out/ does
    second = _raw(tmp_path / "2.raw", {0: text, 3: b"changed" + text[7:], 5: bytes(range(256))
                                       * 8192, 7: b"new"})
    warm = qcow2.write_qcow2(second, tmp_path / "2.qcow2", cache=cache, work=work)
    assert (warm.compressed, warm.clusters) == (2, 4)
    assert warm.sha256 == _sha256(tmp_path / "2.qcow2")
    for raw, image in ((first, "1.qcow2"), (second, "2.qcow2")):
        subprocess.run([qemu_img, "check", str(tmp_path / image)], check=True,
                       capture_output=True)
        subprocess.run([qemu_img, "compare", "-f", "raw", "-F", "qcow2", str(raw),
                        str(tmp_path / image)], check=True, capture_output=True)
    again = qcow2.write_qcow2(second, tmp_path / "3.qcow2", cache=tmp_path / "empty", work=work)
    assert again.compressed == 4 and again.sha256 == warm.sha256
