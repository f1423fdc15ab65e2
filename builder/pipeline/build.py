"""`arkbox build`: the pipeline, top to bottom.

Each stage is a function of the BuildContext; expensive ones are cached under
the cache dir by a hash of their inputs. Outputs are written into a work dir
and renamed into out/ only when every stage succeeded, so a failed build
leaves out/ as it was.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from builder.pipeline import (
    archive_state,
    assemble,
    disk,
    engine_data,
    hardening,
    installer,
    rootfs,
    service_images,
    update_bundle,
)
from builder.pipeline.backup_server import install_backup_server
from builder.pipeline.cache import cache_dir_from_env, claim, digest_tree, exclusive
from builder.pipeline.context import BuildContext, Role
from builder.pipeline.manifest import (
    MANIFEST_NAME,
    BuildManifest,
    ServiceImage,
    StageRecord,
    describe_outputs,
    installed_packages,
    write_manifest,
)
from builder.pipeline.progress import Progress
from builder.published import authorized_published_keys, refuse_published
from builder.seed import published_findings, readable_values
from firstboot import __version__
from firstboot.core.config import Appliance, config_digest, format_warnings, load_config
from firstboot.core.errors import ArkboxError
from firstboot.core.seed import needed_refs
from firstboot.updates.bundle import BundleIndex

MIN_FREE_BYTES = 6 << 30
QCOW2_CLUSTERS = "qcow2-clusters"  # the last qcow2 of each appliance name, in the cache
# docker-cli: trixie's docker.io ships only the daemon; the admin needs `docker`.
# sudo: the admin account runs `arkbox-installer status/apply` through it.
IMAGE_PACKAGES = ("docker-cli", "sudo")


def stage_archive_state(ctx: BuildContext) -> None:
    """The Debian archive's state the base and the images are built from (their cache keys
    include it): recorded in the cache, read from the mirror on --refresh."""
    build = ctx.config.build
    resolved = archive_state.resolve(
        ctx.cache_dir, archive_state.release_dists(build.suite, build.mirror,
                                                   rootfs.SECURITY_MIRROR),
        refresh=ctx.refresh)
    ctx.archive = resolved.state
    ctx.progress.note(resolved.note)


def stage_base_rootfs(ctx: BuildContext) -> None:
    """mmdebstrap of Debian with every package the roles need (shared by both roles)."""
    build = ctx.config.build
    extra = image_packages(ctx)
    packages = rootfs.package_list(extra)
    inputs = {
        "suite": build.suite, "mirror": build.mirror, "packages": list(packages),
        "source_date_epoch": ctx.source_date_epoch,
        "recipe": digest_tree(ctx.source_dir, [Path(rootfs.__file__).resolve()]),
        "archive": ctx.archive,
    }
    with claim(ctx.cache_dir, "base-rootfs", inputs, ctx.progress.detail) as entry:
        ctx.progress.note(f"{build.suite}: {entry.reason}")
        if not entry.hit:
            entry.reset()
            rootfs.build_rootfs_tar(
                entry.path / "base.tar", source_date_epoch=ctx.source_date_epoch,
                extra_packages=extra, suite=build.suite, mirror=build.mirror,
                cache_dir=ctx.cache_dir / "debs", work_dir=entry.path,
                on_line=ctx.progress.detail,
            )
            entry.commit()
    ctx.base_tar = entry.path / "base.tar"
    ctx.base_key = entry.key


def image_packages(ctx: BuildContext) -> list[str]:
    """Packages on top of the base list: hardening's, the docker CLI, sudo, the config's."""
    return [*hardening.HARDENING_PACKAGES, *IMAGE_PACKAGES, *ctx.config.build.extra_packages]


def recipes_for(ctx: BuildContext) -> list[str]:
    """The service images a role runs: the proxy, mail when on, and every service's recipe."""
    if ctx.role != "appliance":
        return []
    names = {"proxy"} | {s.recipe for s in ctx.config.services.values() if s.recipe}
    if ctx.config.mail.enabled:
        names.add("mail")
    return sorted(names)


