"""Service images, built offline: a trixie base from mmdebstrap, then one recipe per image.

No registry is involved at any point. The base is a `mmdebstrap --variant=minbase`
tarball, `docker import`-ed as `arkbox/base:KEY`; every recipe under
`image/recipes/NAME/` is a Dockerfile `FROM ${BASE}` that installs Debian packages.
The packages come from the Debian archive (or the `mirror` given), never from a
container registry.

Caching: the base's key is a hash of its mmdebstrap argv; a recipe's key is a hash
of the base's content (its layer digest) and every file of the recipe directory.
An image tagged `arkbox/NAME:KEY` that already exists in the engine is reused. The
state of the last build of each recipe is kept in `CACHE/service-images/NAME.json`,
so a rebuild can say what changed ("built (recipe changed: Dockerfile)").
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from builder.pipeline import archive_state
from builder.pipeline.cache import cache_dir_from_env, changed_keys, digest_file
from builder.pipeline.rootfs import (
    APT_OPTIONS,
    DPKG_PATH_FILTERS,
    MIRROR,
    SECURITY_MIRROR,
    SUITE,
    apt_sources,
    locked,
)
from firstboot.core.config import Problem
from firstboot.core.errors import ArkboxError, BadInputError
from firstboot.core.execute import CommandError, run
from firstboot.core.recipe import Recipe, RecipeInvalid, load_recipe, recipe_path

__all__ = [
    "BaseImage",
    "BuiltImage",
    "build_base_image",
    "build_service_images",
    "cache_dir_from_env",
    "check_recipes",
    "engine_client",
    "list_recipes",
    "remove_older_imports",
    "save_images",
]

log = logging.getLogger("arkbox.build.images")

Log = Callable[[str], None]

REPO = "arkbox"
DEFAULT_SOURCE_DATE_EPOCH = 1_735_689_600  # 2025-01-01, the same default as BuildContext
KEY_CHARS = 20  # hex characters of a key used in tags and file names
LABEL_RECIPE = "org.arkbox.recipe"
LABEL_KEY = "org.arkbox.recipe-key"
STATE_DIR = "service-images"
BASE_DIR = "base"
# Bump to rebuild every image (e.g. when the way images are built changes).
RECIPE_FORMAT = 1
MMDEBSTRAP_TIMEOUT_S = 1800
BUILD_TIMEOUT_S = 1800
SAVE_TIMEOUT_S = 1800
_RECIPE_HINT = "every recipe has a recipe.yaml beside its Dockerfile; docs/recipes.md"
# The Dockerfile lines a recipe.yaml must agree with.
_USER = re.compile(r"^USER\s+(\S+)")
_HEALTHCHECK = re.compile(r"^HEALTHCHECK\s.*\bCMD\s+(.+?)\s*$")
# Files in a recipe directory that are not part of the recipe.
_IGNORED_PARTS = frozenset({"__pycache__", ".git"})
_IGNORED_SUFFIXES = (".pyc", "~", ".swp")

# Base-only extras on top of rootfs.DPKG_PATH_FILTERS / APT_OPTIONS: images are
# built once and never upgraded in place, so dpkg may skip its fsyncs.
BASE_DPKG_OPTIONS: tuple[str, ...] = ("force-unsafe-io",)
# The imported image has no config of its own; these make it a usable FROM.
BASE_IMAGE_CHANGES: tuple[str, ...] = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
)


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class BaseSpec:
    """Everything the base tarball is made from; its hash is the base's cache key."""

    suite: str = SUITE
    mirror: str = MIRROR
    security_mirror: str | None = SECURITY_MIRROR
    source_date_epoch: int = DEFAULT_SOURCE_DATE_EPOCH
    # The archive's state (archive_state.py) as sorted pairs: part of every key, so a
    # --refresh that sees the archive moved rebuilds the base and the images.
    archive: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BaseImage:
    tag: str
    image_id: str
    layer: str  # digest of the base's only layer: stable across re-imports of one tarball
    cached: bool


@dataclass(frozen=True)
class BuiltImage:
    """One service image in the engine, as the manifest lists it."""

    name: str
    tag: str
    image_id: str
    size: int  # bytes, as the engine reports (includes the shared base)
    cached: bool = False
    seconds: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class RecipeState:
    """What the last build of one recipe was made from (kept in the cache dir)."""

    key: str
    base_layer: str
    files: Mapping[str, str]
    archive: Mapping[str, str] = field(default_factory=dict)  # archive_state.ArchiveState


