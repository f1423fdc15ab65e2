"""Step `engine`: which tarballs to load, and how images are checked (a fake engine here; a
real one in tests/integration/test_engine_images.py)."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from firstboot.containers import image_load
from firstboot.containers.images import BakedImage
from firstboot.core.config import DEFAULT_CONFIG_PATH, Appliance, load_config
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.execute import Completed
from firstboot.core.step import StepFailed
from firstboot.steps import engine

PROXY = BakedImage("proxy", "arkbox/proxy:aaaa", "sha256:" + "a" * 64)
WIKI = BakedImage("wiki", "arkbox/wiki:bbbb", "sha256:" + "b" * 64)


@pytest.fixture(scope="module")
def config() -> Appliance:
    return load_config(DEFAULT_CONFIG_PATH)


def save_tar(path: Path, images: list[BakedImage], oci: bool = True) -> Path:
    """A tarball shaped like `docker save` output (only its manifest.json matters here)."""
    manifest = [{"Config": (f"blobs/sha256/{i.image_id[7:]}" if oci else f"{i.image_id[7:]}.json"),
                 "RepoTags": [i.tag], "Layers": []} for i in images]
    data = json.dumps(manifest).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def write_manifest(root: Path, images: list[BakedImage]) -> None:
    path = root / "usr/share/arkbox/build-manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"service_images": [
        {"name": i.recipe, "tag": i.tag, "id": i.image_id, "size": 1} for i in images]}))


@dataclass
class FakeImage:
    id: str
    tags: list[str]

    def tag(self, repository: str, tag: str) -> None:
        self.tags.append(f"{repository}:{tag}")


@dataclass
class FakeImages:
    engine: FakeEngine

    def list(self) -> list[FakeImage]:
        return list(self.engine.images.values())

    def get(self, image_id: str) -> FakeImage:
        return self.engine.images[image_id]


@dataclass
class FakeEngine:
    images: dict[str, FakeImage] = field(default_factory=dict)
    answers: bool = True

    def ping(self) -> bool:
        if not self.answers:
            raise ConnectionError("no engine")
        return True


class EngineClient:
    """What ctx.docker returns: .ping() and .images (list/get)."""

    def __init__(self, fake: FakeEngine) -> None:
        self.fake = fake
        self.images = FakeImages(fake)

    def ping(self) -> bool:
        return self.fake.ping()


def ctx_with(config: Appliance, root: Path, fake: FakeEngine,
             loads: dict[str, list[BakedImage]]) -> tuple[FirstbootContext, list[str]]:
    """A context whose `docker load` puts the tarball's images into the fake engine."""
    loaded: list[str] = []

    def run(argv: tuple[str, ...], **kwargs: Any) -> Completed:
        assert argv[:3] == ("docker", "load", "--input")
        name = Path(argv[3]).name
        loaded.append(name)
        for image in loads[name]:
            fake.images[image.image_id] = FakeImage(image.image_id, [image.tag])
        return Completed(tuple(argv), 0)

    ctx = FirstbootContext(config=config, paths=Paths(root), run=run)
    ctx._docker = EngineClient(fake)  # type: ignore[assignment]
    return ctx, loaded


def test_load_argv() -> None:
    assert image_load.load_argv(Path("/usr/share/arkbox/images/all.tar")) == (
        "docker", "load", "--input", "/usr/share/arkbox/images/all.tar")


@pytest.mark.parametrize("oci", [True, False])
def test_tarball_images_reads_both_save_formats(tmp_path: Path, oci: bool) -> None:
    tar = save_tar(tmp_path / "all.tar", [PROXY, WIKI], oci=oci)
    held = image_load.tarball_images(tar)
    assert held == {PROXY.image_id: [PROXY.tag], WIKI.image_id: [WIKI.tag]}