def stage_service_images(ctx: BuildContext) -> None:
    names = recipes_for(ctx)
    if not names:
        ctx.progress.note("none for this role")
        return
    verdicts: list[str] = []
    built = service_images.build_service_images(
        ctx.source_dir / "image" / "recipes", names, ctx.cache_dir,
        mirror=ctx.config.build.mirror, log=verdicts.append,
        source_date_epoch=ctx.source_date_epoch, archive=ctx.archive,
    )
    for line in verdicts:
        ctx.progress.detail(line)
    fresh = [b.name for b in built if not b.cached]
    ctx.images = [
        {"name": b.name, "tag": b.tag, "id": b.image_id, "size": b.size,
         "archive_state": ctx.archive} for b in built
    ]
    with claim(ctx.cache_dir, "images-tar", {"images": ctx.images},
               ctx.progress.detail) as entry:
        if not entry.hit:
            entry.reset()
            service_images.save_images(built, entry.path / "images.tar")
            entry.commit()
    ctx.images_tar = entry.path / "images.tar"
    ctx.progress.note(
        f"{' '.join(names)} · cached {len(built) - len(fresh)}/{len(built)}"
        + (f" · built {' '.join(fresh)}" if fresh else "")
    )


def stage_engine_data(ctx: BuildContext) -> None:
    """The engine's data root with the service images loaded, for the disk image: first
    boot finds them in place (builder/pipeline/engine_data.py)."""
    if ctx.images_tar is None:
        ctx.progress.note("no service images for this role")
        return
    assert ctx.base_tar is not None
    ids = [str(image["id"]) for image in ctx.images]
    inputs = {"images": ctx.images, "base": ctx.base_key}
    with claim(ctx.cache_dir, engine_data.STAGE, inputs, ctx.progress.detail) as entry:
        ctx.progress.note(f"{len(ids)} images: {entry.reason}")
        if not entry.hit:
            entry.reset()
            engine_data.fill_data_root(ctx.base_tar, ctx.base_key, ctx.images_tar, ids,
                                       entry.path / engine_data.DATA_ROOT_NAME,
                                       ctx.progress.detail)
            entry.commit()
    ctx.engine_data = entry.path / engine_data.DATA_ROOT_NAME


def stage_installer(ctx: BuildContext) -> None:
    """The frozen `arkbox-installer`, rebuilt only when its sources change."""
    with claim(ctx.cache_dir, "installer", installer.installer_inputs(ctx.source_dir),
               ctx.progress.detail) as entry:
        ctx.progress.note(entry.reason)
        if not entry.hit:
            entry.reset()
            installer.freeze_installer(ctx.source_dir, entry.path / "dist")
            entry.commit()
    ctx.installer = entry.path / "dist" / installer.NAME
    # One output file for the folder: `tar -xf` it anywhere and run arkbox-installer/…
    tar = ctx.staged(f"{installer.NAME}.tar")
    ctx.digests[tar.name] = disk.rootfs_tar(ctx.installer.parent, tar,
                                            source_date_epoch=ctx.source_date_epoch)


def stage_assemble(ctx: BuildContext) -> None:
    """Unpack the base, harden it, and lay arkbox in: installer, units, config, images."""
    assert ctx.base_tar is not None and ctx.installer is not None
    tree = rootfs.unpack_rootfs_tar(ctx.base_tar, ctx.work_dir / "tree")
    changes = hardening.apply_hardening(
        tree, hardening.vars_from_config(ctx.config, ctx.role), ctx.role)
    for change in changes:
        ctx.progress.detail(change)
    assemble.install_installer(tree, ctx.installer)
    assemble.install_units(tree, ctx.source_dir / "image" / "systemd")
    changes += install_backup_server(tree, ctx.config, ctx.role)
    assemble.install_config(tree, ctx.config_path.read_bytes(), public_files(ctx))
    if ctx.images_tar is not None:
        assemble.install_images(tree, ctx.images_tar)
        assemble.install_recipes(tree, ctx.source_dir / "image" / "recipes",
                                 [str(image["name"]) for image in ctx.images])
    ctx.packages = installed_packages(tree)
    write_manifest(make_manifest(ctx, outputs=[]), tree / "usr/share/arkbox" / MANIFEST_NAME)
    ctx.rootfs_dir = tree
    seeded = len(needed_refs(ctx.config, ctx.role))
    ctx.progress.note(f"{len(changes)} hardening changes · {seeded} secrets from the seed "
                      f"(none in the image) · {len(ctx.packages)} packages")