# ---------------------------------------------------------------- pure functions


def base_sources(spec: BaseSpec) -> tuple[str, ...]:
    return apt_sources(spec.suite, spec.mirror, spec.security_mirror)


def mmdebstrap_argv(spec: BaseSpec, out_tar: Path) -> tuple[str, ...]:
    """The mmdebstrap command that writes the minimal base of every service image."""
    argv = ["mmdebstrap", "--variant=minbase", "--format=tar"]
    argv += [f"--aptopt={opt}" for opt in APT_OPTIONS]
    argv += [f"--dpkgopt={opt}" for opt in (*DPKG_PATH_FILTERS, *BASE_DPKG_OPTIONS)]
    # mmdebstrap puts the build host's resolv.conf and hostname in; the engine provides both.
    argv.append('--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname"')
    argv += [spec.suite, str(out_tar), *base_sources(spec)]
    return tuple(argv)


def mmdebstrap_env(spec: BaseSpec) -> dict[str, str]:
    return {"SOURCE_DATE_EPOCH": str(spec.source_date_epoch), "LC_ALL": "C.UTF-8"}


def base_key(spec: BaseSpec) -> str:
    inputs = {
        "argv": mmdebstrap_argv(spec, Path("OUT")),
        "env": mmdebstrap_env(spec),
        "changes": BASE_IMAGE_CHANGES,
        "archive": spec.archive,
    }
    return _digest(inputs)[:KEY_CHARS]


def docker_import_argv(tar: Path, tag: str) -> tuple[str, ...]:
    argv = ["docker", "import"]
    for change in BASE_IMAGE_CHANGES:
        argv += ["--change", change]
    argv += ["--message", "arkbox base (mmdebstrap minbase)", str(tar), tag]
    return tuple(argv)


def recipe_files(recipe_dir: Path) -> dict[str, str]:
    """Relative path -> mode and sha256 of every file of a recipe (what its key covers)."""
    files: dict[str, str] = {}
    for path in sorted(recipe_dir.rglob("*")):
        rel = path.relative_to(recipe_dir)
        if not path.is_file() or _ignored(rel):
            continue
        mode = path.stat().st_mode & 0o777
        files[rel.as_posix()] = f"{mode:o}:{digest_file(path)}"
    return files


def recipe_key(base_layer: str, files: Mapping[str, str],
               archive: tuple[tuple[str, str], ...] = ()) -> str:
    """The image's cache key; the archive too, as a recipe's own apt-get reads it."""
    return _digest({"format": RECIPE_FORMAT, "base": base_layer, "files": dict(files),
                    "archive": archive})[:KEY_CHARS]


def image_tag(name: str, key: str) -> str:
    return f"{REPO}/{name}:{key}"


def rebuild_reason(previous: RecipeState | None, base_layer: str,
                   files: Mapping[str, str], archive: Mapping[str, str] | None = None) -> str:
    """Why a recipe whose image is not in the engine is built (for the build log)."""
    if previous is None:
        return "no earlier build"
    if previous.base_layer != base_layer:
        return "base image changed"
    if archive is not None and dict(previous.archive) != dict(archive):
        moved = sorted(d.rsplit("/", 1)[-1] for d, date in archive.items()
                       if previous.archive.get(d) != date)
        return f"the archive moved ({', '.join(moved)}; --refresh)"
    changed = changed_keys(previous.files, files)
    if changed:
        return "recipe changed: " + ", ".join(_describe_change(previous.files, files, changed))
    return "image missing from the engine"


def docker_build_argv(recipe_dir: Path, tag: str, base_tag: str, key: str) -> tuple[str, ...]:
    """`docker build` of one recipe on the local base; `--pull=false`: never a registry."""
    return (
        "docker", "build", "--pull=false", "--rm", "--force-rm",
        "--build-arg", f"BASE={base_tag}",
        "--label", f"{LABEL_RECIPE}={recipe_dir.name}",
        "--label", f"{LABEL_KEY}={key}",
        "--tag", tag,
        "--file", str(recipe_dir / "Dockerfile"),
        str(recipe_dir),
    )


def docker_save_argv(tags: Sequence[str], out_tar: Path) -> tuple[str, ...]:
    return ("docker", "save", "--output", str(out_tar), *tags)


def gzip_argv(path: Path) -> tuple[str, ...]:
    """Fast gzip in place (PATH.gz); -n leaves out the name and time, so equal input gives
    equal output."""
    return ("gzip", "-1", "-n", "-f", str(path))


