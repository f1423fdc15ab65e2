"""The engine's data root for the disk image: how the loader runs, and the disk's view of
the tree (data root in, image tarballs out) beside the tree, which stays as it was."""

from __future__ import annotations

import subprocess
from pathlib import Path

from builder.pipeline import engine_data
from builder.pipeline.assemble import IMAGES_DIR


def _tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / IMAGES_DIR).mkdir(parents=True)
    (tree / IMAGES_DIR / "images.tar").write_bytes(b"t" * 1000)
    (tree / "usr/share/arkbox/build-manifest.json").write_text("{}")
    (tree / "var/lib/docker").mkdir(parents=True)  # trixie's docker.io ships it
    return tree


def _data_root(tmp_path: Path) -> Path:
    root = tmp_path / "cache/data-root"
    store = root / "image/overlay2/imagedb/content/sha256"
    store.mkdir(parents=True)
    (store / "abc").write_text("{}")
    layer = root / "overlay2/l1/diff/etc"
    layer.mkdir(parents=True)
    (layer / "hostname").write_text("x")
    (root / "overlay2/l").mkdir()
    (root / "overlay2/l/SHORT").symlink_to("../l1/diff")
    return root


def _snapshot(tree: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(tree)): (p.lstat().st_mode, p.lstat().st_size)
            for p in sorted(tree.rglob("*"))}


def test_the_disk_sees_the_data_root_and_no_tarball(tmp_path: Path) -> None:
    tree, root = _tree(tmp_path), _data_root(tmp_path)
    (root / "overlay2/l1/diff/etc/hostname").chmod(0o640)
    view = engine_data.disk_view(tree, root, tmp_path / "view")
    engine = view / "var/lib/docker"
    assert (engine / "image/overlay2/imagedb/content/sha256/abc").read_text() == "{}"
    assert (engine / "overlay2/l/SHORT").is_symlink()
    assert (engine / "overlay2/l1/diff/etc/hostname").read_text() == "x"
    assert list((view / IMAGES_DIR).iterdir()) == []
    assert (view / "usr/share/arkbox/build-manifest.json").exists()
    # Same file system: hard links into the cache and the tree, nothing copied.
    placed = engine / "overlay2/l1/diff/etc/hostname"
    assert placed.stat().st_ino == (root / "overlay2/l1/diff/etc/hostname").stat().st_ino
    assert placed.stat().st_mode & 0o777 == 0o640
    manifest = "usr/share/arkbox/build-manifest.json"
    assert (view / manifest).stat().st_ino == (tree / manifest).stat().st_ino


def test_the_tree_is_left_as_it_was_for_the_tarball(tmp_path: Path) -> None:
    tree, root = _tree(tmp_path), _data_root(tmp_path)
    before = _snapshot(tree)
    engine_data.disk_view(tree, root, tmp_path / "view")
    assert _snapshot(tree) == before
    assert (tree / IMAGES_DIR / "images.tar").stat().st_size == 1000


def test_without_a_data_root_the_disk_reads_the_tree_itself(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    before = _snapshot(tree)
    assert engine_data.disk_view(tree, None, tmp_path / "view") == tree
    assert _snapshot(tree) == before
    assert not (tmp_path / "view").exists()


def test_the_loader_runs_without_privileged_or_network_and_mounts_read_only(
        tmp_path: Path) -> None:
    argv = engine_data.loader_argv("arkbox/engine-loader:k", "loader-1", tmp_path / "d",
                                   tmp_path / "images.tar")
    assert "--privileged" not in argv
    assert argv[argv.index("--network") + 1] == "none"
    assert f"{tmp_path / 'images.tar'}:/images.tar:ro" in argv
    assert f"{tmp_path / 'd'}:/data" in argv
    assert argv[argv.index("--name") + 1] == "loader-1"  # removed by name on a timeout


def test_the_load_script_is_valid_sh_and_stops_its_engine() -> None:
    checked = subprocess.run(["sh", "-n"], input=engine_data.LOAD_SCRIPT, text=True,
                             capture_output=True, timeout=10)
    assert checked.returncode == 0, checked.stderr
    assert "--data-root /data" in engine_data.LOAD_SCRIPT
    assert "load --input /images.tar" in engine_data.LOAD_SCRIPT
    assert 'kill -TERM "$pid"' in engine_data.LOAD_SCRIPT  # a clean shutdown flushes its dbs


def test_an_image_is_found_by_its_id_in_the_store(tmp_path: Path) -> None:
    root = _data_root(tmp_path)
    assert engine_data.image_config(root, "sha256:abc").is_file()
    assert not engine_data.image_config(root, "sha256:def").exists()



def _cache_entry(cache: Path, key: str, image_ids: list[str], *, complete: bool = True) -> Path:
    """An engine-data cache entry as the build leaves it, holding `image_ids`."""
    root = cache / engine_data.STAGE / key / engine_data.DATA_ROOT_NAME
    for image_id in image_ids:
        config = engine_data.image_config(root, image_id)
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text("{}")
    (root / "overlay2").mkdir(parents=True, exist_ok=True)
    if complete:
        (root.parent / "complete").write_text("")
    return root


def test_the_rig_finds_the_data_root_holding_every_image_of_its_build(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    older = _cache_entry(cache, "k1", ["sha256:aa", "sha256:bb"])
    _cache_entry(cache, "k2", ["sha256:aa"])
    _cache_entry(cache, "k3", ["sha256:aa", "sha256:bb", "sha256:cc"], complete=False)
    assert engine_data.cached_data_root(cache, ["sha256:aa", "sha256:bb"]) == older
    # One image the cache lacks (or only an incomplete entry holds): no data root.
    assert engine_data.cached_data_root(cache, ["sha256:aa", "sha256:cc"]) is None
    assert engine_data.cached_data_root(cache, []) is None
    assert engine_data.cached_data_root(tmp_path / "no-cache", ["sha256:aa"]) is None


def test_placing_the_data_root_links_the_layers_and_copies_the_rest(tmp_path: Path) -> None:
    root = _data_root(tmp_path)
    engine = tmp_path / "volume"
    engine.mkdir()
    engine_data.place_data_root(root, engine, hint="h", link_parts=("overlay2",))
    layer, store = "overlay2/l1/diff/etc/hostname", "image/overlay2/imagedb/content/sha256/abc"
    assert (engine / layer).stat().st_ino == (root / layer).stat().st_ino
    assert (engine / store).read_text() == "{}"
    assert (engine / store).stat().st_ino != (root / store).stat().st_ino
    assert (engine / "overlay2/l/SHORT").readlink() == Path("../l1/diff")