def test_not_a_tarball_is_a_clear_failure(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_text("not a tar")
    with pytest.raises(StepFailed, match="not a readable image tarball"):
        image_load.tarball_images(bad)


def test_missing_build_manifest_fails_the_step(config: Appliance, tmp_path: Path) -> None:
    ctx, _ = ctx_with(config, tmp_path, FakeEngine(), {})
    with pytest.raises(StepFailed, match=r"build manifest .* is missing") as failed:
        engine.run(ctx)
    assert "arkbox build" in (failed.value.hint or "")


def test_loads_only_tarballs_holding_missing_images(config: Appliance, tmp_path: Path) -> None:
    images_dir = tmp_path / "usr/share/arkbox/images"
    images_dir.mkdir(parents=True)
    save_tar(images_dir / "proxy.tar", [PROXY])
    save_tar(images_dir / "wiki.tar", [WIKI])
    write_manifest(tmp_path, [PROXY, WIKI])
    fake = FakeEngine({PROXY.image_id: FakeImage(PROXY.image_id, [PROXY.tag])})
    ctx, loaded = ctx_with(config, tmp_path, fake, {"proxy.tar": [PROXY], "wiki.tar": [WIKI]})
    outcome = engine.run(ctx)
    assert loaded == ["wiki.tar"]
    assert outcome.changed and outcome.summary == "loaded wiki · 2/2 images verified"
    assert outcome.details == {"images": {"proxy": PROXY.image_id, "wiki": WIKI.image_id}}
    assert engine.verify(ctx) is None
    again = engine.run(ctx)
    assert not again.changed and loaded == ["wiki.tar"]
    assert again.summary == "2/2 images verified, none to load"


def test_a_lost_tag_is_put_back(config: Appliance, tmp_path: Path) -> None:
    write_manifest(tmp_path, [PROXY])
    fake = FakeEngine({PROXY.image_id: FakeImage(PROXY.image_id, [])})
    ctx, loaded = ctx_with(config, tmp_path, fake, {})
    assert engine.verify(ctx) == f"image proxy ({PROXY.tag}) is not in the engine"
    outcome = engine.run(ctx)
    assert outcome.summary.startswith("re-tagged proxy") and loaded == []
    assert fake.images[PROXY.image_id].tags == [PROXY.tag]


def test_a_tarball_disagreeing_with_the_manifest_stops_before_loading(
        config: Appliance, tmp_path: Path) -> None:
    images_dir = tmp_path / "usr/share/arkbox/images"
    images_dir.mkdir(parents=True)
    other = BakedImage("proxy", PROXY.tag, "sha256:" + "c" * 64)
    save_tar(images_dir / "proxy.tar", [other])
    write_manifest(tmp_path, [PROXY])
    ctx, loaded = ctx_with(config, tmp_path, FakeEngine(), {})
    with pytest.raises(StepFailed, match=r"proxy\.tar holds arkbox/proxy:aaaa as sha256:cccc"):
        engine.run(ctx)
    assert loaded == []


def test_an_image_no_tarball_holds_is_named(config: Appliance, tmp_path: Path) -> None:
    images_dir = tmp_path / "usr/share/arkbox/images"
    images_dir.mkdir(parents=True)
    save_tar(images_dir / "proxy.tar", [PROXY])
    write_manifest(tmp_path, [PROXY, WIKI])
    ctx, loaded = ctx_with(config, tmp_path, FakeEngine(), {})
    with pytest.raises(StepFailed, match=r"no tarball in .* holds wiki \(arkbox/wiki:bbbb\)"):
        engine.run(ctx)
    assert loaded == []


def test_a_tag_on_another_image_is_a_mismatch(config: Appliance, tmp_path: Path) -> None:
    write_manifest(tmp_path, [PROXY])
    fake = FakeEngine({PROXY.image_id: FakeImage(PROXY.image_id, []),
                       "sha256:" + "d" * 64: FakeImage("sha256:" + "d" * 64, [PROXY.tag])})
    ctx, _ = ctx_with(config, tmp_path, fake, {})
    assert engine.verify(ctx) == (f"image {PROXY.tag} is sha256:dddddddddddd in the engine, "
                                  "but build-manifest.json says sha256:aaaaaaaaaaaa")


def test_an_engine_that_never_answers_fails_with_a_hint(config: Appliance, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_load, "POLL_S", 0.01)
    ctx, _ = ctx_with(config, tmp_path, FakeEngine(answers=False), {})
    gave_up = r"gave up waiting for the container engine to answer after 0.05 s: ConnectionError"
    with pytest.raises(StepFailed, match=gave_up) as failed:
        image_load.wait_for_engine(ctx, 0.05)
    assert "journalctl -u docker" in (failed.value.hint or "")
