"""A rig box's engine starts with its service images in place, as a flashed disk's does.

The disk image carries the engine's data root (builder/pipeline/engine_data.py), so a
real box loads no image at first boot. The rig's box has a fresh volume on
/var/lib/docker instead (overlay2 layers cannot live inside the imported image's own
layer), and used to `docker load` images.tar at first boot: ~13 s of a ~29 s first boot.
Now the rig fills that volume before the box starts, from the build's own data root in
the builder cache: the root fs tar's image carries its service images' IDs as a label
(from the build manifest next to the tar), and the cache entry holding all of them is
placed in the volume with hard links (`image/` copied: the engine rewrites its files).

Nothing here is needed for correctness: without the cache entry (another machine, a
cleared cache) the volume stays empty and first boot loads images.tar as before.
"""

from __future__ import annotations

import logging
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from builder.pipeline.cache import cache_dir_from_env
from builder.pipeline.engine_data import cached_data_root, place_data_root
from builder.pipeline.manifest import MANIFEST_NAME, read_manifest

log = logging.getLogger("arkbox.rig")

SERVICE_IMAGES_LABEL = "org.arkbox.service-images"


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


def preload_engine(client: docker.DockerClient, volume: str, image: str,
                   cache_dir: Path | None = None) -> str:
    """Fill the empty engine volume `volume` of a box of `image` with the build's data root
    from the cache; says what it did (or why not, in which case first boot loads)."""
    try:
        labels = client.images.get(image).labels or {}
    except ImageNotFound:
        return f"image {image} not found: first boot loads images.tar"
    ids = [i for i in labels.get(SERVICE_IMAGES_LABEL, "").split(",") if i]
    if not ids:
        return f"{image} names no service images: first boot loads images.tar"
    root = cached_data_root(cache_dir or cache_dir_from_env(), ids)
    if root is None:
        return (f"no data root with {len(ids)} images in the build cache: first boot loads "
                "images.tar")
    mountpoint = Path(str(client.volumes.get(volume).attrs.get("Mountpoint", "")))
    if not mountpoint.is_dir():  # an engine on another machine: its volumes are not here
        return f"volume {volume} is not on this machine: first boot loads images.tar"
    if any(mountpoint.iterdir()):
        return f"volume {volume} is not empty: left as it is"
    place_data_root(root, mountpoint, link_parts=("overlay2",),
                    hint="free some space where the engine keeps its volumes")
    return f"{len(ids)} service images placed in {volume} from {root}"
