"""The container engine's data root, filled at build time for the disk image.

A disk image boots with its service images already in /var/lib/docker, so first boot
loads nothing (under TCG the load of ~800 MiB took ~320 s of a ~900 s first boot; on a
VPS tens of seconds). The images are loaded by the appliance's own dockerd (from the
base root fs, the very engine that reads them at boot), in a throwaway container whose
/var/lib/docker is a directory of the cache; only `image/` and `overlay2/` are kept:
networks, the engine ID and containers are made by the box's engine when it starts.

The disk image holds the data root instead of images.tar (same bytes, once); the root fs
tarball (the container rig, whose inner /var/lib/docker is a volume) and the update bundle
keep images.tar, which the rig loads at first boot as before. docs/build.md says so.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from builder.pipeline.assemble import IMAGES_DIR
from builder.pipeline.cache import complete_entries
from builder.pipeline.service_images import engine_client, remove_older_imports
from firstboot.core.errors import ArkboxError
from firstboot.core.execute import CommandError, run

STAGE = "engine-data"  # its name in the build cache (builder/pipeline/build.py)
DATA_ROOT_NAME = "data-root"  # the data root's directory in a cache entry
DATA_ROOT = Path("var/lib/docker")
KEEP = ("image", "overlay2")  # the image store; everything else the box's engine makes
IMPORT_TIMEOUT_S = 600
LOAD_TIMEOUT_S = 1200
STOP_TIMEOUT_S = 60
COPY_TIMEOUT_S = 600
LOADER_SOCKET = "unix:///run/arkbox-loader.sock"
LOADER_REPOSITORY = "arkbox/engine-loader"  # one tag per base root fs, the older removed
# The loader's dockerd: no config file of the image's (/etc/docker/daemon.json comes later
# with the hardening, and clashes with flags), no networking: it only stores images.
LOAD_SCRIPT = f"""set -eu
echo '{{}}' > /run/empty.json
dockerd --config-file /run/empty.json --data-root /data --host {LOADER_SOCKET} \\
  --iptables=false --ip6tables=false --bridge=none >/run/dockerd.log 2>&1 &
pid=$!
tries=0
until docker --host {LOADER_SOCKET} version >/dev/null 2>&1; do
  tries=$((tries + 1))
  if ! kill -0 "$pid" 2>/dev/null || [ "$tries" -gt 240 ]; then
    echo "the loader's dockerd did not answer within 120 s; its log:" >&2
    tail -n 20 /run/dockerd.log >&2
    exit 3
  fi
  sleep 0.5
done
docker --host {LOADER_SOCKET} load --input /images.tar
kill -TERM "$pid"
wait "$pid" || true
"""


def loader_tag(base_key: str) -> str:
    return f"{LOADER_REPOSITORY}:{base_key}"


def import_argv(base_tar: Path, tag: str) -> tuple[str, ...]:
    return ("docker", "import", "--message", "arkbox engine loader (the base root fs)",
            str(base_tar), tag)


def loader_argv(tag: str, name: str, data_dir: Path, images_tar: Path) -> tuple[str, ...]:
    """The loader container: the rig's capabilities for an inner dockerd (not --privileged,
    which these hosts refuse), the data root and the tarball bind-mounted."""
    return ("docker", "run", "--rm", "--name", name, "--network", "none",
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--tmpfs", "/run", "--volume", f"{data_dir}:/data",
            "--volume", f"{images_tar}:/images.tar:ro",
            "--entrypoint", "/bin/sh", tag, "-c", LOAD_SCRIPT)


def fill_data_root(base_tar: Path, base_key: str, images_tar: Path, image_ids: list[str],
                   dest: Path, on_line: Callable[[str], None] | None = None) -> None:
    """Load `images_tar` into an empty data root at `dest`; check every image ID is there."""
    tag = loader_tag(base_key)
    if run(("docker", "image", "inspect", "--format", "{{.Id}}", tag), check=False,
           timeout=60).returncode != 0:
        run(import_argv(base_tar, tag), timeout=IMPORT_TIMEOUT_S, on_line=on_line)
        remove_older_imports(engine_client(), LOADER_REPOSITORY, keep=tag)
    dest.mkdir(parents=True, exist_ok=True)
    name = f"arkbox-engine-loader-{os.getpid()}"
    try:
        run(loader_argv(tag, name, dest, images_tar), timeout=LOAD_TIMEOUT_S,
            on_line=on_line, hint="the loader runs the base root fs's dockerd in a container "
            "with the rig's capabilities; see its log above")
    finally:
        # A timeout kills the client, not the container: remove it by name.
        run(("docker", "rm", "--force", name), check=False, timeout=STOP_TIMEOUT_S)
    for entry in list(dest.iterdir()):
        if entry.name not in KEEP:
            _remove(entry)
    missing = [i for i in image_ids if not image_config(dest, i).is_file()]
    if missing:
        raise ArkboxError(f"the loaded data root in {dest} lacks image(s) "
                          f"{', '.join(i[:19] for i in missing)}",
                          hint="run the build again; if it repeats, check `docker load` of "
                               "images.tar by hand")


def image_config(data_root: Path, image_id: str) -> Path:
    """Where the overlay2 image store keeps an image's config (named by the image ID)."""
    return data_root / "image/overlay2/imagedb/content/sha256" / image_id.removeprefix("sha256:")