def stage_disk_view(ctx: BuildContext) -> None:
    """The boot files into the tree, then the disk's view of it: the tree is read-only from
    here on, so the disk, the tarball and the bundle can read it at the same time."""
    assert ctx.rootfs_dir is not None
    disk.prepare_boot(ctx.rootfs_dir, ctx.name, source_date_epoch=ctx.source_date_epoch,
                      on_line=ctx.progress.detail)
    # The disk holds the engine's data root in place of images.tar (docs/build.md).
    ctx.disk_tree = engine_data.disk_view(ctx.rootfs_dir, ctx.engine_data,
                                          ctx.work_dir / "disk-tree")
    ctx.progress.note("GRUB for BIOS and UEFI" + (
        " · the disk's tree: hard links, the engine's data root in" if ctx.engine_data
        else ""))


def stage_disk_image(ctx: BuildContext) -> None:
    assert ctx.disk_tree is not None
    images = disk.build_disk_images(
        ctx.disk_tree, ctx.work_dir / "out", ctx.name,
        source_date_epoch=ctx.source_date_epoch,
        clusters=ctx.cache_dir / QCOW2_CLUSTERS / ctx.name, scratch=ctx.work_dir / "qcow2",
        size_mib=root_partition_mib(ctx.config.build.disk_size),
        on_line=ctx.progress.detail,
    )
    ctx.digests.update(images.sha256)
    raw, qcow2 = images.raw.stat().st_size, images.qcow2.stat().st_size
    preloaded = " · images preloaded in /var/lib/docker" if ctx.engine_data else ""
    ctx.progress.note(f"raw {raw / (1 << 30):.1f} GiB → qcow2 {qcow2 >> 20} MiB "
                      f"({images.compressed} of {images.clusters} clusters compressed, the "
                      f"rest as the last build stored them){preloaded}")


def stage_rootfs_tar(ctx: BuildContext) -> None:
    assert ctx.rootfs_dir is not None
    tar = ctx.staged(f"{ctx.name}-rootfs.tar")
    ctx.digests[tar.name] = disk.rootfs_tar(ctx.rootfs_dir, tar,
                                            source_date_epoch=ctx.source_date_epoch)
    ctx.progress.note(f"{tar.stat().st_size >> 20} MiB")


def stage_update_bundle(ctx: BuildContext) -> None:
    """NAME-update.tar: what a running box needs to become this build (docs/updates.md)."""
    assert ctx.rootfs_dir is not None
    bundle = ctx.staged(update_bundle.bundle_name(ctx.name))
    written = update_bundle.write_bundle(
        ctx.rootfs_dir, bundle,
        BundleIndex(appliance=ctx.name, role=ctx.role, arkbox_version=__version__,
                    config_sha256=config_digest(ctx.config_path), archive_state=ctx.archive),
        source_date_epoch=ctx.source_date_epoch)
    ctx.digests[bundle.name] = written.sha256
    files = written.index.files
    size = sum(entry.size for entry in files.values())
    ctx.progress.note(f"{len(files)} files, {size >> 20} MiB, each with its sha256")


def stage_manifest(ctx: BuildContext) -> None:
    outputs = sorted(p for p in (ctx.work_dir / "out").iterdir())
    write_manifest(make_manifest(ctx, outputs), ctx.staged(MANIFEST_NAME))
    hashed = len([p for p in outputs if p.name not in ctx.digests])
    ctx.progress.note(f"{len(outputs)} outputs with sha256 ({hashed} hashed here, the rest "
                      "while written)")


Stage = tuple[str, Callable[[BuildContext], None]]


@dataclass(frozen=True)
class AtOnce:
    """Stages that run at the same time: one thread per lane, a lane's stages in order.
    They only read the tree and write their own outputs (and ctx.digests); each keeps its
    own line and time. The group ends when every lane has; a failure is raised then."""

    lanes: tuple[tuple[Stage, ...], ...]


