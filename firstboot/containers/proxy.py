"""The reverse proxy: nginx in front of every routed service, the only service container
with published ports (step `proxy` drives it; certificate renewal reloads it).

The proxy container publishes 80 and 443 and joins each routed service's
network, reaching the service as http://SERVICE:PORT there. Its config is
rendered to /etc/arkbox/rendered/nginx/conf.d; the certificate and key from
/srv/arkbox/tls/live are copied next to it, owned by nginx's user (the tls step
keeps them root-only). When what nginx has loaded differs from these files (a
digest of them is recorded after each start or reload, so a power cut between
writing and reloading is caught on the next run), the running nginx checks them
(`nginx -t`) and reloads gracefully: in-flight requests finish, nothing is
dropped. `converge_proxy` is also what certificate renewal calls. The mail sites (MTA-STS
policies, mail client autoconfiguration: firstboot/mail/proxy_sites.py) are an input: the
proxy serves what the mail server publishes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import docker
from docker.models.containers import Container

from firstboot.containers import engine
from firstboot.containers.images import RECIPES_DIR, baked_image, read_baked_images
from firstboot.containers.naming import ROLE_PROXY, Naming
from firstboot.containers.nginx import (
    ACME_ROOT,
    CONF_DIR,
    STATUS_PAGE_SOCKET_DIR,
    TLS_DIR,
    MailSites,
    Site,
    StatusPageSite,
    names_ocsp_responder,
    render_proxy_config,
    sites_from_routes,
)
from firstboot.containers.plan import Desired, DesiredContainer, DesiredNetwork, Plan
from firstboot.containers.recipe import RecipeRuntime, load_recipe_runtime
from firstboot.containers.reconcile import plan_for, reconcile
from firstboot.containers.spec import Attachment, RouteSpec, ServiceSpec, spec_hash
from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.files import atomic_write, ensure_dir, read_bytes, write_if_changed
from firstboot.core.step import StepFailed
from firstboot.manifest import ManifestImage, ManifestProxy, read_manifest, write_manifest

PROXY_RECIPE = "proxy"
PROXY_SERVICE = "proxy"
CONF_FILE = "arkbox.conf"
LOADED_MARKER = "loaded.sha256"  # digest of the files the running nginx has loaded
PROXY_MEMORY = 256 * 1024**2
PROXY_PIDS = 256

log = logging.getLogger("arkbox.firstboot.proxy")


@dataclass(frozen=True)
class PublishedPorts:
    """Host ports of the proxy; 0 lets the engine pick a free one (tests on a shared host)."""

    http: int = 80
    https: int = 443


@dataclass
class ProxyReport:
    container: str  # created | recreated | started | unchanged
    reloaded: bool = False
    files_changed: bool = False
    joined: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    hostnames: list[str] = field(default_factory=list)
    manifest_changed: bool = False

    @property
    def changed(self) -> bool:
        return (self.container != "unchanged" or self.reloaded or self.files_changed
                or bool(self.joined or self.left) or self.manifest_changed)

    def summary(self) -> str:
        routes = f"{len(self.hostnames)} host(s): {' '.join(self.hostnames) or 'none'}"
        done = []
        if self.container != "unchanged":
            done.append(f"container {self.container}")
        if self.reloaded:
            done.append("reloaded (config or certificate changed)")
        if self.joined:
            done.append("joined " + " ".join(self.joined))
        if self.left:
            done.append("left " + " ".join(self.left))
        return routes + ("; " + "; ".join(done) if done else "; unchanged")


@dataclass(frozen=True)
class ProxyFiles:
    """Where the proxy's host files live."""

    conf_dir: Path
    tls_dir: Path
    acme_root: Path
    certificate_source: Path
    key_source: Path

    @property
    def served(self) -> tuple[Path, ...]:
        """What nginx reads: a change to any of them needs a reload."""
        return (self.conf_dir / CONF_FILE, self.tls_dir / "fullchain.pem",
                self.tls_dir / "privkey.pem")

    @property
    def loaded_marker(self) -> Path:
        return self.conf_dir.parent / LOADED_MARKER

    def served_digest(self) -> str:
        digest = hashlib.sha256()
        for path in self.served:
            digest.update(read_bytes(path) or b"")
        return digest.hexdigest()

    @classmethod
    def of(cls, ctx: FirstbootContext) -> ProxyFiles:
        rendered = ctx.paths.rendered / "nginx"
        live = ctx.paths.tls / "live"
        return cls(rendered / "conf.d", rendered / "tls", ctx.paths.data / "acme-webroot",
                   live / "fullchain.pem", live / "privkey.pem")


