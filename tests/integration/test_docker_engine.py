"""The Docker Engine answers through the docker SDK and through testcontainers.

No registry is reachable here: the container runs the Debian base that the
builder imports from its own mmdebstrap tarball (cached in /var/cache/arkbox).
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import docker
import pytest
from testcontainers.core.container import DockerContainer

from builder.pipeline.cache import cache_dir_from_env
from builder.pipeline.service_images import BaseSpec, build_base_image
from builder.rig.parts import image_from_rootfs_tar

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def debian_image(docker_engine: None) -> str:
    return build_base_image(BaseSpec(), cache_dir_from_env(), log_line=print).tag


def test_sdk_reaches_the_engine_and_runs_the_imported_debian(debian_image: str) -> None:
    client = docker.from_env()
    assert client.ping()
    output = client.containers.run(debian_image, ["cat", "/etc/debian_version"], remove=True)
    assert output.decode().strip().split(".")[0] in {"13", "trixie/sid"}


def test_testcontainers_runs_the_imported_debian(debian_image: str) -> None:
    assert os.environ.get("TESTCONTAINERS_RYUK_DISABLED") == "true", "scripts/test sets it"
    container = DockerContainer(debian_image).with_command(["sleep", "60"])
    with container:
        wrapped = container.get_wrapped_container()
        code, output = wrapped.exec_run(["sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME"])
        assert code == 0
        assert output.decode().strip() == "trixie"
    # The context manager removed it: nothing left behind.
    assert not docker.from_env().containers.list(all=True, filters={"id": wrapped.id})


def _tiny_rootfs(where: Path, content: bytes) -> Path:
    with tarfile.open(where, "w") as tar:
        info = tarfile.TarInfo("marker")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return where


def test_an_import_removes_the_earlier_ones_not_in_use(docker_engine: None,
                                                       tmp_path: Path) -> None:
    """Each build's root fs is imported by digest; the earlier imports go (a machine that
    builds often filled its disk with them), unless a container still uses one."""
    client = docker.from_env()
    repository = f"arkbox/test-prune-{os.getpid()}"
    tags = [image_from_rootfs_tar(client, _tiny_rootfs(tmp_path / "1.tar", b"1"), repository)]
    holder = client.containers.create(tags[0], command=["/marker"])
    try:
        tags.append(image_from_rootfs_tar(client, _tiny_rootfs(tmp_path / "2.tar", b"2"),
                                          repository))
        assert sorted(t for i in client.images.list(name=repository) for t in i.tags) == \
            sorted(tags), "the one in use is kept, the new one is there"
    finally:
        holder.remove(force=True)
    try:
        tags.append(image_from_rootfs_tar(client, _tiny_rootfs(tmp_path / "3.tar", b"3"),
                                          repository))
        assert [t for i in client.images.list(name=repository) for t in i.tags] == [tags[2]]
    finally:
        for image in client.images.list(name=repository):
            client.images.remove(image.id, force=True)
