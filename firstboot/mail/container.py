"""The mail server container (Postfix + Dovecot + OpenDKIM), from the config (step `mail`).

Its configuration is rendered to /etc/arkbox/rendered/mail (firstboot/mail/render.py)
and mounted read-only at /etc/arkbox-mail; the certificate directory
/srv/arkbox/tls/live at /etc/mail-tls; the queue and the mailboxes are volumes under
/srv/arkbox/volumes/mail (so backups carry them, as they carry the DKIM key the
secrets step made in /srv/arkbox/secrets/generated). The container publishes 25, 465,
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
from dataclasses import dataclass
from pathlib import Path

from firstboot.containers import engine
from firstboot.containers.engine import parse_engine_time
from firstboot.containers.images import RECIPES_DIR, baked_image, read_baked_images
from firstboot.containers.naming import LABEL_CONFIG_HASH, ROLE_SERVICE, Naming
from firstboot.containers.plan import ActualContainer, plan_containers
from firstboot.containers.recipe import RecipeRuntime, load_recipe_runtime
from firstboot.containers.spec import (
    Attachment,
    HealthSpec,
    NetworkSpec,
    ServiceSpec,
    VolumeSpec,
    spec_hash,
)
from firstboot.core.config import Appliance, SecretRef
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.files import ensure_dir, write_if_changed
from firstboot.core.step import Outcome, StepFailed
from firstboot.mail import dkim
from firstboot.mail.passwords import hash_password, verifies
from firstboot.mail.render import (
    CONF_MOUNT,
    DIRECTORIES,
    DKIM_KEY,
    TLS_MOUNT,
    VMAIL_UID,
    MailFile,
    UserEntry,
    render_mail_files,
)
from firstboot.secret_store import generated_path, read_stored

ROLE_MAIL = "mail"
MAIL_SERVICE = "mail"
# Volume name -> (path in the container, owner, mode); the backup carries them too. The
# queue's top directory is root's (Postfix makes its own below it); the mailboxes are vmail's.
VOLUMES = {
    "queue": ("/var/spool/postfix", (0, 0), 0o755),
    "mailboxes": ("/var/mail", (VMAIL_UID, VMAIL_UID), 0o750),
}
MAIL_RECIPE = "mail"
MAIL_PORTS = (25, 465, 587, 993)
MAIL_MEMORY = 512 * 1024**2
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


# ---------------------------------------------------------------- converge


def converge_mail(ctx: FirstbootContext) -> Outcome:
    naming = Naming.for_root(ctx.paths.root)
    if not ctx.config.mail.enabled:
        removed = _remove_containers(ctx, naming)
        summary = "mail is off" + ("; container removed (volumes kept)" if removed else "")
        return (Outcome.changed_ if removed else Outcome.unchanged)(summary)
    paths = MailPaths.of(ctx.paths)
    files = wanted_files(ctx, paths)
    changed_files = _write_tree(paths.rendered, files)
    _prepare_volumes(paths)
    ctx.checkpoint("files-written")
    spec = mail_spec(ctx, paths, files)
    config_hash = spec_hash(spec)
    client = ctx.docker
    actual = engine.owned_containers(client, naming, ROLE_MAIL)
    plan = plan_containers({MAIL_SERVICE: config_hash}, actual)
    # IPv6 like the proxy's, so the published mail ports answer on the host's IPv6 too.
    network_created = engine.ensure_network(client, naming, spec.network, ROLE_MAIL,
                                            ipv6_subnet=engine.MAIL_IPV6_SUBNET)
    # The webmail services' networks, made here as the services step makes them (it
    # runs after this step, and keeps them).
    for client_network in mail_client_networks(ctx.config, naming, _runtimes(ctx)):
        network_created |= engine.ensure_service_network(client, naming, client_network,
                                                         ROLE_SERVICE)
    for old in plan.remove:
        engine.remove_container(client, old.container_id, spec.stop_grace_seconds)
    state = "unchanged"
    if plan.create or plan.recreate:
        labels = {**naming.labels(ROLE_MAIL, MAIL_SERVICE), LABEL_CONFIG_HASH: config_hash}
        container_id = engine.create_container(client, spec, labels, {})
        ctx.checkpoint("created")
        engine.start_container(client, container_id, MAIL_SERVICE)
        state = "created" if plan.create else "recreated (config changed)"
    elif plan.start:
        engine.start_container(client, _kept(actual, plan.remove, config_hash), MAIL_SERVICE)
        state = "started"
    elif _secrets_newer_than_start(ctx, _kept(actual, plan.remove, config_hash), paths):
        # A password, the DKIM key or the relay password changed: read at start.
        engine.restart_container(client, _kept(actual, plan.remove, config_hash),
                                 spec.stop_grace_seconds)
        state = "restarted (secrets changed)"
    elif _read(paths.tls_loaded) != _tls_digest(paths).encode():
        # A new certificate since Postfix and Dovecot loaded theirs (the tls step made
        # one, or a power cut came between renewal and reload): reload them in place.
        reload_mail_tls(ctx)
        state = "reloaded (new certificate)"
    if not (plan.create or plan.recreate):
        # A webmail network the services step replaced (it disconnects what is on it).
        rejoined = _rejoin_networks(ctx, _kept(actual, plan.remove, config_hash), spec)
        if rejoined and state == "unchanged":
            state = "rejoined " + ", ".join(rejoined)
    # A start loads the certificate as it is now, and so does a reload.
    write_if_changed(paths.tls_loaded, _tls_digest(paths), 0o644)
    mail = ctx.config.mail
    summary = (f"{mail.hostname}: {len(mail.domains)} domain(s), {len(mail.mailboxes)} "
               f"mailbox(es), {len(mail.aliases)} alias(es); ports "
               + " ".join(str(p) for p in MAIL_PORTS))
    details = {"container": state, "files_changed": changed_files,
               "dkim_selector": mail.dkim_selector}
    if state != "unchanged" or changed_files or network_created:
        done = [f"container {state}"] if state != "unchanged" else []
        done += [f"{len(changed_files)} file(s) written"] if changed_files else []
        return Outcome.changed_(summary + "; " + ", ".join(done or ["network created"]),
                                details)
    return Outcome.unchanged(summary + "; unchanged", details)


def mail_problem(ctx: FirstbootContext) -> str | None:
    naming = Naming.for_root(ctx.paths.root)
    actual = engine.owned_containers(ctx.docker, naming, ROLE_MAIL)
    if not ctx.config.mail.enabled:
        return "a mail container runs although mail is off" if actual else None
    paths = MailPaths.of(ctx.paths)
    files = wanted_files(ctx, paths)
    for relative, wanted in files.items():
        if _read(paths.rendered / relative) != wanted.content.encode():
            return f"{paths.rendered / relative} is out of date"
    plan = plan_containers({MAIL_SERVICE: spec_hash(mail_spec(ctx, paths, files))}, actual)
    if not plan.is_empty:
        return "the mail container is missing, stopped or outdated"
    if _secrets_newer_than_start(ctx, actual[0].container_id, paths):
        return "a mail secret changed after the container started"
    attached = engine.attached_networks(ctx.docker, actual[0].container_id)
    missing = [a.network for a in mail_spec(ctx, paths, files).attachments
               if a.network not in attached]
    if missing:
        return "the mail container is not on network(s) " + ", ".join(missing)
    if _read(paths.tls_loaded) != _tls_digest(paths).encode():
        return "Postfix and Dovecot have not loaded the current certificate"
    return None


def reload_mail_tls(ctx: FirstbootContext, only_if_stale: bool = False) -> bool:
    """Make Postfix and Dovecot serve the current /srv/arkbox/tls/live certificate.

    For certificate renewal (reload_tls_consumers): the files are mounted, so a
    reload is enough; sessions in progress finish on the old certificate. True when
    reloaded; False when no mail container runs (a new one reads the files at start)
    or, with `only_if_stale`, when they already serve the current certificate.
    """
    naming = Naming.for_root(ctx.paths.root)
    paths = MailPaths.of(ctx.paths)
    if only_if_stale and _read(paths.tls_loaded) == _tls_digest(paths).encode():
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
    previous = parse_users(_read(paths.rendered / "dovecot" / "users") or b"")
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
               ("/run", "rw,nosuid,nodev,noexec,size=16m,mode=0755")),
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


def _rejoin_networks(ctx: FirstbootContext, container_id: str, spec: ServiceSpec) -> list[str]:
    attached = engine.attached_networks(ctx.docker, container_id)
    rejoined = []
    for attachment in spec.attachments:
        if attachment.network not in attached:
            engine.connect_container(ctx.docker, container_id, attachment.network,
                                     attachment.aliases)
            rejoined.append(attachment.network)
    return rejoined


def _tls_digest(paths: MailPaths) -> str:
    digest = hashlib.sha256()
    for name in ("fullchain.pem", "privkey.pem"):
        digest.update(_read(paths.tls_live / name) or b"")
    return digest.hexdigest()


def config_digest(files: dict[str, MailFile]) -> str:
    """What of the rendered tree goes into the container's spec: everything but the
    secret files' content (box-made: equal configs give equal specs on every box).
    A change of those restarts the container instead (`_secrets_newer_than_start`)."""
    digest = hashlib.sha256()
    for relative, item in sorted(files.items()):
        digest.update(f"{relative}\0{item.mode:o}\0{item.owner}\0".encode())
        if relative not in SECRET_FILES:
            digest.update(item.content.encode() + b"\0")
    return digest.hexdigest()[:24]


def _secrets_newer_than_start(ctx: FirstbootContext, container_id: str,
                              paths: MailPaths) -> bool:
    """True when a secret file changed after the container started (also after a power
    cut between writing it and restarting: the file times say so)."""
    state = engine.container_state(ctx.docker, container_id)
    started = parse_engine_time(state["State"]["StartedAt"]) if state else None
    if started is None:
        return False
    times = [path.stat().st_mtime for path in (paths.rendered / s for s in SECRET_FILES)
             if path.is_file()]
    return bool(times) and max(times) > started.timestamp()


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


def _kept(actual: list[ActualContainer], removed: tuple[ActualContainer, ...],
          config_hash: str) -> str:
    return next(c.container_id for c in actual
                if c.config_hash == config_hash and c not in removed)


def _remove_containers(ctx: FirstbootContext, naming: Naming) -> bool:
    found = engine.owned_containers(ctx.docker, naming, ROLE_MAIL)
    for container in found:
        engine.remove_container(ctx.docker, container.container_id)
    return bool(found)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None

