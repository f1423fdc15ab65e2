"""A rig box's engine volume is filled from the build cache before the box starts, through
the real Docker Engine: the image's label names the service images, the cache entry holding
them is placed in a directory beside the cache (layers hard-linked) that the volume is
bound to; anything short of that makes no volume (the box gets an empty one, and first boot
loads images.tar)."""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import NotFound

from builder.pipeline import engine_data
from builder.pipeline.cache import cache_dir_from_env
from builder.pipeline.manifest import MANIFEST_NAME, BuildManifest, ServiceImage
from builder.pipeline.service_images import BaseSpec, build_base_image
from builder.rig.engine_preload import SERVICE_IMAGES_LABEL, engines_dir, preload_engine
from builder.rig.parts import image_from_rootfs_tar
from builder.rig.removal import remove_volume

pytestmark = [pytest.mark.integration]

IMAGE_ID = "sha256:" + "c" * 64
LAYER_FILE = "overlay2/layer1/diff/etc/hostname"
LABELS = {"arkbox.test": "engine-preload"}


def debian_image() -> str:
    return build_base_image(BaseSpec(), cache_dir_from_env(), log_line=print).tag


@pytest.fixture
def client(docker_engine: None) -> Iterator[docker.DockerClient]:
    engine = docker.from_env()
    yield engine
    engine.close()


@pytest.fixture
def labelled_image(client: docker.DockerClient, tmp_path: Path) -> Iterator[str]:
    """A tiny root fs tar with a build manifest next to it naming one service image."""
    out = tmp_path / "out"
    out.mkdir()
    tar = out / "box-rootfs.tar"
    with tarfile.open(tar, "w") as archive:
        info = tarfile.TarInfo("marker")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"m"))
    manifest = BuildManifest(
        arkbox_version="0", name="box", role="appliance", config_file="c",
        config_sha256="0" * 64, suite="trixie", source_date_epoch=0, stages=[],
        packages={}, outputs={},
        service_images=[ServiceImage(name="proxy", tag="arkbox/proxy:k", id=IMAGE_ID, size=1)])
    (out / MANIFEST_NAME).write_text(manifest.model_dump_json())
    repository = f"arkbox/test-preload-{os.getpid()}"
    tag = image_from_rootfs_tar(client, tar, repository)
    yield tag
    for image in client.images.list(name=repository):
        client.images.remove(image.id, force=True)


@pytest.fixture
def volume(client: docker.DockerClient) -> Iterator[str]:
    """A volume name no one uses; whatever the test made of it goes afterwards."""
    name = f"arkbox-test-preload-{os.getpid()}"
    yield name
    with contextlib.suppress(NotFound):
        remove_volume(client.volumes.get(name))


def _cache_with_data_root(cache: Path, image_id: str) -> Path:
    root = cache / engine_data.STAGE / "key1" / engine_data.DATA_ROOT_NAME
    config = engine_data.image_config(root, image_id)
    config.parent.mkdir(parents=True)
    config.write_text("{}")
    (root / LAYER_FILE).parent.mkdir(parents=True)
    (root / LAYER_FILE).write_text("box\n")
    (root.parent / "complete").write_text("")
    return root


def test_the_volume_is_bound_to_the_builds_data_root(client: docker.DockerClient,
                                                     labelled_image: str, volume: str,
                                                     tmp_path: Path) -> None:
    assert client.images.get(labelled_image).labels[SERVICE_IMAGES_LABEL] == IMAGE_ID
    cache = tmp_path / "cache"
    root = _cache_with_data_root(cache, IMAGE_ID)
    said = preload_engine(client, volume, labelled_image, LABELS, cache)
    assert said.startswith("1 service images placed") and "(hard links)" in said, said
    assert client.volumes.get(volume).attrs["Labels"] == LABELS
    engine = engines_dir(cache) / volume
    assert (engine / LAYER_FILE).stat().st_ino == (root / LAYER_FILE).stat().st_ino
    assert engine_data.image_config(engine, IMAGE_ID).is_file()
    # What a container mounting the volume sees: the data root.
    seen = client.containers.run(debian_image(), ["cat", f"/var/lib/docker/{LAYER_FILE}"],
                                 volumes={volume: {"bind": "/var/lib/docker", "mode": "rw"}},
                                 remove=True)
    assert seen == b"box\n"
    said = preload_engine(client, volume, labelled_image, LABELS, cache)
    assert said.endswith("exists: left as it is"), said
    remove_volume(client.volumes.get(volume))
    assert not engine.exists(), "removing the volume removes its engine directory"
    assert (root / LAYER_FILE).read_text() == "box\n", "the cache keeps its layers"


def test_without_the_cache_entry_no_volume_is_made(
        client: docker.DockerClient, labelled_image: str, volume: str, tmp_path: Path) -> None:
    _cache_with_data_root(tmp_path / "cache", "sha256:" + "d" * 64)  # another build's images
    said = preload_engine(client, volume, labelled_image, LABELS, tmp_path / "cache")
    assert "first boot loads images.tar" in said, said
    with pytest.raises(NotFound):
        client.volumes.get(volume)


def test_an_engine_directory_left_by_a_killed_run_goes(
        client: docker.DockerClient, labelled_image: str, volume: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _cache_with_data_root(cache, IMAGE_ID)
    engines = engines_dir(cache)
    old, young = engines / "arkbox-test-gone-old", engines / "arkbox-test-gone-young"
    for left in (old, young):
        (left / "overlay2").mkdir(parents=True)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    preload_engine(client, volume, labelled_image, LABELS, cache)
    assert not old.exists()
    assert young.exists(), "a young one may be another run's, between mkdir and volume"