def list_recipes(recipes_dir: Path) -> list[str]:
    """The recipe names under `recipes_dir`: each directory holding a Dockerfile."""
    return sorted(p.parent.name for p in recipes_dir.glob("*/Dockerfile"))


# ---------------------------------------------------------------- the base


def build_base_image(spec: BaseSpec, cache_dir: Path, log_line: Log,
                     client: docker.DockerClient | None = None) -> BaseImage:
    """Make sure `arkbox/base:KEY` is in the engine: reuse, re-import or mmdebstrap it."""
    client = client or engine_client()
    key = base_key(spec)
    tag = image_tag("base", key)
    found = _inspect(client, tag)
    if found is not None:
        log_line(f"base: cached (inputs unchanged) {tag}")
        return _base_image(tag, found, cached=True)
    tar = cache_dir / BASE_DIR / f"{spec.suite}-minbase-{key}.tar"
    if tar.exists():
        reason = "imported the cached tarball (image missing from the engine)"
    else:
        seconds = _mmdebstrap(spec, tar)
        reason = f"mmdebstrap in {seconds:.1f} s (no tarball for these inputs)"
    run(docker_import_argv(tar, tag), on_line=_debug, timeout=SAVE_TIMEOUT_S)
    _prune_other_tarballs(tar)
    log_line(f"base: built ({reason}) {tag}")
    found = _inspect(client, tag)
    if found is None:
        raise ArkboxError(f"`docker import` did not leave {tag} in the engine")
    return _base_image(tag, found, cached=False)


def _mmdebstrap(spec: BaseSpec, tar: Path) -> float:
    tar.parent.mkdir(parents=True, exist_ok=True)
    partial = tar.with_name(tar.name + ".partial")
    started = time.monotonic()
    try:
        run(mmdebstrap_argv(spec, partial), env=mmdebstrap_env(spec), on_line=_debug,
            timeout=MMDEBSTRAP_TIMEOUT_S,
            hint=f"check that {spec.mirror} is reachable and the disk has room")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(tar)
    return time.monotonic() - started


def _prune_other_tarballs(keep: Path) -> None:
    for old in keep.parent.glob("*.tar"):
        if old != keep:
            old.unlink(missing_ok=True)


def _base_image(tag: str, attrs: Mapping[str, Any], cached: bool) -> BaseImage:
    layers = attrs.get("RootFS", {}).get("Layers") or [""]
    return BaseImage(tag=tag, image_id=str(attrs["Id"]), layer=str(layers[0]), cached=cached)


# ---------------------------------------------------------------- the recipes


def build_service_images(
    recipes_dir: Path,
    names: Iterable[str] | None = None,
    cache_dir: Path | None = None,
    mirror: str = MIRROR,
    log: Log = print,
    *,
    security_mirror: str | None = SECURITY_MIRROR,
    source_date_epoch: int = DEFAULT_SOURCE_DATE_EPOCH,
    archive: Mapping[str, str] | None = None,
    client: docker.DockerClient | None = None,
) -> list[BuiltImage]:
    """Build (or reuse) the base and every named recipe; `names=None` means all recipes.

    Logs one line per image saying whether its cache was reused and why.
    """
    cache_dir = cache_dir if cache_dir is not None else cache_dir_from_env()
    wanted = list(names) if names is not None else list_recipes(recipes_dir)
    check_recipes(recipes_dir, wanted)
    client = client or engine_client()
    if archive is None:
        # What `arkbox build` uses without --refresh: the state the cache recorded. So the
        # rig's images, the tests' and the build's share keys and reuse each other's
        # images, instead of each rebuilding what the other's state file describes.
        archive = archive_state.resolve(
            cache_dir, archive_state.release_dists(SUITE, mirror, security_mirror),
            refresh=False).state
    spec = BaseSpec(SUITE, mirror, security_mirror, source_date_epoch,
                    tuple(sorted(archive.items())))
    # One build at a time per cache dir: a second waits, then finds the images cached.
    with locked(cache_dir / STATE_DIR):
        base = build_base_image(spec, cache_dir, log, client)
        return [_build_one(recipes_dir / name, base, spec.archive, cache_dir, log, client)
                for name in wanted]