# The stages in order: (what the progress line says, the stage). On a config-only change
# the disk image is the longest: the tarball and the bundle run beside it on the other core.
STAGES: tuple[Stage | AtOnce, ...] = (
    ("archive state", stage_archive_state),
    ("base root fs ({suite})", stage_base_rootfs),
    ("service images", stage_service_images),
    ("engine data root", stage_engine_data),
    ("installer (PyInstaller)", stage_installer),
    ("assemble + hardening", stage_assemble),
    ("boot files + disk's view", stage_disk_view),
    AtOnce(lanes=(
        (("disk image", stage_disk_image),),
        (("root fs tarball", stage_rootfs_tar), ("update bundle", stage_update_bundle)),
    )),
    ("manifest", stage_manifest),
)


def run_stages(ctx: BuildContext) -> None:
    """The whole build, in order."""
    for step in STAGES:
        if isinstance(step, AtOnce):
            run_at_once(ctx, step)
        else:
            title, stage = step
            with ctx.progress.stage(title.format(suite=ctx.config.build.suite)):
                stage(ctx)


def run_at_once(ctx: BuildContext, group: AtOnce) -> None:
    """Each lane in a thread of its own, one spinner for all; the stages' results in the
    order they are listed. The first failure is raised once every lane has stopped."""
    def lane(stages: tuple[Stage, ...]) -> None:
        for title, stage in stages:
            with ctx.progress.stage(title, spinner=False):
                stage(ctx)

    titles = [title for stages in group.lanes for title, _ in stages]
    first = len(ctx.progress.results)
    try:
        with ctx.progress.spinning(" · ".join(titles)), \
                ThreadPoolExecutor(len(group.lanes), thread_name_prefix="lane") as pool:
            futures = [pool.submit(lane, stages) for stages in group.lanes]
            for future in futures:  # waits for every lane, even after a failure
                future.exception()
            for future in futures:
                future.result()
    finally:
        ctx.progress.results[first:] = sorted(ctx.progress.results[first:],
                                              key=lambda r: titles.index(r.name))


def stage_names() -> list[str]:
    """Every stage function's name, in the order the build runs (or starts) them."""
    names: list[str] = []
    for step in STAGES:
        stages = [s for lane in step.lanes for s in lane] if isinstance(step, AtOnce) else [step]
        names += [stage.__name__ for _, stage in stages]
    return names


def public_files(ctx: BuildContext) -> dict[str, Path]:
    """The non-secret files the config refers to, by the path the config writes them with:
    tls.ca_bundle (read at run time, relative to the config). Secrets come from the seed."""
    bundle = ctx.config.tls.ca_bundle
    return {} if bundle is None else {bundle: ctx.config.base_dir / bundle}


def refuse_published_secrets(config: Appliance, role: Role, *, allow: bool) -> None:
    """Stop before building a box with a value published in config/secrets/ (or a backup
    server authorizing the published key), as far as the build can read them."""
    findings = published_findings(config, readable_values(config, role))
    if role == "backup-server":
        findings += authorized_published_keys(config)
    refuse_published(config, findings, allow=allow)


def root_partition_mib(disk_size: str) -> int:
    """The root partition's size for a whole-disk size like "4G" (GPT, BIOS boot and ESP off)."""
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    total = int(int(disk_size[:-1]) * units[disk_size[-1]])
    return total - disk.BIOS_BOOT_MIB - disk.ESP_MIB - 2


def make_manifest(ctx: BuildContext, outputs: list[Path]) -> BuildManifest:
    return BuildManifest(
        arkbox_version=__version__, name=ctx.name, role=ctx.role,
        config_file=str(ctx.config_path), config_sha256=config_digest(ctx.config_path),
        suite=ctx.config.build.suite, source_date_epoch=ctx.source_date_epoch,
        archive_state=ctx.archive,
        stages=[StageRecord(name=r.name, seconds=round(r.seconds, 1), note=r.note)
                for r in ctx.progress.results],
        packages=ctx.packages,
        service_images=[ServiceImage(**image) for image in ctx.images],
        outputs=describe_outputs(outputs, ctx.digests),
    )


def check_free_space(*dirs: Path) -> None:
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(d).free
        if free < MIN_FREE_BYTES:
            raise ArkboxError(
                f"only {free >> 20} MiB free in {d}; a build needs {MIN_FREE_BYTES >> 30} GiB",
                hint="free some space, or point --out / --cache (ARKBOX_CACHE) elsewhere",
            )


