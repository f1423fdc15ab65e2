import hashlib
import os
import threading
import time
from pathlib import Path

from builder.pipeline.cache import claim, digest_file, digest_tree, exclusive, inputs_key, lookup
from firstboot.core.errors import ArkboxError


def test_key_changes_exactly_when_inputs_change() -> None:
    base = {"suite": "trixie", "packages": ["a", "b"], "mirror": "http://m"}
    assert inputs_key(base) == inputs_key(dict(reversed(list(base.items()))))
    assert inputs_key(base) != inputs_key({**base, "packages": ["a", "b", "c"]})
    assert inputs_key(base) != inputs_key({**base, "mirror": "http://other"})


def test_miss_says_which_inputs_changed_and_hit_after_commit(tmp_path: Path) -> None:
    first = lookup(tmp_path, "rootfs", {"suite": "trixie", "packages": ["a"]})
    assert not first.hit and "no earlier build" in first.reason
    first.reset()
    first.commit()
    again = lookup(tmp_path, "rootfs", {"suite": "trixie", "packages": ["a"]})
    assert again.hit and again.reason == "cached (inputs unchanged)"
    changed = lookup(tmp_path, "rootfs", {"suite": "trixie", "packages": ["a", "b"]})
    assert not changed.hit and changed.reason == "rebuilt (changed: packages)"


def test_uncommitted_entry_is_not_a_hit(tmp_path: Path) -> None:
    entry = lookup(tmp_path, "images", {"x": 1})
    entry.reset()
    (entry.path / "half-written.tar").write_bytes(b"...")
    assert not lookup(tmp_path, "images", {"x": 1}).hit


def test_tree_digest_sees_content_names_and_modes(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    d1 = digest_tree(tmp_path)
    (tmp_path / "a").chmod(0o600)
    d2 = digest_tree(tmp_path)
    (tmp_path / "a").write_text("2")
    d3 = digest_tree(tmp_path)
    assert len({d1, d2, d3}) == 3


def test_a_second_build_of_the_same_inputs_waits_then_finds_it_complete(tmp_path: Path) -> None:
    """Two builds missing one entry at once: the second used to reset (remove) the directory
    the first was writing its root fs into."""
    inputs = {"suite": "trixie"}
    waits: list[str] = []
    seen: list[tuple[bool, str]] = []

    def second() -> None:
        with claim(tmp_path, "rootfs", inputs, waits.append) as entry:
            seen.append((entry.hit, (entry.path / "base.tar").read_text()))

    with claim(tmp_path, "rootfs", inputs) as first:
        assert not first.hit
        first.reset()
        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 10
        while not waits and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waits and "another build using the rootfs cache" in waits[0], waits
        assert not seen  # still waiting while the first writes
        (first.path / "base.tar").write_text("complete")
        first.commit()
    thread.join(timeout=10)
    assert seen == [(True, "complete")]


def test_a_lock_held_too_long_is_given_up_with_what_it_waited_for(tmp_path: Path) -> None:
    with exclusive(tmp_path / "x.lock", "the debs cache"):
        errors: list[ArkboxError] = []

        def other() -> None:
            try:
                with exclusive(tmp_path / "x.lock", "the debs cache", timeout_s=0.3):
                    pass
            except ArkboxError as err:
                errors.append(err)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=10)
    (err,) = errors
    assert "gave up after 0 s waiting for another build using the debs cache" in err.message
    assert err.hint and "--cache" in err.hint


def test_digest_of_a_sparse_file_equals_sha256_of_its_bytes(tmp_path: Path) -> None:
    # Holes are hashed from zeros in memory: leading, inner and trailing holes, data
    # across the 1 MiB block size, and files with no hole at all must all come out right.
    sparse = tmp_path / "disk.raw"
    with sparse.open("wb") as f:
        f.truncate(9 << 20)
        f.seek(3 << 20)
        f.write(os.urandom((1 << 20) + 4321))
        f.seek(7 << 20)
        f.write(b"end of data")
    dense = tmp_path / "dense.bin"
    dense.write_bytes(os.urandom(3 * 1000 * 1000))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for path in (sparse, dense, empty):
        assert digest_file(path) == hashlib.sha256(path.read_bytes()).hexdigest(), path.name
    changed = bytearray(sparse.read_bytes())
    changed[5 << 20] = 1  # one byte inside a hole
    sparse.write_bytes(bytes(changed))
    assert digest_file(sparse) == hashlib.sha256(bytes(changed)).hexdigest()
