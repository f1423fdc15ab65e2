"""The mail server container (Postfix + Dovecot + OpenDKIM + rspamd), from the config (step
`mail`).

Its configuration is rendered to /etc/arkbox/rendered/mail (firstboot/mail/render.py)
and mounted read-only at /etc/arkbox-mail; the certificate directory
/srv/arkbox/tls/live at /etc/mail-tls; the queue, the mailboxes and rspamd's state are
volumes under /srv/arkbox/volumes/mail (so backups carry them, as they carry the DKIM key
the secrets step made in /srv/arkbox/secrets/generated). The container publishes 25, 465,
587 and 993 and runs on a network of its own, with egress (it delivers to the world).
It also joins the network of each service whose recipe uses the mail server (the
recipe's `depends_on` names `mail`: Roundcube), with the alias `mail`: that service
reaches `mail:143`/`mail:587`, and no other service reaches the mail container at all
(other than through its published ports, like anyone).

A digest of the rendered files is part of the container's spec: a config change
recreates the container (a second or two without mail; senders retry). A new
certificate needs no new container: `reload_mail_tls` reloads Postfix and Dovecot
in place.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from firstboot.containers import engine
from firstboot.containers.images import RECIPES_DIR, baked_image, read_baked_images
from firstboot.containers.naming import ROLE_SERVICE, Naming
from firstboot.containers.plan import Desired, DesiredContainer, DesiredNetwork, Plan
from firstboot.containers.recipe import RecipeRuntime, load_recipe_runtime
from firstboot.containers.reconcile import files_changed_at, plan_for, reconcile
from firstboot.containers.spec import (
    Attachment,
    HealthSpec,
    NetworkSpec,
    ServiceSpec,
    VolumeSpec,
    spec_hash,
)
from firstboot.core.config import Appliance, SecretRef
from firstboot.core.config.mail import Mail
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.files import ensure_dir, read_bytes, write_if_changed
from firstboot.core.step import StepFailed
from firstboot.mail import dkim
from firstboot.mail.guard_service import (
    GuardSettings,
    guard_problem,
    install_guard,
    remove_guard,
)
from firstboot.mail.names import MAIL_SERVICE
from firstboot.mail.passwords import hash_password, verifies
from firstboot.mail.render import (
    CONF_MOUNT,
    DIRECTORIES,
    DKIM_KEY,
    IMAPS_PORT,
    RSPAMD_UID,
    SMTP_PORT,
    SUBMISSION_PORT,
    SUBMISSIONS_PORT,
    TLS_MOUNT,
    VMAIL_UID,
    MailFile,
    UserEntry,
    render_mail_files,
)
from firstboot.secret_store import generated_path, read_stored

ROLE_MAIL = "mail"
# Volume name -> (path in the container, owner, mode); the backup carries them too. The
# queue's top directory is root's (Postfix makes its own below it); the mailboxes are vmail's.
VOLUMES = {
    "queue": ("/var/spool/postfix", (0, 0), 0o755),
    "mailboxes": ("/var/mail", (VMAIL_UID, VMAIL_UID), 0o750),
    # rspamd's Redis (Bayes, the scan history): what the filter learned is restored too.
    "spam": ("/var/lib/rspamd", (RSPAMD_UID, RSPAMD_UID), 0o750),
}
MAIL_RECIPE = "mail"
RSPAMD_CACHE = "/var/cache/rspamd"  # hs_cache_dir in the image's rspamd/options.inc
MAIL_PORTS = (SMTP_PORT, SUBMISSIONS_PORT, SUBMISSION_PORT, IMAPS_PORT)
# rspamd with its Redis: at most 350 MiB of it (resident sizes summed, shared pages counted
# twice; measured with the image alone).
MAIL_MEMORY = 768 * 1024**2
MAIL_PIDS = 512
CONFIG_DIGEST_ENV = "ARKBOX_MAIL_CONFIG"
# Rendered files whose content is made on the box (hashes, keys) or secret: not in the
# spec's digest; a change restarts the container.
SECRET_FILES = ("dovecot/users", DKIM_KEY, "postfix/relay_password")

log = logging.getLogger("arkbox.firstboot.mail")


@dataclass(frozen=True)
class MailPaths:
    rendered: Path
    volumes: Path
    tls_live: Path
    dkim_key: Path

    @property
    def tls_loaded(self) -> Path:
        """Digest of the certificate the running Postfix and Dovecot loaded."""
        return self.rendered.parent / "mail.tls-loaded.sha256"

    @classmethod
    def of(cls, paths: Paths) -> MailPaths:
        return cls(paths.rendered / "mail", paths.volumes / "mail", paths.tls / "live",
                   generated_path(paths, dkim.KEY_FILE))


@dataclass
class MailReport:
    enabled: bool
    # created | recreated (config changed) | started | restarted (secrets changed) |
    # reloaded (new certificate) | rejoined NETWORK | removed | unchanged
    container: str = "unchanged"
    files_changed: list[str] = field(default_factory=list)
    networks_changed: bool = False
    guard_changed: bool = False  # arkbox-mail-guard.service written, started or removed

    @property
    def changed(self) -> bool:
        return (self.container != "unchanged" or bool(self.files_changed)
                or self.networks_changed or self.guard_changed)

    def summary(self, mail: Mail) -> str:
        if not self.enabled:
            return "mail is off" + ("; container removed (volumes kept)"
                                    if self.container == "removed" else "")
        summary = (f"{mail.hostname}: {len(mail.domains)} domain(s), {len(mail.mailboxes)} "
                   f"mailbox(es), {len(mail.aliases)} alias(es); ports "
                   + " ".join(str(p) for p in MAIL_PORTS))
        if not self.changed:
            return summary + "; unchanged"
        done = [f"container {self.container}"] if self.container != "unchanged" else []
        done += [f"{len(self.files_changed)} file(s) written"] if self.files_changed else []
        done += ["login ban service updated"] if self.guard_changed else []
        return summary + "; " + ", ".join(done or ["network created"])

    def details(self, mail: Mail) -> dict[str, object]:
        if not self.enabled:
            return {}
        return {"container": self.container, "files_changed": self.files_changed,
                "dkim_selector": mail.dkim_selector}


# ---------------------------------------------------------------- converge


def converge_mail(ctx: FirstbootContext) -> MailReport:
    """Write the mail server's files, reconcile its container, reload a new certificate.
    With mail off: remove a mail container left from before (its volumes stay)."""
    naming = Naming.for_root(ctx.paths.root)
    if not ctx.config.mail.enabled:
        done = reconcile(ctx.docker, naming, Desired(ROLE_MAIL, {}), checkpoint=ctx.checkpoint)
        return MailReport(False, "removed" if done.plan.remove else "unchanged",
                          guard_changed=remove_guard(ctx))
    paths = MailPaths.of(ctx.paths)
    files = wanted_files(ctx, paths)
    report = MailReport(True, files_changed=_write_tree(paths.rendered, files))
    _prepare_volumes(paths)
    ctx.checkpoint("files-written")
    plan = reconcile(ctx.docker, naming, desired_mail(ctx, paths, files),
                     checkpoint=ctx.checkpoint).plan
    report.networks_changed = plan.networks_change
    report.container = _container_change(plan)
    if report.container == "unchanged" and read_bytes(paths.tls_loaded) != \
            _tls_digest(paths).encode():
        # A new certificate since Postfix and Dovecot loaded theirs (the tls step made
        # one, or a power cut came between renewal and reload): reload them in place.
        reload_mail_tls(ctx)
        report.container = "reloaded (new certificate)"
    if report.container == "unchanged" and plan.joined(MAIL_SERVICE):
        # A webmail network the services step replaced (it disconnects what is on it).
        report.container = "rejoined " + ", ".join(plan.joined(MAIL_SERVICE))
    # A start loads the certificate as it is now, and so does a reload.
    write_if_changed(paths.tls_loaded, _tls_digest(paths), 0o644)
    report.guard_changed = _converge_guard(ctx, naming)
    return report


def _converge_guard(ctx: FirstbootContext, naming: Naming) -> bool:
    """The login ban's service (guard_service.py): running with the config's limits, or
    gone when the ban is off."""
    mail = ctx.config.mail
    if not mail.login_ban.enabled:
        return remove_guard(ctx)
    return install_guard(ctx, GuardSettings.of(mail, MAIL_PORTS, naming.container(MAIL_SERVICE)))


def plan_mail(ctx: FirstbootContext) -> Plan:
    """What the mail step would do to the container now (the dry run)."""
    naming = Naming.for_root(ctx.paths.root)
    if not ctx.config.mail.enabled:
        return plan_for(ctx.docker, naming, Desired(ROLE_MAIL, {}))
    paths = MailPaths.of(ctx.paths)
    return plan_for(ctx.docker, naming, desired_mail(ctx, paths, wanted_files(ctx, paths)))


def mail_problem(ctx: FirstbootContext) -> str | None:
    """None when the files, the container and the loaded certificate are current."""
    if not ctx.config.mail.enabled:
        removal = plan_mail(ctx)
        return None if removal.is_empty else "a mail container runs although mail is off"
    paths = MailPaths.of(ctx.paths)
    for relative, wanted in wanted_files(ctx, paths).items():
        if read_bytes(paths.rendered / relative) != wanted.content.encode():
            return f"{paths.rendered / relative} is out of date"
    plan = plan_mail(ctx)
    if not plan.is_empty:
        return "the mail container differs from the config: " + "; ".join(plan.describe())
    if read_bytes(paths.tls_loaded) != _tls_digest(paths).encode():
        return "Postfix and Dovecot have not loaded the current certificate"
    return guard_problem(ctx) if ctx.config.mail.login_ban.enabled else None


def desired_mail(ctx: FirstbootContext, paths: MailPaths, files: dict[str, MailFile]
                 ) -> Desired:
    """The mail container, restarted when a secret file changed after its start; its own
    network (IPv6 like the proxy's, so the published mail ports answer on the host's IPv6
    too) and the webmail services' networks, made here as the services step makes them
    (it runs after this step, and keeps them)."""
    naming = Naming.for_root(ctx.paths.root)
    spec = mail_spec(ctx, paths, files)
    secrets = files_changed_at(
        (paths.rendered / relative,
         files[relative].content.encode() if relative in files else None)
        for relative in SECRET_FILES)
    container = DesiredContainer(spec, spec_hash(spec), files_changed_at=secrets,
                                 recreate_reason="config changed", created_point="created")
    networks = (DesiredNetwork(spec.network, ROLE_MAIL, internal=False,
                               ipv6_subnet=engine.MAIL_IPV6_SUBNET),
                *(DesiredNetwork(n.name, ROLE_SERVICE, n.internal, service=n.service)
                  for n in mail_client_networks(ctx.config, naming, _runtimes(ctx))))
    return Desired(ROLE_MAIL, {MAIL_SERVICE: container}, networks)


def _container_change(plan: Plan) -> str:
    if plan.create:
        return "created"
    if plan.recreate:
        return f"recreated ({plan.reason(MAIL_SERVICE)})"
    if plan.start:
        return "started"
    if plan.restart:  # a password, the DKIM key or the relay password: read at start
        return "restarted (secrets changed)"
    return "unchanged"


def reload_mail_tls(ctx: FirstbootContext, only_if_stale: bool = False) -> bool:
    """Make Postfix and Dovecot serve the current /srv/arkbox/tls/live certificate.

    For certificate renewal (reload_tls_consumers): the files are mounted, so a
    reload is enough; sessions in progress finish on the old certificate. True when
    reloaded; False when no mail container runs (a new one reads the files at start)
    or, with `only_if_stale`, when they already serve the current certificate.
    """
    naming = Naming.for_root(ctx.paths.root)
    paths = MailPaths.of(ctx.paths)
    if only_if_stale and read_bytes(paths.tls_loaded) == _tls_digest(paths).encode():
        return False
    running = [c for c in engine.owned_containers(ctx.docker, naming, ROLE_MAIL) if c.running]
    if not running:
        return False
    digest = _tls_digest(paths)  # before the reload: a newer file is caught next time
    container = ctx.docker.containers.get(running[0].container_id)
    result = container.exec_run(["/usr/local/sbin/mail-reload"])
    if result.exit_code:
        output = result.output.decode(errors="replace") if isinstance(result.output, bytes) \
            else ""
        raise StepFailed(f"mail: reloading Postfix and Dovecot failed: {output.strip()}",
                         hint=f"docker logs {naming.container(MAIL_SERVICE)}")
    write_if_changed(paths.tls_loaded, digest, 0o644)
    log.info("mail: Postfix and Dovecot reloaded for the new certificate")
    return True


# ---------------------------------------------------------------- what to write and run


def wanted_files(ctx: FirstbootContext, paths: MailPaths) -> dict[str, MailFile]:
    mail = ctx.config.mail
    try:
        key_pem = paths.dkim_key.read_bytes()
    except FileNotFoundError:
        raise StepFailed(f"the DKIM key {paths.dkim_key} is missing",
                         hint="the secrets step makes it: run first boot again "
                         "(arkbox-installer apply)") from None
    relay_password = None
    if mail.relay is not None:
        relay_password = _stored_secret(ctx, mail.relay.password, "mail.relay.password")
    return render_mail_files(mail, user_entries(ctx, paths), key_pem, relay_password)


def user_entries(ctx: FirstbootContext, paths: MailPaths) -> list[UserEntry]:
    """Each mailbox with its hash: given in the config, kept from the last run while the
    password still matches it, or made now."""
    previous = parse_users(read_bytes(paths.rendered / "dovecot" / "users") or b"")
    entries = []
    for position, box in enumerate(ctx.config.mail.mailboxes):
        if box.password_hash is not None:
            hashed = box.password_hash
        else:
            assert box.password is not None  # the config requires one of the two
            password = _stored_secret(ctx, box.password, f"mail.mailboxes[{position}].password")
            old = previous.get(box.address.lower())
            hashed = old if old is not None and verifies(password, old) else \
                hash_password(password)
        entries.append(UserEntry(box.address, hashed, box.quota))
    return entries


def parse_users(text: bytes) -> dict[str, str]:
    """address -> password hash, from a users file we wrote."""
    found = {}
    for line in text.decode(errors="replace").splitlines():
        parts = line.split(":")
        if len(parts) >= 2 and parts[0]:
            found[parts[0]] = parts[1]
    return found


def mail_spec(ctx: FirstbootContext, paths: MailPaths, files: dict[str, MailFile]
              ) -> ServiceSpec:
    naming = Naming.for_root(ctx.paths.root)
    runtime = load_recipe_runtime(ctx.paths.at(RECIPES_DIR), MAIL_RECIPE)
    image = baked_image(read_baked_images(ctx.paths.build_manifest), MAIL_RECIPE)
    digest = config_digest(files)
    return ServiceSpec(
        service=MAIL_SERVICE,
        container=naming.container(MAIL_SERVICE),
        recipe=MAIL_RECIPE,
        image_ref=image.tag,
        image_id=image.image_id,
        command=None,
        environment=((CONFIG_DIGEST_ENV, digest),),
        secret_environment=(),
        volumes=tuple(
            VolumeSpec(name, str(paths.volumes / name), target, owner[0], owner[1])
            for name, (target, owner, _) in sorted(VOLUMES.items())),
        secret_files=(),
        tmpfs=(("/tmp", "rw,nosuid,nodev,noexec,size=64m,mode=1777"),  # noqa: S108
               ("/run", "rw,nosuid,nodev,noexec,size=16m,mode=0755"),
               # rspamd's Hyperscan cache (its options.inc): rebuilt at each start, ~10 s
               # of CPU, rather than tens of MB in the backed-up state volume.
               (RSPAMD_CACHE, f"rw,nosuid,nodev,noexec,size=192m,mode=0750,"
                              f"uid={RSPAMD_UID},gid={RSPAMD_UID}")),
        read_only=runtime.read_only,
        cap_add=runtime.capabilities,
        memory_bytes=MAIL_MEMORY,
        pids_limit=MAIL_PIDS,
        nano_cpus=None,
        # The image's own check, run every second while starting (not after 30 s).
        healthcheck=HealthSpec(("CMD", "/usr/local/bin/healthcheck"), 30.0, 10.0, 3, 60.0),
        attachments=(Attachment(naming.network(MAIL_SERVICE), False, (MAIL_SERVICE,)),
                     *(Attachment(n.name, n.internal, (MAIL_SERVICE,)) for n in
                       mail_client_networks(ctx.config, naming, _runtimes(ctx)))),
        stop_grace_seconds=runtime.stop_grace_seconds,
        depends_on=(),
        route=None,
        published_ports=tuple((port, port) for port in MAIL_PORTS),
        binds=((str(paths.rendered), CONF_MOUNT), (str(paths.tls_live), TLS_MOUNT)),
    )


def mail_client_networks(config: Appliance, naming: Naming,
                         runtimes: Mapping[str, RecipeRuntime]) -> list[NetworkSpec]:
    """The networks the mail container joins: those of the services whose recipe uses
    the mail server (webmail), as the services step makes them. None while mail is off."""
    if not config.mail.enabled:
        return []
    return [NetworkSpec(naming.network(name), name, not runtimes[name].egress)
            for name in sorted(config.services)
            if name in runtimes and runtimes[name].mail_client]


def _runtimes(ctx: FirstbootContext) -> dict[str, RecipeRuntime]:
    """The recipes of the configured services (pulled images: not known to use mail)."""
    recipes = ctx.paths.at(RECIPES_DIR)
    return {name: load_recipe_runtime(recipes, service.recipe)
            for name, service in ctx.config.services.items() if service.recipe}


def _tls_digest(paths: MailPaths) -> str:
    digest = hashlib.sha256()
    for name in ("fullchain.pem", "privkey.pem"):
        digest.update(read_bytes(paths.tls_live / name) or b"")
    return digest.hexdigest()


def config_digest(files: dict[str, MailFile]) -> str:
    """What of the rendered tree goes into the container's spec: everything but the
    secret files' content (box-made: equal configs give equal specs on every box).
    A change of those restarts the container instead (`desired_mail`)."""
    digest = hashlib.sha256()
    for relative, item in sorted(files.items()):
        digest.update(f"{relative}\0{item.mode:o}\0{item.owner}\0".encode())
        if relative not in SECRET_FILES:
            digest.update(item.content.encode() + b"\0")
    return digest.hexdigest()[:24]


# ---------------------------------------------------------------- host files


def _write_tree(root: Path, files: dict[str, MailFile]) -> list[str]:
    """Write the tree with its owners and modes; remove files we no longer render."""
    for relative, (mode, owner) in DIRECTORIES.items():
        directory = root / relative if relative else root
        ensure_dir(directory, mode)
        _own(directory, owner, mode)
    changed = [relative for relative, item in sorted(files.items())
               if write_if_changed(root / relative, item.content, item.mode, _owner(item.owner))]
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and relative not in files:
            path.unlink()  # e.g. the relay password after the relay left the config
            changed.append(f"{relative} (removed)")
    return changed


def _prepare_volumes(paths: MailPaths) -> None:
    """Missing volumes are made with their owner; existing (restored) ones left alone."""
    ensure_dir(paths.volumes, 0o755)
    for name, (_, owner, mode) in VOLUMES.items():
        path = paths.volumes / name
        if not path.is_dir():
            path.mkdir(mode=mode)
            _own(path, owner, mode)


def _own(path: Path, owner: tuple[int, int], mode: int) -> None:
    if os.geteuid() == 0:  # tests run the step unprivileged: owners only as root
        os.chown(path, *owner)
    path.chmod(mode)


def _owner(owner: tuple[int, int]) -> tuple[int, int] | None:
    return owner if os.geteuid() == 0 else None


def _stored_secret(ctx: FirstbootContext, ref: SecretRef, where: str) -> str:
    try:
        return read_stored(ctx.paths, ref)
    except FileNotFoundError:
        raise StepFailed(f"{where}: the secrets step has not stored {ref!r}",
                         hint="run first boot again (arkbox-installer apply)") from None