def status_page_socket_dir(paths: Paths) -> Path:
    """The host directory of the status page's socket, mounted into the proxy (kept across
    reboots: the proxy container restarts with the engine, before the page's server)."""
    return paths.state / "status-page" / "socket"


def proxy_problem(ctx: FirstbootContext, mail: MailSites,
                  ports: PublishedPorts | None = None) -> str | None:
    """None when the proxy runs its current spec, config and certificate on all routes."""
    files = ProxyFiles.of(ctx)
    if read_bytes(files.conf_dir / CONF_FILE) != \
            render_config(ctx.config, files, mail).encode():
        return "the rendered nginx config is out of date"
    if read_bytes(files.tls_dir / "fullchain.pem") != read_bytes(files.certificate_source):
        return "the proxy's certificate copy differs from /srv/arkbox/tls/live"
    if read_bytes(files.loaded_marker) != files.served_digest().encode():
        return "nginx has not loaded the current config and certificate"
    plan = plan_proxy(ctx, ports)
    if not plan.is_empty:
        return "the proxy differs from the config: " + "; ".join(plan.describe())
    return None


def plan_proxy(ctx: FirstbootContext, ports: PublishedPorts | None = None) -> Plan:
    """What the proxy step would do to the container now (the dry run)."""
    return plan_for(ctx.docker, Naming.for_root(ctx.paths.root),
                    desired_proxy(ctx, ProxyFiles.of(ctx), ports or _recorded_ports(ctx)))


def converge_proxy(ctx: FirstbootContext, mail: MailSites,
                   ports: PublishedPorts | None = None) -> ProxyReport:
    """Bring the proxy to the config; `mail`: the sites to serve for the mail server."""
    naming = Naming.for_root(ctx.paths.root)
    files = ProxyFiles.of(ctx)
    ports = ports or _recorded_ports(ctx)
    runtime = load_recipe_runtime(ctx.paths.at(RECIPES_DIR), PROXY_RECIPE)
    previous_files = {path: read_bytes(path) for path in files.served}
    report = ProxyReport("unchanged", files_changed=_write_files(ctx, files, runtime, mail))
    ctx.checkpoint("files-written")
    desired = desired_proxy(ctx, files, ports)
    # Joins the routed services' networks before a start, so the first request finds them.
    plan = reconcile(ctx.docker, naming, desired, checkpoint=ctx.checkpoint).plan
    report.container = ("created" if plan.create else "recreated" if plan.recreate
                        else "started" if plan.start else "unchanged")
    report.joined, report.left = plan.joined(PROXY_SERVICE), plan.left(PROXY_SERVICE)
    if report.container == "unchanged" and \
            read_bytes(files.loaded_marker) != files.served_digest().encode():
        _test_and_reload(ctx.docker, plan.current[PROXY_SERVICE], files, previous_files)
        report.reloaded = True
    # A start loads the files as they are now, and so does a reload.
    write_if_changed(files.loaded_marker, files.served_digest(), 0o644)
    report.hostnames = sorted({s.hostname for s in _sites(ctx.config)}
                              | ({ctx.config.appliance.hostname} if ctx.config.status_page
                                 else set()))
    spec = desired.containers[PROXY_SERVICE]
    report.manifest_changed = _record(ctx, spec.spec, spec.config_hash, naming, ports)
    return report