def _build_one(recipe_dir: Path, base: BaseImage, archive: tuple[tuple[str, str], ...],
               cache_dir: Path, log_line: Log, client: docker.DockerClient) -> BuiltImage:
    name = recipe_dir.name
    files = recipe_files(recipe_dir)
    key = recipe_key(base.layer, files, archive)
    tag = image_tag(name, key)
    state_file = cache_dir / STATE_DIR / f"{name}.json"
    found = _inspect(client, tag)
    if found is not None:
        log_line(f"{name}: cached (recipe unchanged) {tag}")
        _write_state(state_file, RecipeState(key, base.layer, files, dict(archive)))
        return _built(name, tag, found, cached=True, seconds=0.0, reason="recipe unchanged")
    reason = rebuild_reason(_read_state(state_file), base.layer, files, dict(archive))
    started = time.monotonic()
    _docker_build(recipe_dir, tag, base.tag, key)
    seconds = time.monotonic() - started
    found = _inspect(client, tag)
    if found is None:
        raise ArkboxError(f"`docker build` did not leave {tag} in the engine")
    _write_state(state_file, RecipeState(key, base.layer, files, dict(archive)))
    _untag_older(client, name, keep=tag, base_layer=base.layer)
    log_line(f"{name}: built in {seconds:.1f} s ({reason}) {tag}")
    return _built(name, tag, found, cached=False, seconds=seconds, reason=reason)


def _docker_build(recipe_dir: Path, tag: str, base_tag: str, key: str) -> None:
    tail: list[str] = []

    def keep_tail(line: str) -> None:
        tail.append(line)
        del tail[:-40]
        log.debug("  %s: %s", recipe_dir.name, line)

    try:
        # The classic builder: it resolves FROM in the local image store only.
        run(docker_build_argv(recipe_dir, tag, base_tag, key), env={"DOCKER_BUILDKIT": "0"},
            on_line=keep_tail, timeout=BUILD_TIMEOUT_S,
            hint=f"the recipe {recipe_dir} failed to build; its last output lines are above")
    except CommandError as e:
        raise ArkboxError(f"building the {recipe_dir.name} image failed:\n  "
                          + "\n  ".join(tail[-20:]), hint=e.hint) from e


def _built(name: str, tag: str, attrs: Mapping[str, Any], *, cached: bool, seconds: float,
           reason: str) -> BuiltImage:
    return BuiltImage(name=name, tag=tag, image_id=str(attrs["Id"]), size=int(attrs["Size"]),
                      cached=cached, seconds=round(seconds, 1), reason=reason)


def _untag_older(client: docker.DockerClient, name: str, keep: str, base_layer: str) -> None:
    """Drop superseded arkbox/NAME tags on the same base, so old builds do not pile up.

    Images on another base are left alone: they belong to another set of base inputs
    (another mirror, say) that a build on this machine may still use.
    """
    for image in client.images.list(name=f"{REPO}/{name}"):
        if (image.attrs.get("RootFS", {}).get("Layers") or [""])[0] != base_layer:
            continue
        for tag in image.tags:
            if tag != keep and tag.startswith(f"{REPO}/{name}:"):
                try:
                    client.images.remove(tag, noprune=False)
                except docker.errors.APIError as e:  # still used by a container: keep it
                    log.debug("keeping %s: %s", tag, e)


def check_recipes(recipes_dir: Path, names: Sequence[str]) -> dict[str, Recipe]:
    """Each named recipe exists, and its recipe.yaml is valid and true to its Dockerfile.

    Checked before anything is built: a bad recipe fails the build with its file, the
    line and key of every problem, and a hint.
    """
    known = list_recipes(recipes_dir)
    missing = [n for n in names if n not in known]
    if missing:
        raise BadInputError(
            f"no recipe for {', '.join(missing)} in {recipes_dir}",
            hint=f"recipes there: {', '.join(known) or 'none'}",
        )
    recipes = {}
    for name in names:
        path = recipe_path(recipes_dir, name)
        try:
            recipe = load_recipe(path, known_recipes=known)
        except FileNotFoundError:
            raise RecipeInvalid(path, [Problem("", "file not found", None, _RECIPE_HINT)]) from None
        problems = dockerfile_problems(recipe, (recipes_dir / name / "Dockerfile").read_text())
        if problems:
            raise RecipeInvalid(path, problems)
        recipes[name] = recipe
    return recipes


