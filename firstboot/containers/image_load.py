"""The service images the build baked into the disk image, loaded into the engine.

No registry is needed (nor, on a real VPS, reachable): every service image was built by
`arkbox build`, saved under /usr/share/arkbox/images/*.tar, and listed with its ID in
/usr/share/arkbox/build-manifest.json. A tarball is loaded only when an image it holds is
missing from the engine, and every image is then checked by ID: a tag pointing at anything
else means the disk image is damaged or mixed from two builds. One loader at a time (a
lock in /var/lib/arkbox): the boot-time load (`arkbox-installer load-images`) and the
`engine` step wait for each other.
"""


from __future__ import annotations

import fcntl
import json
import tarfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firstboot.containers.images import BakedImage, read_baked_images
from firstboot.core import wait
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.files import ensure_dir
from firstboot.core.step import StepFailed
from firstboot.core.wait import NotYet

if TYPE_CHECKING:
    import docker

WAIT_FOR_ENGINE_S = 180.0
VERIFY_WAIT_S = 20.0
POLL_S = 2.0
LOAD_TIMEOUT_S = 1800
LOCK_FILE = "images.lock"
REBUILD_HINT = "rebuild the image with `arkbox build` and flash it again"


def tarball_images(tar_path: Path) -> dict[str, list[str]]:
    """Image ID -> tags held by a `docker save` tarball (read from its manifest.json)."""
    try:
        with tarfile.open(tar_path) as tar:
            member = tar.extractfile("manifest.json")
            entries: list[dict[str, Any]] = json.load(member) if member else []
    except (OSError, KeyError, ValueError, tarfile.TarError) as err:
        raise StepFailed(f"{tar_path} is not a readable image tarball: {err}",
                         hint=REBUILD_HINT) from err
    images: dict[str, list[str]] = {}
    for entry in entries:
        # "blobs/sha256/HEX" (OCI layout, Docker >= 25) or "HEX.json" (older engines)
        config = str(entry.get("Config", ""))
        digest = config.rsplit("/", 1)[-1].removesuffix(".json")
        images[f"sha256:{digest}"] = list(entry.get("RepoTags") or [])
    return images


def load_argv(tar_path: Path) -> tuple[str, ...]:
    return ("docker", "load", "--input", str(tar_path))


@contextmanager
def load_lock(paths: Paths) -> Iterator[None]:
    """Held while images are loaded: the boot-time load and the step wait for each other
    (released by the kernel when its holder dies)."""
    ensure_dir(paths.state, 0o755)
    with (paths.state / LOCK_FILE).open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def load_missing(ctx: FirstbootContext, client: docker.DockerClient) -> list[BakedImage]:
    """Load the tarballs of the baked images the engine lacks; returns those images."""
    with load_lock(ctx.paths):
        missing = _missing(client, read_baked_images(ctx.paths.build_manifest).values())
        if missing:
            for tar_path in _tarballs_to_load(ctx.paths.baked_images, missing):
                ctx.log.info("loading %s", tar_path.name)
                ctx.run(load_argv(tar_path), timeout=LOAD_TIMEOUT_S, hint="the tarball may "
                        "be damaged, or the disk full (df -h /var/lib/docker)")
    return missing


def wait_for_engine(ctx: FirstbootContext, within_s: float) -> docker.DockerClient:
    """The engine's client once it answers; StepFailed after `within_s` seconds of silence."""

    def answers() -> docker.DockerClient | NotYet:
        try:
            client = ctx.docker
            if client.ping():
                return client
            return NotYet("the engine did not answer its ping")
        except Exception as err:  # docker-py raises requests' and its own errors alike
            return NotYet(f"{type(err).__name__}: {err}")

    try:
        return wait.until("the container engine to answer", answers, within_s,
                          interval_s=POLL_S)
    except wait.WaitTimedOut as err:
        raise StepFailed(err.message, hint="see `systemctl status docker` and "
                         "`journalctl -u docker`; the unit retries by itself") from err


def _engine_images(client: docker.DockerClient) -> dict[str, list[str]]:
    return {image.id: list(image.tags) for image in client.images.list() if image.id}


def _missing(client: docker.DockerClient, wanted: Iterable[BakedImage]) -> list[BakedImage]:
    present = _engine_images(client)
    return [image for image in wanted if image.image_id not in present]


def _tarballs_to_load(images_dir: Path, missing: list[BakedImage]) -> list[Path]:
    """The tarballs holding a missing image; each must hold it under the manifest's ID."""
    tarballs = sorted(images_dir.glob("*.tar"))
    if not tarballs:
        # A disk image holds its images in the engine's data root only (docs/build.md).
        names = ", ".join(f"{i.recipe} ({i.tag})" for i in missing)
        raise StepFailed(f"{names} missing from the engine, and no image tarball in "
                         f"{images_dir} to load it from", hint=REBUILD_HINT)
    needed: list[Path] = []
    still_missing = {image.tag: image for image in missing}
    for tar_path in tarballs:
        held = tarball_images(tar_path)
        by_tag = {tag: image_id for image_id, tags in held.items() for tag in tags}
        for tag, image in list(still_missing.items()):
            if image.image_id in held:
                del still_missing[tag]
                if tar_path not in needed:
                    needed.append(tar_path)
            elif tag in by_tag:
                raise StepFailed(
                    f"{tar_path.name} holds {tag} as {by_tag[tag][:19]}, but "
                    f"build-manifest.json says {image.image_id[:19]}", hint=REBUILD_HINT)
    if still_missing:
        names = ", ".join(f"{i.recipe} ({i.tag})" for i in still_missing.values())
        raise StepFailed(f"no tarball in {images_dir} holds {names}", hint=REBUILD_HINT)
    return needed


def retag(client: docker.DockerClient, wanted: Iterable[BakedImage]) -> list[str]:
    """Put back a tag lost from a present image (`docker rmi TAG` of one of several tags)."""
    present = _engine_images(client)
    retagged = []
    for image in wanted:
        if image.image_id in present and image.tag not in present[image.image_id]:
            repository, _, tag = image.tag.rpartition(":")
            client.images.get(image.image_id).tag(repository, tag)
            retagged.append(image.recipe)
    return retagged


def mismatch(client: docker.DockerClient, wanted: Iterable[BakedImage]) -> str | None:
    present = _engine_images(client)
    tag_to_id = {tag: image_id for image_id, tags in present.items() for tag in tags}
    for image in wanted:
        actual = tag_to_id.get(image.tag)
        if actual is None:
            return f"image {image.recipe} ({image.tag}) is not in the engine"
        if actual != image.image_id:
            return (f"image {image.tag} is {actual[:19]} in the engine, but build-manifest.json "
                    f"says {image.image_id[:19]}")
    return None
