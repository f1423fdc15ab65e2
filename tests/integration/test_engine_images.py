"""Step `engine` against a real Docker Engine: a baked tarball is loaded and checked by ID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from firstboot.core.config import DEFAULT_CONFIG_PATH, load_config
from firstboot.core.context import FirstbootContext, Paths
from firstboot.steps import engine

pytestmark = pytest.mark.integration


def docker(*args: str, input_bytes: bytes | None = None) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, input=input_bytes,
                            timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip()


@pytest.fixture
def baked(docker_engine: None, tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """A tiny image saved as /usr/share/arkbox/images/NAME.tar below a temp root, listed in
    its build-manifest.json, and removed from the engine: as on a freshly flashed disk."""
    tag = f"arkbox-test/engine-step:{uuid.uuid4().hex[:8]}"
    files = tmp_path / "files"
    files.mkdir()
    (files / "hello").write_text("hello\n")
    tarred = subprocess.run(["tar", "-C", str(files), "-cf", "-", "hello"], capture_output=True,
                            check=True).stdout
    image_id = docker("import", "-", tag, input_bytes=tarred)
    root = tmp_path / "root"
    images = root / "usr/share/arkbox/images"
    images.mkdir(parents=True)
    docker("save", "--output", str(images / "engine-step.tar"), tag)
    (root / "usr/share/arkbox/build-manifest.json").write_text(json.dumps({"service_images": [
        {"name": "engine-step", "tag": tag, "id": image_id, "size": 1}]}))
    docker("rmi", tag)
    try:
        yield root, tag, image_id
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_engine_step_loads_and_verifies_baked_images(baked: tuple[Path, str, str]) -> None:
    root, tag, image_id = baked
    ctx = FirstbootContext(config=load_config(DEFAULT_CONFIG_PATH), paths=Paths(root))
    assert engine.verify(ctx) == f"image engine-step ({tag}) is not in the engine"
    outcome = engine.run(ctx)
    assert outcome.changed and outcome.summary == "loaded engine-step · 1/1 images verified"
    assert docker("image", "inspect", "--format", "{{.Id}}", tag) == image_id
    assert engine.verify(ctx) is None
    assert not engine.run(ctx).changed


def test_the_step_waits_for_the_boot_time_load_and_finds_it_done(
        baked: tuple[Path, str, str]) -> None:
    """arkbox-images.service (`arkbox-installer load-images`) holds the lock while it loads;
    the step waits for it, then has nothing left to load."""
    root, tag, image_id = baked
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    holder = subprocess.Popen([sys.executable, "-c", LOAD_SLOWLY, str(root)], env=env)
    try:
        deadline = time.monotonic() + 30
        while not (root / "var/lib/arkbox/images.lock").exists():
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.05)
        ctx = FirstbootContext(config=load_config(DEFAULT_CONFIG_PATH), paths=Paths(root))
        started = time.monotonic()
        outcome = engine.run(ctx)
        waited = time.monotonic() - started
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
    # The other process loaded the image; the step found it there.
    assert outcome.summary == "1/1 images verified, none to load", outcome.summary
    assert waited > 1.0  # it waited for the lock rather than loading beside the other
    assert docker("image", "inspect", "--format", "{{.Id}}", tag) == image_id


# The boot-time loader, slowed down: it holds the lock, waits, then loads the tarball.
LOAD_SLOWLY = """
import subprocess, sys, time
from pathlib import Path
from firstboot.core.context import Paths
from firstboot.containers import image_load

paths = Paths(Path(sys.argv[1]))
with image_load.load_lock(paths):
    time.sleep(2)
    tarball = paths.baked_images / "engine-step.tar"
    subprocess.run(["docker", "load", "--input", str(tarball)], check=True)
"""
