"""Checks across fields and sections, run on whatever parts of the config are valid.

Field errors do not hide these (see checked_parts): one run reports every problem.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator

from firstboot.core.config.backup import BackupClient
from firstboot.core.config.base import did_you_mean
from firstboot.core.config.checked_parts import CheckedParts
from firstboot.core.config.problems import Finding, PathPart
from firstboot.core.config.scalars import repository_dir, repository_overlap
from firstboot.core.config.services import Service

MAIL_PORTS = {25: "SMTP", 465: "SMTP submission (TLS)", 587: "SMTP submission", 993: "IMAPS"}
WEB_PORTS = {80: "HTTP (the proxy)", 443: "HTTPS (the proxy)"}


def check_rules(parts: CheckedParts, known_recipes: Collection[str] | None = None) -> list[Finding]:
    findings: list[Finding] = []
    for rule in RULES:
        findings.extend(parts.in_yaml(finding) for finding in rule(parts))
    if known_recipes is not None:
        findings.extend(_recipes_exist(parts, known_recipes))
    return findings


def _mail_rules(parts: CheckedParts) -> Iterator[Finding]:
    mail = parts.mail
    if mail is None or not mail.enabled:
        return
    if mail.hostname is None:
        domain = parts.identity.domain if parts.identity else "example.org"
        yield Finding(
            ("mail", "hostname"),
            "required when mail is enabled",
            f"e.g. hostname: mail.{domain}, or set mail.enabled: false",
        )
    if not mail.domains:
        yield Finding(("mail", "domains"), "at least one domain is needed when mail is enabled")
    domains = set(mail.domains)
    listed = ", ".join(mail.domains)
    mailboxes: dict[str, int] = {}
    for position, box in enumerate(mail.mailboxes):
        where = ("mail", "mailboxes", position)
        domain = box.address.rpartition("@")[2]
        if domains and domain not in domains:
            yield Finding(
                (*where, "address"),
                f'"{box.address}" is not in mail.domains ({listed})',
                f'add "{domain}" to mail.domains, or fix the address',
            )
        if box.address in mailboxes:
            yield Finding(
                (*where, "address"),
                f'"{box.address}" is listed twice (also mailboxes['
                f'{parts.position("mail", "mailboxes", mailboxes[box.address])}])',
            )
        mailboxes.setdefault(box.address, position)
        if (box.password is None) == (box.password_hash is None):
            yield Finding(
                where,
                "give exactly one of password (a secret reference) or password_hash",
                "e.g. password: {file: secrets/NAME-mail-password}",
            )
    if ("mail", "mailboxes") in parts.pruned:
        return  # an invalid mailbox was left out: its address would look unknown
    local = set(mailboxes) | set(mail.aliases)
    for alias, targets in mail.aliases.items():
        alias_at: tuple[PathPart, ...] = ("mail", "aliases", alias)
        domain = alias.rpartition("@")[2]
        if domains and domain not in domains:
            yield Finding(alias_at, f'"{alias}" is not in mail.domains ({listed})')
        if alias in mailboxes:
            yield Finding(alias_at, f'"{alias}" is both a mailbox and an alias', "keep one of them")
        for position, target in enumerate(targets):
            # a target written as one address has no [index] in the YAML
            at = (*alias_at, position) if len(targets) > 1 else alias_at
            if target.rpartition("@")[2] in domains and target not in local:
                guess = did_you_mean(target, local)
                yield Finding(
                    at,
                    f'alias target "{target}" is neither a mailbox nor an alias',
                    f'did you mean "{guess}"?' if guess else "add a mailbox for it",
                )


def _service_rules(parts: CheckedParts) -> Iterator[Finding]:
    for name, service in parts.services.items():
        where = ("services", name)
        if service.recipe is None and service.image is None:
            yield Finding(where, "give recipe (an image recipe) or image", "e.g. recipe: dokuwiki")
        if service.recipe is not None and service.image is not None:
            yield Finding((*where, "image"), "give recipe or image, not both")
        for position, other in enumerate(service.connects_to):
            at = (*where, "connects_to", position)
            if other == name:
                yield Finding(at, "a service cannot connect to itself")
            elif other not in parts.service_names:
                guess = did_you_mean(other, parts.service_names)
                yield Finding(
                    at,
                    f'no service named "{other}"',
                    f'did you mean "{guess}"?' if guess else None,
                )
        yield from _healthcheck_rules(where, service)
        yield from _service_backup_rules(where, service)
        seen_paths: dict[str, str] = {}
        for volume, path in service.volumes.items():
            if path in seen_paths:
                yield Finding(
                    (*where, "volumes", volume),
                    f'mounts {path}, as volume "{seen_paths[path]}" does',
                )
            seen_paths.setdefault(path, volume)


def _healthcheck_rules(where: tuple[str, str], service: Service) -> Iterator[Finding]:
    check = service.healthcheck
    if check is None:
        return
    at = (*where, "healthcheck")
    if (check.http is None) == (check.command is None):
        yield Finding(at, "give exactly one of http (a URL path) or command", "e.g. http: /")
    if check.http is not None and check.port is None and service.route is None:
        yield Finding(
            (*at, "port"),
            "required for an http check on a service without a route",
            "the port the service listens on inside its container",
        )


def _service_backup_rules(where: tuple[str, str], service: Service) -> Iterator[Finding]:
    backup = service.backup
    at = (*where, "backup")
    if backup.consistency == "dump":
        if backup.dump_command is None:
            yield Finding(
                (*at, "dump_command"),
                'required when consistency is "dump"',
                "e.g. dump_command: [pg_dumpall, -U, postgres]",
            )
        if backup.restore_command is None:
            yield Finding(
                (*at, "restore_command"),
                'required when consistency is "dump": without it the dump cannot be restored',
                "e.g. restore_command: [psql, -U, postgres, -d, postgres]",
            )
    else:
        for unused in ("dump_command", "restore_command"):
            if getattr(backup, unused) is not None:
                yield Finding(
                    (*at, unused),
                    f'only used when consistency is "dump" (it is "{backup.consistency}")',
                )
    for position, volume in enumerate(backup.exclude_volumes):
        if volume not in service.volumes:
            yield Finding(
                (*at, "exclude_volumes", position),
                f'no volume named "{volume}" in this service',
            )


def _route_rules(parts: CheckedParts) -> Iterator[Finding]:
    taken: dict[tuple[str, str], str] = {}
    mail = parts.mail
    mail_host = mail.hostname if mail is not None and mail.enabled else None
    own_host = parts.identity.hostname if parts.identity else None
    for name, service in parts.services.items():
        route = service.route
        if route is None:
            continue
        at = ("services", name, "route", "hostname")
        if route.hostname == mail_host:
            yield Finding(at, f'"{route.hostname}" is the mail server\'s host name (mail.hostname)')
        if route.hostname == own_host:
            yield Finding(
                at,
                f'"{route.hostname}" is the appliance\'s own host name, which serves the '
                "status page",
                "give the service a host name of its own",
            )
        key = (route.hostname, route.path)
        if key in taken:
            shown = route.hostname + (route.path if route.path != "/" else "")
            yield Finding(at, f'"{shown}" is already routed to service "{taken[key]}"')
        taken.setdefault(key, name)


def _open_ports(parts: CheckedParts) -> dict[int, str]:
    ports = dict(WEB_PORTS)
    if parts.mail is not None and parts.mail.enabled:
        ports.update(MAIL_PORTS)
    return ports


def _port_rules(parts: CheckedParts) -> Iterator[Finding]:
    open_ports = _open_ports(parts)
    if parts.identity is not None:
        ssh_port = parts.identity.admin.ssh_port
        if ssh_port in open_ports:
            yield Finding(
                ("appliance", "admin", "ssh_port"),
                f"port {ssh_port} is taken by {open_ports[ssh_port]}",
            )
        open_ports.setdefault(ssh_port, "admin SSH")
    if parts.firewall is None:
        return
    seen: dict[tuple[int, str], int] = {}
    for position, rule in enumerate(parts.firewall.allow):
        at = ("firewall", "allow", position)
        if rule.proto == "tcp" and rule.port in open_ports:
            yield Finding(
                (*at, "port"),
                f"port {rule.port}/tcp is always open ({open_ports[rule.port]})",
                "remove this entry",
            )
        key = (rule.port, rule.proto)
        if key in seen:
            yield Finding(
                at, f"port {rule.port}/{rule.proto} is listed twice (also allow["
                f"{parts.position('firewall', 'allow', seen[key])}])"
            )
        seen.setdefault(key, position)


def warning_rules(parts: CheckedParts) -> list[Finding]:
    """What is allowed but risky: said by validate and build, never refused."""
    backup = parts.backup
    if backup is None or backup.repository is None or backup.host_key is not None:
        return []
    return [Finding(
        ("backup", "host_key"),
        "not set: the backup server's SSH host key is trusted on first use. At first boot "
        "whoever answers at the repository's address is believed; with restore: auto, one "
        "saying \"repository does not exist\" makes a replacement box start empty and back "
        "up to it",
        "pin it: backup.host_key: \"ssh-ed25519 AAAA...\" (the server's "
        "/etc/ssh/ssh_host_ed25519_key.pub; arkbox seed prints the key it scans), and give a "
        "box that replaces another backup.restore: required",
    )]


def _backup_rules(parts: CheckedParts) -> Iterator[Finding]:
    backup = parts.backup
    if backup is None:
        return
    if backup.restore == "required" and backup.repository is None:
        yield Finding(
            ("backup", "restore"),
            '"required" needs backup.repository: there is nothing to restore from',
            "add backup.repository, or use restore: auto",
        )
    if backup.repository is not None and backup.passphrase is None:
        yield Finding(
            ("backup", "passphrase"),
            "required with a repository: without it no backup can be restored",
            "e.g. passphrase: {file: secrets/borg-passphrase}",
        )
    kept = backup.retention
    if not (kept.daily or kept.weekly or kept.monthly or kept.yearly):
        yield Finding(
            ("backup", "retention"),
            "keeps no archives: set daily, weekly, monthly or yearly above 0",
        )


def _backup_server_rules(parts: CheckedParts) -> Iterator[Finding]:
    server = parts.backup_server
    if server is None:
        return
    names: dict[str, int] = {}
    for position, client in enumerate(server.clients):
        if client.name in names:
            yield Finding(
                ("backup_server", "clients", position, "name"),
                f'"{client.name}" is listed twice (also clients['
                f'{parts.position("backup_server", "clients", names[client.name])}])',
            )
        names.setdefault(client.name, position)
    yield from _repository_overlaps(parts, server.clients)


def _repository_overlaps(parts: CheckedParts, clients: list[BackupClient]) -> Iterator[Finding]:
    """Paths compared as the directories they name on the server, not as text."""
    dirs = [repository_dir(client.path) for client in clients]  # each valid: checked alone
    for position, (client, where) in enumerate(zip(clients, dirs, strict=True)):
        for earlier in range(position):
            overlap = repository_overlap(where, dirs[earlier])
            if overlap is None:
                continue
            shown = f'"{client.path}"' + (f" ({where})" if client.path != str(where) else "")
            yield Finding(
                ("backup_server", "clients", position, "path"),
                f"{shown} {overlap} the repository of clients["
                f"{parts.position('backup_server', 'clients', earlier)}] ({dirs[earlier]})",
                "each client needs a directory of its own, side by side (./a and ./b, "
                "not ./a and ./a/b)",
            )
            break


def _alert_rules(parts: CheckedParts) -> Iterator[Finding]:
    alerts = parts.alerts
    if alerts is None:
        return
    email = alerts.email
    smtp = email.smtp
    if smtp is not None and (smtp.username is None) != (smtp.password is None):
        yield Finding(("alerts", "email", "smtp"), "give both username and password, or neither",
                      "e.g. password: {file: secrets/alert-smtp-password}")
    if smtp is not None and smtp.security == "none" and smtp.username is not None:
        yield Finding(("alerts", "email", "smtp", "security"),
                      "a password is never sent in plain text: security none takes no username",
                      "use starttls (port 587) or tls (port 465)")
    if not email.enabled or smtp is not None or not email.to:
        return  # a foreign tls.contact_email only turns alert emails off (status says so)
    mail = parts.mail
    if mail is None or not mail.enabled or mail.relay is not None:
        return
    # The box's own server takes mail from the host for its own domains only.
    foreign = [r for r in email.to if r.rpartition("@")[2] not in set(mail.domains)]
    if foreign:
        yield Finding(("alerts", "email", "to"),
                      f'alert emails to "{foreign[0]}" cannot leave the box: its own mail '
                      "server relays for nobody, and there is no mail.relay",
                      "add alerts.email.smtp (a submission server with a login), or send "
                      "alerts to a mailbox in mail.domains")


def _recipes_exist(parts: CheckedParts, known: Collection[str]) -> Iterator[Finding]:
    for name, service in parts.services.items():
        if service.recipe is not None and service.recipe not in known:
            guess = did_you_mean(service.recipe, set(known))
            yield Finding(
                ("services", name, "recipe"),
                f'no image recipe named "{service.recipe}"',
                f'did you mean "{guess}"?' if guess else "recipes: " + ", ".join(sorted(known)),
            )


RULES: tuple[Callable[[CheckedParts], Iterator[Finding]], ...] = (
    _mail_rules,
    _service_rules,
    _route_rules,
    _port_rules,
    _backup_rules,
    _backup_server_rules,
    _alert_rules,
)
