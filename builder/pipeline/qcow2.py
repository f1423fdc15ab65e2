"""NAME.qcow2 laid out by arkbox from NAME.raw: a rebuild compresses only the clusters
that changed since the last build.

`qemu-img convert -c` compresses the whole disk on one core every time (~6 s for the
appliance's 1.7 GB of data), though a config-only change alters a few dozen of its
~850 data clusters. So each 2 MiB cluster of the raw is hashed; a cluster the last build
already stored is copied from the qcow2 the cache kept of it, and the others (at the
first build, all) are compressed by qemu-img from a sparse file holding only them, and
read back from its qcow2. The file depends only on the raw's bytes and qemu-img's zstd:
the same raw gives the same qcow2, whatever the cache held.

The layout (qcow2 version 3, as qemu's docs/interop/qcow2.txt specifies it): cluster 0
the header, 1 the L1 table, 2 the refcount table, 3 its one refcount block, then the L2
tables, the clusters stored whole (qemu-img keeps a cluster uncompressed when zstd does
not make it smaller), and last the compressed clusters, packed byte after byte.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from builder.pipeline.cache import exclusive
from builder.pipeline.hashed_output import HashingWriter
from firstboot.core.errors import ArkboxError
from firstboot.core.execute import run

CLUSTER_BITS = 21
CLUSTER = 1 << CLUSTER_BITS
SECTOR = 512
L2_ENTRIES = CLUSTER // 8
REFCOUNTS_PER_BLOCK = CLUSTER // 2  # refcount_order 4: 16-bit refcounts
MAGIC = 0x514649FB  # "QFI\xfb"
HEADER_LENGTH = 112  # the version 3 header with its compression type, padded to 8
INCOMPATIBLE_COMPRESSION_TYPE = 1 << 3
ZSTD = 1
COPIED = 1 << 63  # refcount exactly 1
COMPRESSED = 1 << 62
ZERO_FLAG = 1
STANDARD_OFFSET = ((1 << 56) - 1) & ~((1 << 9) - 1)
CSIZE_SHIFT = 62 - (CLUSTER_BITS - 8)  # a compressed entry: offset below, sectors above
CSIZE_MASK = (1 << (62 - CSIZE_SHIFT)) - 1
L1_AT, REFTABLE_AT, REFBLOCK_AT, L2_AT = (n * CLUSTER for n in range(1, 5))
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CONVERT_TIMEOUT_S = 900
_ZEROS = bytes(CLUSTER)
_INDEX = "index.json"


@dataclass(frozen=True)
class Stored:
    """Where one guest cluster's data lies in a qcow2 file."""

    offset: int
    length: int  # of the zstd frame; CLUSTER when stored whole
    compressed: bool


@dataclass(frozen=True)
class Piece:
    """A guest cluster to write: its data is `stored` in the file `source`."""

    guest: int
    source: Path
    stored: Stored


# --- pure: the entries, the header, where each piece goes ------------------------------


def compressed_entry(offset: int, length: int) -> int:
    """An L2 entry for compressed data: its offset, and how many 512-byte sectors beyond
    the first it touches."""
    extra = (offset + length - 1) // SECTOR - offset // SECTOR
    return COMPRESSED | extra << CSIZE_SHIFT | offset