def desired_proxy(ctx: FirstbootContext, files: ProxyFiles, ports: PublishedPorts) -> Desired:
    """The proxy container on its own network (with IPv6: its published ports answer on
    the host's IPv6 too), joining each routed service's network while it runs."""
    naming = Naming.for_root(ctx.paths.root)
    spec = proxy_spec(ctx, files, ports)
    container = DesiredContainer(spec, spec_hash(spec),
                                 live_networks=frozenset(routed_networks(ctx.config, naming)))
    network = DesiredNetwork(naming.proxy_network, ROLE_PROXY, internal=False,
                             ipv6_subnet=engine.PROXY_IPV6_SUBNET)
    return Desired(ROLE_PROXY, {PROXY_SERVICE: container}, (network,))


def proxy_spec(ctx: FirstbootContext, files: ProxyFiles, ports: PublishedPorts) -> ServiceSpec:
    """The proxy container as a spec; its networks beyond its own are joined live."""
    naming = Naming.for_root(ctx.paths.root)
    runtime = load_recipe_runtime(ctx.paths.at(RECIPES_DIR), PROXY_RECIPE)
    image = baked_image(read_baked_images(ctx.paths.build_manifest), PROXY_RECIPE)
    return ServiceSpec(
        service=PROXY_SERVICE,
        container=naming.proxy_container,
        recipe=PROXY_RECIPE,
        image_ref=image.tag,
        image_id=image.image_id,
        command=None,
        environment=(),
        secret_environment=(),
        volumes=(),
        secret_files=(),
        tmpfs=(("/tmp", "rw,nosuid,nodev,noexec,size=64m,mode=1777"),),  # noqa: S108
        read_only=runtime.read_only,
        cap_add=runtime.capabilities,
        memory_bytes=PROXY_MEMORY,
        pids_limit=PROXY_PIDS,
        nano_cpus=None,
        healthcheck=None,  # the image's own: nginx answers on port 80
        attachments=(Attachment(naming.proxy_network, False, (PROXY_SERVICE,)),),
        stop_grace_seconds=runtime.stop_grace_seconds,
        depends_on=(),
        route=None,
        published_ports=((ports.http, 80), (ports.https, 443)),
        binds=(
            (str(files.conf_dir), CONF_DIR),
            (str(files.tls_dir), TLS_DIR),
            (str(files.acme_root), ACME_ROOT),
            *(((str(status_page_socket_dir(ctx.paths)), STATUS_PAGE_SOCKET_DIR),)
              if ctx.config.status_page else ()),
        ),
    )


def render_config(config: Appliance, files: ProxyFiles, mail: MailSites) -> str:
    certificate = read_bytes(files.certificate_source)
    stapling = certificate is not None and names_ocsp_responder(certificate)
    status_page = StatusPageSite(config.appliance.hostname) if config.status_page else None
    return render_proxy_config(_sites(config), ocsp_stapling=stapling, mail=mail,
                               status_page=status_page)


def routed_networks(config: Appliance, naming: Naming) -> set[str]:
    return {naming.network(name) for name, s in config.services.items() if s.route}


def _sites(config: Appliance) -> list[Site]:
    return sites_from_routes(
        (name, RouteSpec(s.route.hostname, s.route.path, s.route.port, s.route.max_body_size))
        for name, s in sorted(config.services.items()) if s.route
    )


