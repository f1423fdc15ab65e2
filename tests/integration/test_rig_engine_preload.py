"""A rig box's engine volume is filled from the build cache before the box starts, through
the real Docker Engine: the image's label names the service images, the cache entry holding
them is placed in the volume (layers hard-linked), and anything short of that leaves the
volume empty for first boot to load images.tar."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from builder.pipeline import engine_data
from builder.pipeline.manifest import MANIFEST_NAME, BuildManifest, ServiceImage
from builder.rig.engine_preload import SERVICE_IMAGES_LABEL, preload_engine
from builder.rig.parts import image_from_rootfs_tar

pytestmark = [pytest.mark.integration]

IMAGE_ID = "sha256:" + "c" * 64
LAYER_FILE = "overlay2/layer1/diff/etc/hostname"


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
    name = f"arkbox-test-preload-{os.getpid()}"
    client.volumes.create(name)
    yield name
    client.volumes.get(name).remove(force=True)


def _cache_with_data_root(cache: Path, image_id: str) -> Path:
    root = cache / engine_data.STAGE / "key1" / engine_data.DATA_ROOT_NAME
    config = engine_data.image_config(root, image_id)
    config.parent.mkdir(parents=True)
    config.write_text("{}")
    (root / LAYER_FILE).parent.mkdir(parents=True)
    (root / LAYER_FILE).write_text("box\n")
    (root.parent / "complete").write_text("")
    return root


def test_the_volume_gets_the_builds_data_root(client: docker.DockerClient, labelled_image: str,
                                              volume: str, tmp_path: Path) -> None:
    assert client.images.get(labelled_image).labels[SERVICE_IMAGES_LABEL] == IMAGE_ID
    root = _cache_with_data_root(tmp_path / "cache", IMAGE_ID)
    said = preload_engine(client, volume, labelled_image, tmp_path / "cache")
    assert said.startswith("1 service images placed"), said
    mountpoint = Path(client.volumes.get(volume).attrs["Mountpoint"])
    assert sorted(p.name for p in mountpoint.iterdir()) == ["image", "overlay2"]
    placed = mountpoint / LAYER_FILE
    assert placed.read_text() == "box\n"
    if engine_data.can_link(root, mountpoint):  # one file system and mount: a hard link
        assert placed.stat().st_ino == (root / LAYER_FILE).stat().st_ino
    assert engine_data.image_config(mountpoint, IMAGE_ID).is_file()
    # A volume that holds something already is left as it is.
    said = preload_engine(client, volume, labelled_image, tmp_path / "cache")
    assert said.endswith("is not empty: left as it is"), said


def test_without_the_cache_entry_the_volume_stays_empty(
        client: docker.DockerClient, labelled_image: str, volume: str, tmp_path: Path) -> None:
    _cache_with_data_root(tmp_path / "cache", "sha256:" + "d" * 64)  # another build's images
    said = preload_engine(client, volume, labelled_image, tmp_path / "cache")
    assert "first boot loads images.tar" in said, said
    mountpoint = Path(client.volumes.get(volume).attrs["Mountpoint"])
    assert list(mountpoint.iterdir()) == []