def compressed_span(entry: int) -> tuple[int, int]:
    """Where an entry's compressed data may lie: offset and length to the sector's end."""
    offset = entry & ((1 << CSIZE_SHIFT) - 1)
    sectors = (entry >> CSIZE_SHIFT & CSIZE_MASK) + 1
    return offset, (offset // SECTOR + sectors) * SECTOR - offset


def convert_argv(raw: Path, qcow2: Path) -> tuple[str, ...]:
    # zstd, not zlib: 10 s instead of 49 s for the appliance's 4 GiB, and 3 % smaller
    # (docs/build.md). Readers need qemu 5.1 (2020) or later; NAME.raw is there for the rest.
    # 2 MiB clusters, not 64 KiB: each compressed cluster costs a write and a table entry,
    # so fewer, larger ones convert ~1.5x faster and 8 % smaller (docs/build.md).
    # No -W (out-of-order writes): the file's bytes would vary from build to build.
    return ("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", "-o",
            f"compression_type=zstd,cluster_size={CLUSTER >> 20}M", str(raw), str(qcow2))


def header(virtual_size: int, l1_entries: int) -> bytes:
    fields = struct.pack(
        ">IIQIIQIIQQIIQQQQII", MAGIC, 3, 0, 0, CLUSTER_BITS, virtual_size, 0, l1_entries,
        L1_AT, REFTABLE_AT, 1, 0, 0, INCOMPATIBLE_COMPRESSION_TYPE, 0, 0, 4, HEADER_LENGTH)
    return fields + bytes([ZSTD]) + bytes(7) + bytes(8)  # then no header extension


def zstd_frame_length(data: bytes) -> int:
    """The length of the zstd frame that starts `data` (RFC 8878, 3.1.1): a qcow2 entry
    says only which sectors compressed data touches; the rest is the next cluster's."""
    if data[:4] != ZSTD_MAGIC:
        raise ArkboxError("a compressed qcow2 cluster is not a zstd frame")
    descriptor = data[4]
    single = descriptor >> 5 & 1
    at = 5 + (1 - single) + (0, 1, 2, 4)[descriptor & 3] + (single, 2, 4, 8)[descriptor >> 6]
    while True:
        block = int.from_bytes(data[at:at + 3], "little")
        kind = block >> 1 & 3
        if kind == 3 or at + 3 > len(data):
            raise ArkboxError("a compressed qcow2 cluster holds a damaged zstd frame")
        at += 3 + (1 if kind == 1 else block >> 3)
        if block & 1:
            return at + (4 if descriptor >> 2 & 1 else 0)


@dataclass(frozen=True)
class Layout:
    """Where everything goes in the new file, and each host cluster's refcount."""

    l2_tables: int
    placed: dict[int, Stored]  # guest cluster -> where it goes
    size: int  # of the file

    def refcounts(self) -> dict[int, int]:
        counts = dict.fromkeys(range(4 + self.l2_tables), 1)  # header and tables
        for stored in self.placed.values():
            start = stored.offset - stored.offset % SECTOR
            end = -(-(stored.offset + stored.length) // SECTOR) * SECTOR
            for host in range(start // CLUSTER, (end - 1) // CLUSTER + 1):
                counts[host] = counts.get(host, 0) + 1
        return counts


def plan(virtual_size: int, pieces: list[Piece]) -> Layout:
    """Whole clusters first, cluster-aligned, then the compressed ones back to back; both
    in guest order, so the same pieces always give the same file."""
    l2_tables = max(1, math.ceil(math.ceil(virtual_size / CLUSTER) / L2_ENTRIES))
    at = (4 + l2_tables) * CLUSTER
    placed: dict[int, Stored] = {}
    for piece in sorted(pieces, key=lambda p: (p.stored.compressed, p.guest)):
        placed[piece.guest] = Stored(at, piece.stored.length, piece.stored.compressed)
        at += piece.stored.length
    size = -(-at // SECTOR) * SECTOR
    if size > REFCOUNTS_PER_BLOCK * CLUSTER:
        raise ArkboxError("the qcow2 would need more than one refcount block (2 TiB)")
    return Layout(l2_tables, placed, size)


def tables(virtual_size: int, layout: Layout) -> bytes:
    """Header, L1, refcount table and block, L2 tables: the first clusters of the file."""
    l1 = [COPIED | L2_AT + n * CLUSTER for n in range(layout.l2_tables)]
    l2 = [0] * (layout.l2_tables * L2_ENTRIES)
    for guest, stored in layout.placed.items():
        l2[guest] = (compressed_entry(stored.offset, stored.length) if stored.compressed
                     else COPIED | stored.offset)
    refblock = [0] * REFCOUNTS_PER_BLOCK
    for host, count in layout.refcounts().items():
        refblock[host] = count
    return b"".join((
        header(virtual_size, layout.l2_tables).ljust(CLUSTER, b"\0"),
        struct.pack(f">{len(l1)}Q", *l1).ljust(CLUSTER, b"\0"),
        struct.pack(">Q", REFBLOCK_AT).ljust(CLUSTER, b"\0"),
        struct.pack(f">{REFCOUNTS_PER_BLOCK}H", *refblock),
        struct.pack(f">{len(l2)}Q", *l2),
    ))


# --- reading a qcow2 and the raw ------------------------------------------------------


def stored_clusters(path: Path) -> dict[int, Stored]:
    """Guest cluster -> where its data is, for a qcow2 in this module's format (2 MiB
    clusters, zstd, no backing file), e.g. one qemu-img wrote."""
    with path.open("rb") as f:
        fields = struct.unpack(">IIQIIQIIQ", f.read(48))
        magic, cluster_bits, l1_entries, l1_at = fields[0], fields[4], fields[7], fields[8]
        if magic != MAGIC or cluster_bits != CLUSTER_BITS:
            raise ArkboxError(f"{path} is not a qcow2 with {CLUSTER >> 20} MiB clusters")
        f.seek(l1_at)
        found: dict[int, Stored] = {}
        for n, l1 in enumerate(struct.unpack(f">{l1_entries}Q", f.read(8 * l1_entries))):
            if l1 & STANDARD_OFFSET:
                f.seek(l1 & STANDARD_OFFSET)
                entries = struct.unpack(f">{L2_ENTRIES}Q", f.read(CLUSTER))
                found |= {n * L2_ENTRIES + i: _stored(f, entry)
                          for i, entry in enumerate(entries)
                          if entry & COMPRESSED or entry & STANDARD_OFFSET}
    return found


def _stored(f: BinaryIO, entry: int) -> Stored:
    if not entry & COMPRESSED:
        return Stored(entry & STANDARD_OFFSET, CLUSTER, False)
    offset, span = compressed_span(entry)
    f.seek(offset)
    return Stored(offset, zstd_frame_length(f.read(span)), True)


def data_clusters(raw: Path, only: set[int] | None = None) -> Iterator[tuple[int, bytes]]:
    """(guest cluster, its bytes) for each cluster of the raw that is not all zeros (or of
    `only` those); the sparse file's holes are skipped without being read."""
    with raw.open("rb") as f:
        fd, size = f.fileno(), os.fstat(f.fileno()).st_size
        done = at = 0  # clusters before `done` are dealt with
        while at < size:
            try:
                start = os.lseek(fd, at, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole from here to the end
                return
            at = os.lseek(fd, start, os.SEEK_HOLE)
            for n in range(max(done, start // CLUSTER), -(-at // CLUSTER)):
                if only is None or n in only:
                    data = os.pread(fd, CLUSTER, n * CLUSTER).ljust(CLUSTER, b"\0")
                    if data != _ZEROS:
                        yield n, data
            done = max(done, -(-at // CLUSTER))


# --- the cache: the last qcow2 written, and which raw cluster is where in it ------------


@dataclass(frozen=True)
class Kept:
    pack: Path  # the last qcow2 written
    clusters: dict[str, Stored]  # sha256 of a raw cluster -> where it is in `pack`


def load_kept(cache: Path, qemu_img: str) -> Kept:
    """What the cache holds; nothing when it was written by another qemu-img (its zstd
    may differ) or does not match its pack."""
    try:
        index = json.loads((cache / _INDEX).read_text())
        pack = cache / index["pack"]
        if index["qemu_img"] != qemu_img or pack.stat().st_size != index["size"]:
            return Kept(pack, {})
        return Kept(pack, {digest: Stored(*where) for digest, where in index["clusters"].items()})
    except (OSError, ValueError, KeyError, TypeError):
        return Kept(cache / "none", {})


def save_kept(cache: Path, pack: Path, qemu_img: str, size: int,
              clusters: Mapping[str, Stored]) -> None:
    """Make `pack` (in `cache`, complete) the cache's, then its index; the older pack goes."""
    index = {"qemu_img": qemu_img, "pack": pack.name, "size": size,
             "clusters": {d: [s.offset, s.length, s.compressed] for d, s in clusters.items()}}
    partial = cache / f"{_INDEX}.partial"
    partial.write_text(json.dumps(index, sort_keys=True))
    partial.replace(cache / _INDEX)
    for old in cache.glob("pack-*.qcow2"):
        if old != pack:
            old.unlink()


# --- writing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    sha256: str  # of the qcow2, taken while it was written
    compressed: int  # clusters compressed by this build
    clusters: int  # clusters holding data


def write_qcow2(raw: Path, dest: Path, *, cache: Path, work: Path,
                on_line: Callable[[str], None] | None = None) -> Written:
    """Write `dest` from `raw`, compressing only the clusters the cache lacks; the cache
    then holds this file."""
    qemu_img = run(("qemu-img", "--version"), timeout=60).stdout.splitlines()[0]
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o700)  # the pack is the box's disk, which out/ keeps private too
    with exclusive(cache / "lock", "the qcow2 cluster cache", on_line):
        kept = load_kept(cache, qemu_img)
        digests = {n: hashlib.sha256(data).hexdigest() for n, data in data_clusters(raw)}
        fresh = {n for n, digest in digests.items() if digest not in kept.clusters}
        pieces = [Piece(n, kept.pack, kept.clusters[d]) for n, d in digests.items()
                  if n not in fresh]
        pieces += compress(raw, fresh, work, on_line, every=len(fresh) == len(digests))
        size = raw.stat().st_size
        layout = plan(size, pieces)
        pack = cache / "pack.partial"
        sha256 = _write(dest, pack, tables(size, layout), layout, pieces)
        named = pack.rename(cache / f"pack-{sha256[:20]}.qcow2")
        save_kept(cache, named, qemu_img, layout.size,
                  {digests[n]: stored for n, stored in layout.placed.items()})
    return Written(sha256, len(fresh), len(digests))


def compress(raw: Path, fresh: set[int], work: Path, on_line: Callable[[str], None] | None,
             *, every: bool) -> list[Piece]:
    """The `fresh` clusters of the raw compressed by qemu-img (from a sparse copy holding
    only them, unless they are `every` data cluster) and found in its qcow2."""
    if not fresh:
        return []
    source = raw
    if not every:
        source = work / "fresh.raw"
        with source.open("wb") as f:
            f.truncate(raw.stat().st_size)
            for n, data in data_clusters(raw, only=fresh):
                f.seek(n * CLUSTER)
                f.write(data)
    converted = work / "fresh.qcow2"
    run(convert_argv(source, converted), on_line=on_line, timeout=CONVERT_TIMEOUT_S)
    found = stored_clusters(converted)
    missing = sorted(fresh - set(found))
    if missing:
        raise ArkboxError(f"qemu-img left out cluster(s) {missing[:5]} of {raw}")
    return [Piece(n, converted, found[n]) for n in sorted(fresh)]


def _write(dest: Path, pack: Path, head: bytes, layout: Layout, pieces: list[Piece]) -> str:
    """The file: `head` (header and tables), then each piece where the layout puts it;
    written to `dest` and, the same bytes, to the cache's `pack`, hashed on the way."""
    sources: dict[Path, BinaryIO] = {}
    with dest.open("wb") as out, pack.open("wb") as copy:
        sink = HashingWriter(out)
        try:
            for chunk in _chunks(head, layout, pieces, sources):
                sink.write(chunk)
                copy.write(chunk)
        finally:
            for handle in sources.values():
                handle.close()
    return sink.sha256.hexdigest()


def _chunks(head: bytes, layout: Layout, pieces: list[Piece],
            sources: dict[Path, BinaryIO]) -> Iterator[bytes]:
    yield head
    at = len(head)
    by_guest = {piece.guest: piece for piece in pieces}
    for guest, placed in sorted(layout.placed.items(), key=lambda item: item[1].offset):
        piece = by_guest[guest]
        if piece.source not in sources:
            sources[piece.source] = piece.source.open("rb")
        source = sources[piece.source]
        source.seek(piece.stored.offset)
        data = source.read(piece.stored.length)
        if len(data) != piece.stored.length or placed.offset != at:
            raise ArkboxError(f"{piece.source} does not hold guest cluster {guest} where "
                              "its index says")
        yield data
        at += len(data)
    yield bytes(layout.size - at)
