from pathlib import Path

from builder.pipeline.cache import digest_tree, inputs_key, lookup


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
