"""The appliance's service containers, reconciled with the config (step `services` drives it).

Each service gets its own network (internal unless its recipe needs egress),
bind-mounted volumes under /srv/arkbox/volumes/SERVICE/VOLUME, its secrets as
read-only files, and a hardened container labelled with the hash of its spec.
This module says what should be (`desired_services`) and writes the host files;
the reconciler (containers/reconcile.py) creates what is missing, recreates what
changed, removes containers of services the config no longer names (their volumes
stay), restarts a service whose secret files changed since it started, and leaves
everything else alone. The result is written to the environment manifest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import docker
import docker.errors

from firstboot.containers.images import RECIPES_DIR, BakedImage, baked_image, read_baked_images
from firstboot.containers.naming import ROLE_SERVICE, Naming
from firstboot.containers.plan import (
    DEFAULT_REASON,
    Desired,
    DesiredContainer,
    DesiredNetwork,
    Plan,
)
from firstboot.containers.recipe import UNKNOWN_IMAGE, RecipeRuntime, load_recipe_runtime
from firstboot.containers.reconcile import apply, files_changed_at, plan_for
from firstboot.containers.spec import (
    ServiceSpec,
    network_specs,
    secret_digest,
    service_specs,
    spec_hash,
)
from firstboot.core.config import Appliance, SecretRef, SecretUnavailable
from firstboot.core.context import FirstbootContext
from firstboot.core.files import ensure_dir, write_if_changed
from firstboot.core.step import StepFailed
from firstboot.manifest import (
    EnvironmentManifest,
    ManifestNetwork,
    ManifestService,
    changed_fields,
    manifest_service,
    read_manifest,
    write_manifest,
)

VOLUME_MODE = 0o700
SECRET_FILE_MODE = 0o400
SECRET_DIR_MODE = 0o700

log = logging.getLogger("arkbox.firstboot.services")


@dataclass
class ServicesReport:
    plan: Plan
    reasons: dict[str, str] = field(default_factory=dict)  # recreated service -> why
    restarted: list[str] = field(default_factory=list)  # secret files changed
    network_changes: list[str] = field(default_factory=list)
    manifest_changed: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.plan.change_count or self.restarted or self.network_changes
                    or self.manifest_changed or self.plan.remove or self.plan.join
                    or self.plan.leave)

    def summary(self, total: int) -> str:
        plan = self.plan
        parts = []
        if plan.create:
            parts.append("created " + " ".join(plan.create))
        if plan.recreate:
            parts.append("recreated " + " ".join(
                f"{s} ({self.reasons.get(s, DEFAULT_REASON)})" for s in plan.recreate))
        if plan.removed_services:
            parts.append("removed " + " ".join(plan.removed_services) + " (volumes kept)")
        if plan.start:
            parts.append("started " + " ".join(plan.start))
        if self.restarted:
            parts.append("restarted " + " ".join(self.restarted) + " (secret changed)")
        if plan.join:
            parts.append("rejoined " + " ".join(f"{s}:{n}" for s, n in plan.join))
        untouched = len(plan.keep) - len(self.restarted)
        if not parts:
            return f"{total}/{total} services unchanged"
        if untouched:
            parts.append(f"{untouched} unchanged")
        return "; ".join(parts)

    def details(self) -> dict[str, object]:
        """For status.json."""
        plan = self.plan
        return {"created": list(plan.create), "recreated": dict(self.reasons),
                "removed": list(plan.removed_services), "started": list(plan.start),
                "restarted": list(self.restarted),
                "unchanged": [s for s in plan.keep if s not in self.restarted]}


def plan_services(ctx: FirstbootContext) -> Plan:
    """What a run of the services step would do now (the dry run; empty when converged)."""
    return plan_for(ctx.docker, Naming.for_root(ctx.paths.root),
                    desired_state(ctx, desired_services(ctx), read_manifest_or_none(ctx)))


def services_problem(ctx: FirstbootContext) -> str | None:
    """None when every service container runs its current spec and the manifest says so."""
    plan = plan_services(ctx)
    if not plan.is_empty:
        return "containers differ from the config: " + "; ".join(plan.describe())
    manifest = read_manifest_or_none(ctx)
    recorded = {s.name: s.config_hash for s in manifest.services} if manifest else {}
    if recorded != {n: d.config_hash for n, d in plan.desired.items()}:
        return f"{ctx.paths.manifest} does not describe the running services"
    return None


def converge_services(ctx: FirstbootContext,
                      only: Collection[str] | None = None) -> ServicesReport:
    """Bring the engine to the config's services; the report says what was done.

    `only`: start just these services (and make every network, volume and secret
    file), remove no other service and leave the manifest alone. The dump loader
    (backup/dumps.py) starts the databases this way, loads their dumps, and the
    services step does the rest.
    """
    desired = desired_services(ctx)
    previous = read_manifest_or_none(ctx)
    for item in desired.values():
        _prepare_volumes(ctx, item.spec)
        _write_secret_files(ctx, item.spec)
    ctx.checkpoint("host-files-written")
    naming = Naming.for_root(ctx.paths.root)
    plan = plan_for(ctx.docker, naming, desired_state(ctx, desired, previous))
    if only is not None:
        plan = plan.restricted(only)
    apply(ctx.docker, naming, plan, ctx.checkpoint)
    report = ServicesReport(plan, reasons=dict(plan.reasons), restarted=list(plan.restart),
                            network_changes=plan.network_lines())
    if only is None:
        report.manifest_changed = write_manifest(ctx.paths.manifest,
                                                 build_manifest(ctx, desired, previous))
    return report


def desired_services(ctx: FirstbootContext) -> dict[str, DesiredContainer]:
    """The config resolved into container specs with their hashes (reads recipes, images)."""
    config = ctx.config
    naming = Naming.for_root(ctx.paths.root)
    specs = service_specs(config, naming, ctx.paths.data, _runtimes(ctx), _images(ctx))
    desired = {}
    for name, spec in specs.items():
        secret_env = {var: _secret(config, name, ref) for var, ref in spec.secret_environment}
        digests = {var: secret_digest(value) for var, value in secret_env.items()}
        desired[name] = DesiredContainer(spec, spec_hash(spec, digests), secret_env)
    return desired


def desired_state(ctx: FirstbootContext, desired: Mapping[str, DesiredContainer],
                  previous: EnvironmentManifest | None) -> Desired:
    """What the reconciler gets: the containers with when their secret files changed and
    why each would be recreated, and one network per service (others' are removed)."""
    before = {s.name: s for s in previous.services} if previous else {}
    containers = {
        name: replace(item, files_changed_at=_secrets_changed_at(ctx, item.spec),
                      recreate_reason=_recreate_reason(before.get(name), item))
        for name, item in desired.items()}
    networks = tuple(DesiredNetwork(n.name, ROLE_SERVICE, n.internal, service=n.service)
                     for n in network_specs({n: d.spec for n, d in desired.items()}).values())
    return Desired(ROLE_SERVICE, containers, networks, prune_networks=True)


def build_manifest(
    ctx: FirstbootContext,
    desired: Mapping[str, DesiredContainer],
    previous: EnvironmentManifest | None,
) -> EnvironmentManifest:
    specs = {name: d.spec for name, d in desired.items()}
    return EnvironmentManifest(
        appliance=ctx.config.appliance.name,
        config_sha256=ctx.config.config_sha256,
        services=[manifest_service(d.spec, d.config_hash) for _, d in sorted(desired.items())],
        networks=[ManifestNetwork(name=n.name, service=n.service, internal=n.internal)
                  for _, n in sorted(network_specs(specs).items())],
        # The proxy step owns its part; keep what it wrote.
        proxy=previous.proxy if previous else None,
    )


def read_manifest_or_none(ctx: FirstbootContext) -> EnvironmentManifest | None:
    try:
        return read_manifest(ctx.paths.manifest)
    except ValueError as e:  # damaged: it is rewritten from the config below
        log.warning("ignoring unreadable %s: %s", ctx.paths.manifest, e)
        return None


def _prepare_volumes(ctx: FirstbootContext, spec: ServiceSpec) -> None:
    """Create missing volume directories, owned by the app's user.

    An existing one is left as it is: restored data, or owner and mode the app chose.
    """
    for volume in spec.volumes:
        path = Path(volume.host_path)
        if path.is_dir():
            continue
        ensure_dir(path.parent, 0o755)  # root's and traversable; the volume is the app's
        path.mkdir(mode=VOLUME_MODE)
        os.chown(path, volume.uid, volume.gid)
        path.chmod(VOLUME_MODE)
        log.info("%s: new volume %s", spec.service, path)


def _write_secret_files(ctx: FirstbootContext, spec: ServiceSpec) -> None:
    """Each secret file, 0400 and owned by the app's user, in root-only directories."""
    if spec.secret_files and not ctx.paths.secrets.is_dir():
        ensure_dir(ctx.paths.secrets, SECRET_DIR_MODE)  # normally the secrets step made it
    for secret_file in spec.secret_files:
        target = Path(secret_file.host_path)
        ensure_dir(target.parent.parent, SECRET_DIR_MODE)  # secrets/mounts
        ensure_dir(target.parent, SECRET_DIR_MODE)  # secrets/mounts/SERVICE
        value = _secret(ctx.config, spec.service, secret_file.ref)
        write_if_changed(target, _with_newline(value), SECRET_FILE_MODE,
                         (secret_file.uid, secret_file.gid))


def _secrets_changed_at(ctx: FirstbootContext, spec: ServiceSpec) -> float | None:
    return files_changed_at(
        (Path(f.host_path), _with_newline(_secret(ctx.config, spec.service, f.ref)).encode())
        for f in spec.secret_files)


def _recreate_reason(old: ManifestService | None, item: DesiredContainer) -> str:
    """Why the service would be recreated: the recorded fields that differ."""
    if old is None:
        return DEFAULT_REASON
    fields = changed_fields(old, manifest_service(item.spec, item.config_hash))
    return (", ".join(fields) + " changed") if fields else "secret or setting changed"


def _with_newline(value: str) -> str:
    """Files end in a newline; readers (head -n 1, trim) take the first line."""
    return value if value.endswith("\n") else value + "\n"


def _runtimes(ctx: FirstbootContext) -> dict[str, RecipeRuntime]:
    recipes_dir = ctx.paths.at(RECIPES_DIR)
    return {
        name: load_recipe_runtime(recipes_dir, service.recipe) if service.recipe
        else UNKNOWN_IMAGE
        for name, service in ctx.config.services.items()
    }


def _images(ctx: FirstbootContext) -> dict[str, BakedImage]:
    services = ctx.config.services
    baked = read_baked_images(ctx.paths.build_manifest) if any(
        s.recipe for s in services.values()) else {}
    images: dict[str, BakedImage] = {}
    for name, service in services.items():
        if service.recipe:
            image = baked_image(baked, service.recipe)
            _require_image(ctx.docker, image.image_id, name)
        else:
            assert service.image is not None  # the config has recipe or image
            image = _pulled(ctx.docker, service.image, name)
        images[name] = image
    return images


def _require_image(client: docker.DockerClient, image_id: str, service: str) -> None:
    try:
        client.images.get(image_id)
    except docker.errors.ImageNotFound:
        raise StepFailed(
            f"{service}: image {image_id[:19]} is not in the engine",
            hint="the engine step loads the baked images from /usr/share/arkbox/images; "
            "re-run first boot, or check that the image file is intact",
        ) from None


def _pulled(client: docker.DockerClient, reference: str, service: str) -> BakedImage:
    try:
        image = client.images.get(reference)
    except docker.errors.ImageNotFound:
        log.info("%s: pulling %s", service, reference)
        try:
            image = client.images.pull(reference)
        except docker.errors.APIError as e:
            raise StepFailed(f"{service}: cannot pull {reference}: {e.explanation or e}",
                             hint="check the registry is reachable, or use a recipe") from e
    return BakedImage(recipe="", tag=reference, image_id=str(image.id))


def _secret(config: Appliance, service: str, ref: SecretRef) -> str:
    try:
        return config.secret(ref)
    except SecretUnavailable as e:
        raise StepFailed(f"{service}: {e.message}", hint=e.hint) from e