def _write_files(ctx: FirstbootContext, files: ProxyFiles, runtime: RecipeRuntime,
                 mail: MailSites) -> bool:
    """The config and nginx's copies of the certificate and key; True when any changed."""
    for source in (files.certificate_source, files.key_source):
        if not source.is_file():
            raise StepFailed(
                f"the proxy needs {source}, which is missing",
                hint="the tls step writes it (a self-signed fallback at first); "
                "run first boot again so tls runs before proxy",
            )
    # The tls step writes challenges to acme-webroot/.well-known/acme-challenge/.
    ensure_dir(files.acme_root, 0o755)
    ensure_dir(files.acme_root / ".well-known", 0o755)
    ensure_dir(files.acme_root / ".well-known" / "acme-challenge", 0o755)
    ensure_dir(files.conf_dir, 0o755)
    if ctx.config.status_page:
        # nginx's user connects to the page's socket; nobody else on the host may.
        socket_dir = status_page_socket_dir(ctx.paths)
        ensure_dir(socket_dir, 0o710)
        os.chown(socket_dir, 0, runtime.gid)
    changed = write_if_changed(files.conf_dir / CONF_FILE,
                               render_config(ctx.config, files, mail), 0o644)
    # nginx runs as its image's user and cannot read the tls step's root-only key.
    owner = (runtime.uid, runtime.gid)
    ensure_dir(files.tls_dir, 0o700)
    os.chown(files.tls_dir, *owner)
    changed |= write_if_changed(files.tls_dir / "fullchain.pem",
                                files.certificate_source.read_bytes(), 0o444, owner)
    changed |= write_if_changed(files.tls_dir / "privkey.pem", files.key_source.read_bytes(),
                                0o400, owner)
    return changed


def _test_and_reload(client: docker.DockerClient, container_id: str, files: ProxyFiles,
                     previous: dict[Path, bytes | None]) -> None:
    container = client.containers.get(container_id)
    code, output = _exec(container, ["nginx", "-t", "-q"])
    if code != 0:
        # Put the last good files back: the running nginx keeps serving them, and a
        # restart of the container must not pick up what nginx refused.
        for path, data in previous.items():
            if data is not None:
                info = path.stat()
                atomic_write(path, data, info.st_mode & 0o7777, (info.st_uid, info.st_gid))
        raise StepFailed(
            "nginx refused the new proxy config: " + output,
            hint=f"the previous config was put back in {files.conf_dir}; "
            "check the routes in the config and the certificate in /srv/arkbox/tls/live",
        )
    code, output = _exec(container, ["nginx", "-s", "reload"])
    if code != 0:
        raise StepFailed("nginx did not reload: " + output,
                         hint=f"docker logs {container_id[:12]}")
    log.info("nginx reloaded gracefully")


def _exec(container: Container, argv: list[str]) -> tuple[int, str]:
    """Run a command in the container (as its user); exit code and merged output."""
    result = container.exec_run(argv)
    output = result.output if isinstance(result.output, bytes) else b""
    return int(result.exit_code or 0), output.decode(errors="replace").strip()


def _record(ctx: FirstbootContext, spec: ServiceSpec, config_hash: str, naming: Naming,
            ports: PublishedPorts) -> bool:
    manifest = read_manifest(ctx.paths.manifest)
    if manifest is None:
        raise StepFailed(f"{ctx.paths.manifest} is missing",
                         hint="the services step writes it: run it before proxy")
    proxy = ManifestProxy(
        container=spec.container,
        image=ManifestImage(ref=spec.image_ref, id=spec.image_id),
        config_hash=config_hash,
        networks=sorted(routed_networks(ctx.config, naming) | {naming.proxy_network}),
        published_ports=[ports.http, ports.https],
    )
    return write_manifest(ctx.paths.manifest, manifest.model_copy(update={"proxy": proxy}))


def _recorded_ports(ctx: FirstbootContext) -> PublishedPorts:
    """The default ports, unless the manifest records others (a test box)."""
    manifest = read_manifest(ctx.paths.manifest)
    if manifest and manifest.proxy and len(manifest.proxy.published_ports) == 2:
        http, https = manifest.proxy.published_ports
        return PublishedPorts(http, https)
    return PublishedPorts()