def private_dir(directory: Path) -> Path:
    """out/ is the operator's alone (0700): what is in it says a lot about the box."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    return directory


def publish(ctx: BuildContext) -> list[Path]:
    """Move every staged output into out/: renames, so out/ never holds half a file.
    Each is 0600 before it appears there."""
    private_dir(ctx.out_dir)
    published = []
    for staged in sorted((ctx.work_dir / "out").iterdir()):
        final = ctx.out_dir / staged.name
        staged.chmod(0o600)
        staged.replace(final)
        published.append(final)
    return published


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    outputs: list[Path]  # what was renamed into out_dir
    seconds: float


def build(config_path: Path, out_dir: Path, role: Role = "appliance", *,
          cache_dir: Path | None = None, console: Console | None = None,
          allow_published: bool = False, refresh: bool = False) -> BuildResult:
    """`arkbox build`: validate the config, run every stage, publish into out_dir.

    Raises ConfigInvalid (every problem at once), BadInputError for a published
    development secret (unless `allow_published` or a .test domain), or the ArkboxError
    of the stage that failed; out_dir is then left as it was.
    """
    console = console or Console(highlight=False, soft_wrap=True)
    progress = Progress(console)
    started = time.monotonic()
    digest = config_digest(config_path)[:12] if config_path.is_file() else "?"
    console.print(f"arkbox {__version__} · building {config_path} (sha256 {digest}…)")
    with progress.stage("validate config"):
        appliance = load_config(config_path)
        progress.note(f"appliance {appliance.appliance.name!r}, role {role}")
        if appliance.warnings:  # e.g. a backup server trusted on first use: say it loudly
            console.print(format_warnings(str(config_path), appliance.warnings))
        refuse_published_secrets(appliance, role, allow=allow_published)
    cache_dir = cache_dir or cache_dir_from_env()
    check_free_space(out_dir, cache_dir)
    private_dir(out_dir)
    with exclusive(out_dir_lock(cache_dir, out_dir), f"the output folder {out_dir}",
                   console.print):
        for left in abandoned_work_dirs(out_dir):
            console.print(f"removing {left}, left by a build that was killed")
            shutil.rmtree(left)
        # The work dir sits next to out/ so the final renames stay on one filesystem.
        work_dir = Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX, dir=out_dir))
        ctx = BuildContext(
            config=appliance, config_path=config_path, role=role, out_dir=out_dir,
            cache_dir=cache_dir, work_dir=work_dir, progress=progress, refresh=refresh,
        )
        published = _build_in_work_dir(ctx, console)
    total = time.monotonic() - started  # not the stages' sum: some run at the same time
    console.print(f"done in {total:.0f} s → {out_dir}/")
    for path in published:
        console.print(f"  {path}")
    if seeded := len(needed_refs(appliance, role)):
        raw = next((p for p in published if p.suffix == ".raw"), out_dir / "NAME.raw")
        console.print(f"no secret in the image: each box needs its seed ({seeded} secrets): "
                      f"arkbox seed {config_path} --out FILE (or --into {raw} --out BOX.raw)")
    return BuildResult(out_dir, published, total)


WORK_DIR_PREFIX = ".arkbox-build-"


def out_dir_lock(cache_dir: Path, out_dir: Path) -> Path:
    """The lock one build of `out_dir` holds: in the cache, so out/ holds only outputs."""
    key = hashlib.sha256(str(out_dir.resolve()).encode()).hexdigest()[:16]
    return cache_dir / "out-locks" / f"{key}.lock"


def abandoned_work_dirs(out_dir: Path) -> list[Path]:
    """Work dirs in out/ that no build owns: a build killed outright (SIGKILL, power cut)
    cannot remove its own. Only called while holding out_dir_lock, so none is in use."""
    return sorted(p for p in out_dir.glob(f"{WORK_DIR_PREFIX}*") if p.is_dir())


def _build_in_work_dir(ctx: BuildContext, console: Console) -> list[Path]:
    """Every stage into the work dir, then publish; the work dir goes either way."""
    (ctx.work_dir / "out").mkdir()
    try:
        run_stages(ctx)
        return publish(ctx)
    except BaseException:
        console.print(f"nothing was written to {ctx.out_dir}/")
        raise
    finally:
        shutil.rmtree(ctx.work_dir, ignore_errors=True)
