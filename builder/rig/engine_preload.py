"""A rig box's engine starts with its service images in place, as a flashed disk's does.

The disk image carries the engine's data root (builder/pipeline/engine_data.py), so a
real box loads no image at first boot. The rig's box has a fresh volume on
/var/lib/docker instead (overlay2 layers cannot live inside the imported image's own
layer), and used to `docker load` images.tar at first boot: ~13 s of a ~29 s first boot.
Now the rig fills that volume before the box starts, from the build's own data root in
the builder cache: the root fs tar's image carries its service images' IDs as a label
(from the build manifest next to the tar), and the cache entry holding all of them is
placed in a directory beside the cache (`image/` copied; the layers hard-linked: instant,
where a copy of the ~1 GiB took 8 s), which the box's volume is bound to. Removing the
volume (builder/rig/removal.py) removes the directory; one left by a killed run goes when
the next box is made.

Nothing here is needed for correctness: without the cache entry (another machine, a
cleared cache) the volume stays empty and first boot loads images.tar as before.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import docker
from docker.errors import ImageNotFound

from builder.pipeline.cache import cache_dir_from_env
from builder.pipeline.engine_data import cached_data_root, place_data_root
from builder.pipeline.manifest import MANIFEST_NAME, read_manifest

log = logging.getLogger("arkbox.rig")

SERVICE_IMAGES_LABEL = "org.arkbox.service-images"
ENGINES_SUFFIX = "-rig-engines"  # /var/cache/arkbox -> /var/cache/arkbox-rig-engines


def service_image_ids(rootfs_tar: Path) -> list[str]:
    """The service image IDs of the build that wrote `rootfs_tar` (its build manifest in
    the same folder); none when there is no manifest (e.g. a hand-made tar)."""
    manifest = rootfs_tar.parent / MANIFEST_NAME
    if not manifest.is_file():
        return []
    return sorted(image.id for image in read_manifest(manifest).service_images)


def import_changes(image_ids: list[str]) -> tuple[str, ...]:
    """`docker import --change` lines: the label naming the tar's service images."""
    return (f"LABEL {SERVICE_IMAGES_LABEL}={','.join(image_ids)}",) if image_ids else ()


def engines_dir(cache_dir: Path) -> Path:
    """Where rig boxes' engine directories live: beside the build cache (same mount, so
    the layers can be hard links into it), not in it: a box's engine holds its live state,
    which has no place in a cache."""
    return cache_dir.with_name(cache_dir.name + ENGINES_SUFFIX)


def preload_engine(client: docker.DockerClient, volume: str, image: str, labels: dict[str, str],
                   cache_dir: Path | None = None) -> str:
    """Make `volume` (for a box of `image`, not made yet) a directory holding the build's
    engine data root from the cache, bound as a local volume with `labels`; says what it
    did, or why not (then the caller makes an empty volume and first boot loads)."""
    try:
        image_labels = client.images.get(image).labels or {}
    except ImageNotFound:
        return f"image {image} not found: first boot loads images.tar"
    ids = [i for i in image_labels.get(SERVICE_IMAGES_LABEL, "").split(",") if i]
    if not ids:
        return f"{image} names no service images: first boot loads images.tar"
    cache = cache_dir or cache_dir_from_env()
    root = cached_data_root(cache, ids)
    if root is None:
        return (f"no data root with {len(ids)} images in the build cache: first boot loads "
                "images.tar")
    volumes = {v.name for v in client.volumes.list()}
    if volume in volumes:
        return f"volume {volume} exists: left as it is"
    engines = engines_dir(cache)
    engines.mkdir(mode=0o700, exist_ok=True)
    remove_orphans(engines, volumes)
    engine = engines / volume
    engine.mkdir(mode=0o710)
    # The volume first: from then on no other run takes the directory for an orphan.
    made = client.volumes.create(volume, driver="local", labels=labels, driver_opts={
        "type": "none", "o": "bind", "device": str(engine)})
    try:
        # image/ copied: the engine rewrites its files there, the layers it only reads.
        linked = place_data_root(root, engine, link_parts=("overlay2",),
                                 hint=f"free some space in {engines}")
    except BaseException:
        made.remove(force=True)
        shutil.rmtree(engine, ignore_errors=True)
        raise
    how = "hard links" if linked else "a copy"
    return f"{len(ids)} service images placed in {engine} ({how}) from {root}"


def remove_orphans(engines: Path, volumes: set[str]) -> None:
    """Engine directories whose volume is not among the engine's `volumes` (a run killed
    before its clean-up)."""
    for engine in engines.iterdir():
        # A young one may be another run's, between its mkdir and its volume.
        if engine.name not in volumes and time.time() - engine.stat().st_mtime > 600:
            log.info("removing %s: its volume is gone", engine)
            shutil.rmtree(engine, ignore_errors=True)


def remove_bound_directory(attrs: dict[str, Any]) -> None:
    """After a volume's removal: the engine directory it was bound to, if it was one."""
    device = Path(str((attrs.get("Options") or {}).get("device") or "/"))
    if device.parent.name.endswith(ENGINES_SUFFIX):
        shutil.rmtree(device, ignore_errors=True)
