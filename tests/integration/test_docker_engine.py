"""The Docker Engine answers through the docker SDK and through testcontainers.

No registry is reachable here: the container runs the Debian base that the
builder imports from its own mmdebstrap tarball (cached in /var/cache/arkbox).
"""

from __future__ import annotations

import os

import docker
import pytest
from testcontainers.core.container import DockerContainer

from builder.pipeline.cache import cache_dir_from_env
from builder.pipeline.service_images import BaseSpec, build_base_image

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