def dockerfile_problems(recipe: Recipe, dockerfile: str) -> list[Problem]:
    """Where recipe.yaml and the Dockerfile disagree on the user or the health check."""
    lines = [line.strip() for line in dockerfile.splitlines()]
    users = [m.group(1) for line in lines if (m := _USER.match(line))]
    image_user = users[-1] if users else "root"
    wanted_user = "root" if recipe.user.starts_as_root else recipe.user.name
    problems = []
    if image_user != wanted_user:
        problems.append(Problem(
            "user", f"the image runs as {image_user} (the Dockerfile's USER), the recipe says "
            f"{wanted_user}", None,
            "starts_as_root: true when PID 1 starts as root and changes user itself"))
    checks = [m.group(1) for line in lines if (m := _HEALTHCHECK.match(line))]
    if not checks or _json_list(checks[-1]) != recipe.healthcheck.command:
        problems.append(Problem(
            "healthcheck.command", "the Dockerfile's HEALTHCHECK runs "
            f"{checks[-1] if checks else 'nothing'}, not this command", None,
            'write HEALTHCHECK ... CMD ["/usr/local/bin/healthcheck"] (exec form), the same '
            "command as here"))
    return problems


def _json_list(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


# ---------------------------------------------------------------- saving


def save_images(images: Sequence[BuiltImage], out_tar: Path) -> Path:
    """`docker save` all images into one tarball: the shared base layer is stored once.

    A name ending in `.gz` is gzip-compressed (`docker load` reads it as it is):
    about a third of the size, for about half a minute of gzip on a 2-core machine.
    """
    out_tar.parent.mkdir(parents=True, exist_ok=True)
    compress = out_tar.name.endswith(".gz")
    partial = out_tar.with_name(out_tar.name.removesuffix(".gz") + ".partial")
    try:
        run(docker_save_argv([i.tag for i in images], partial), timeout=SAVE_TIMEOUT_S,
            hint="check the disk has room for the images")
        if compress:
            run(gzip_argv(partial), timeout=SAVE_TIMEOUT_S)
            partial = partial.with_name(partial.name + ".gz")
    except BaseException:
        partial.unlink(missing_ok=True)
        partial.with_name(partial.name + ".gz").unlink(missing_ok=True)
        raise
    partial.replace(out_tar)
    return out_tar


# ---------------------------------------------------------------- helpers


def engine_client() -> docker.DockerClient:
    """The local engine's client, or an error that says how to start it."""
    try:
        return docker.from_env()
    except docker.errors.DockerException as e:
        raise ArkboxError(f"cannot reach the Docker Engine: {e}",
                          hint="start dockerd (scripts/setup does) and check `docker info`") from e


def _inspect(client: docker.DockerClient, ref: str) -> dict[str, Any] | None:
    try:
        return dict(client.images.get(ref).attrs)
    except docker.errors.ImageNotFound:
        return None


def _read_state(path: Path) -> RecipeState | None:
    try:
        data = json.loads(path.read_text())
        return RecipeState(str(data["key"]), str(data["base_layer"]), dict(data["files"]),
                           dict(data.get("archive") or {}))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(path: Path, state: RecipeState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"key": state.key, "base_layer": state.base_layer, "files": dict(state.files),
            "archive": dict(state.archive)}
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    partial.replace(path)


def _describe_change(old: Mapping[str, str], new: Mapping[str, str],
                     changed: Iterable[str]) -> list[str]:
    described = []
    for rel in changed:
        if rel not in new:
            described.append(f"{rel} (removed)")
        elif rel not in old:
            described.append(f"{rel} (added)")
        else:
            described.append(rel)
    return described


def _ignored(rel: Path) -> bool:
    return bool(_IGNORED_PARTS.intersection(rel.parts)) or rel.name.endswith(_IGNORED_SUFFIXES)


def _digest(inputs: Mapping[str, object]) -> str:
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _debug(line: str) -> None:
    log.debug("  %s", line)


def remove_older_imports(client: docker.DockerClient, repository: str, keep: str) -> list[str]:
    """Remove the earlier imports of `repository` (a root fs import is 0.6-1.4 GB: the rig's
    of each build, the engine loader's of each base; a machine that builds many times fills
    its disk). One still used by a container stays: the engine refuses, and that refusal
    is the check."""
    removed = []
    for image in client.images.list(name=repository):
        tags = [t for t in image.tags if t.startswith(f"{repository}:")]
        if keep in image.tags or not tags:
            continue
        try:
            for old in tags:
                client.images.remove(old)
                removed.append(old)
        except docker.errors.APIError as err:  # in use by a container of another rig
            log.info("kept %s: %s", tags[0], err.explanation)
    if removed:
        log.info("removed earlier imports: %s", ", ".join(removed))
    return removed