def disk_view(tree: Path, data_root: Path | None, view: Path) -> Path:
    """The tree as the disk image holds it, at `view`: a copy of hard links (nothing copied,
    and `tree` itself unchanged, so the root fs tarball can read it meanwhile), the image
    tarballs left out and the data root in var/lib/docker (hard links into the cache).
    Without a data root the disk holds the tree as it is: `tree` is returned."""
    if data_root is None:
        return tree
    # The data root's directory, empty, in the tree too (the tarball has always had it).
    (tree / DATA_ROOT).mkdir(mode=0o710, parents=True, exist_ok=True)
    try:
        run(("cp", "--archive", "--link", str(tree), str(view)), timeout=COPY_TIMEOUT_S)
    except CommandError as err:
        raise ArkboxError(f"could not make the disk's view of the tree at {view}: {err}",
                          hint="free some space (and inodes) in --out and build again") from err
    images = view / IMAGES_DIR
    if images.is_dir():  # unlinks the view's names only: the tree keeps its tarballs
        shutil.rmtree(images)
        images.mkdir(mode=0o755)
    engine = view / DATA_ROOT
    place_data_root(data_root, engine, hint="free some space in the work dir (--out) "
                    "and build again")
    return view


def place_data_root(data_root: Path, engine: Path, *, hint: str,
                    link_parts: Iterable[str] = KEEP) -> bool:
    """Put the image store of `data_root` into the engine directory `engine`: hard links
    for `link_parts` when both are on one file system (instant, nothing copied), else
    copies; whether it linked. Raises ArkboxError (with `hint`) when a copy fails."""
    link = can_link(data_root, engine)
    for part in KEEP:
        shared = ("--link",) if link and part in link_parts else ()
        try:
            run(("cp", "--archive", *shared, str(data_root / part), str(engine / part)),
                timeout=COPY_TIMEOUT_S)
        except CommandError as err:
            raise ArkboxError(f"could not place the engine's data root in {engine}: {err}",
                              hint=hint) from err
    return link


def can_link(source: Path, target_dir: Path) -> bool:
    """Whether files below `source` can be hard-linked into `target_dir`: one file system
    and one mount (a bind mount of the same disk refuses links with EXDEV, as
    /var/lib/docker is on some hosts)."""
    if source.stat().st_dev != target_dir.stat().st_dev:
        return False
    sample = next((p for p in source.rglob("*") if p.is_file() and not p.is_symlink()), None)
    if sample is None:
        return False
    probe = target_dir / f".arkbox-link-probe-{os.getpid()}"
    try:
        os.link(sample, probe)
    except OSError:
        return False
    probe.unlink()
    return True


def cached_data_root(cache_dir: Path, image_ids: Iterable[str]) -> Path | None:
    """The newest complete engine data root in the cache holding every one of `image_ids`
    (e.g. the one the build of a root fs tar made, found by the tar's service images)."""
    wanted = list(image_ids)
    if not wanted:
        return None
    for entry in complete_entries(cache_dir, STAGE):
        root = entry / DATA_ROOT_NAME
        if all(image_config(root, image_id).is_file() for image_id in wanted):
            return root
    return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()

