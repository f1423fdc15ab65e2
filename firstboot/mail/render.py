"""The mail container's configuration files, rendered from the config (pure: no I/O).

Everything lands in one directory tree the container mounts read-only at
/etc/arkbox-mail: postfix/ (main.cf, master.cf, texthash maps), dovecot/
(dovecot.conf, the users file with password hashes) and opendkim/ (config, key
table, signing table, the key). texthash maps need no `postmap`: Postfix reads
them as they are, and a container restart or `postfix reload` picks up changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from firstboot.containers.nginx import INTERMEDIATE_CIPHERS
from firstboot.core.config.base import is_one_line
from firstboot.core.config.mail import Dnsbl, Mail
from firstboot.core.config.scalars import size_bytes
from firstboot.core.errors import BadInputError
from firstboot.core.render import render

CONF_MOUNT = "/etc/arkbox-mail"  # where the container sees the rendered tree
TLS_MOUNT = "/etc/mail-tls"  # where it sees /srv/arkbox/tls/live
# Fixed ids of the mail image (image/recipes/mail/Dockerfile).
POSTFIX_UID = 230
DOVECOT_GID = 232
OPENDKIM_UID = 234
VMAIL_UID = 235
DKIM_KEY = "opendkim/keys/dkim.private"
ROOT = (0, 0)
# The ports the container serves, by what they are for (published as they are, see
# container.MAIL_PORTS; mail clients are told of the last three: autoconfig.py).
SMTP_PORT = 25  # mail from the world, STARTTLS offered
SUBMISSIONS_PORT = 465  # submission, implicit TLS (Postfix's `submissions` service)
SUBMISSION_PORT = 587  # submission, STARTTLS required (Postfix's `submission` service)
IMAPS_PORT = 993  # IMAP, implicit TLS (Dovecot's imaps listener)
# rspamd in the mail image (image/recipes/mail/rspamd*): its milter, the image's copy of the
# Sieve scripts, and its uid (the state volume). Its controller's address (rspamc, learning,
# health) is in names.py.
RSPAMD_MILTER = "127.0.0.1:11332"
SIEVE_DIR = "/run/mail/sieve"
SIEVE_PROGRAMS = "/usr/local/libexec/arkbox-sieve"
RSPAMD_UID = 236
SPAM_ACTIONS = "rspamd/actions.conf"


@dataclass(frozen=True)
class MailFile:
    content: str
    mode: int
    owner: tuple[int, int] = ROOT


# Directories of the tree: who may enter them (the keys and hashes are not for all).
DIRECTORIES: dict[str, tuple[int, tuple[int, int]]] = {
    "": (0o755, ROOT),
    "postfix": (0o755, ROOT),  # Postfix wants its config directory root's
    "dovecot": (0o750, (0, DOVECOT_GID)),
    "opendkim": (0o750, (0, OPENDKIM_UID)),
    "opendkim/keys": (0o750, (0, OPENDKIM_UID)),
    "rspamd": (0o755, ROOT),
}


@dataclass(frozen=True)
class UserEntry:
    address: str
    password_hash: str
    quota: str | None


def dovecot_size(size: str) -> str:
    """A config size as Dovecot takes it (bytes with a unit it knows)."""
    value = size_bytes(size)
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("k", 1024)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return f"{value}B"


def users_file(users: list[UserEntry]) -> str:
    """Dovecot passwd-file: user:password:uid:gid:gecos:home:shell:extra fields.

    The file is both passdb and userdb; Dovecot 2.4 takes a userdb setting from it
    only with the userdb_ prefix (a bare quota_storage_size is ignored)."""
    lines = []
    for user in sorted(users, key=lambda u: u.address):
        extra = f"userdb_quota_storage_size={dovecot_size(user.quota)}" if user.quota else ""
        lines.append(f"{user.address.lower()}:{user.password_hash}::::::{extra}".rstrip(":"))
    return "\n".join(lines) + "\n" if lines else ""


def dnsbl_site(dnsbl: Dnsbl) -> str:
    """One entry of postscreen_dnsbl_sites: zone[=replies][*weight]."""
    site = dnsbl.zone.lower() + (f"={dnsbl.replies}" if dnsbl.replies else "")
    return site + (f"*{dnsbl.weight}" if dnsbl.weight != 1 else "")


def _table(rows: list[tuple[str, str]]) -> str:
    return "".join(f"{key} {value}\n" for key, value in rows)


def sender_logins(mail: Mail) -> dict[str, list[str]]:
    """Envelope sender -> the logins that may use it: a mailbox itself, and an alias
    the mailboxes it delivers to (so admin@ can answer as postmaster@)."""
    mailboxes = {box.address.lower() for box in mail.mailboxes}
    owners: dict[str, list[str]] = {address: [address] for address in sorted(mailboxes)}
    for alias, targets in sorted(mail.aliases.items()):
        logins = sorted({t.lower() for t in targets} & mailboxes)
        if logins:
            owners[alias.lower()] = logins
    return owners


def render_mail_files(
    mail: Mail,
    users: list[UserEntry],
    dkim_key_pem: bytes,
    relay_password: str | None = None,
) -> dict[str, MailFile]:
    """Relative path under the mounted tree -> file. `users` carry hashes, never passwords."""
    assert mail.hostname is not None  # the config requires it when mail is enabled
    conf = CONF_MOUNT
    relay = mail.relay
    spam = mail.spam.enabled
    files = {
        "postfix/main.cf": MailFile(render(
            "mail/main.cf.j2", conf=conf, hostname=mail.hostname, domains=mail.domains,
            message_size_limit=size_bytes(mail.max_message_size),
            ciphers=INTERMEDIATE_CIPHERS, relay=relay, spam=spam,
            rspamd_milter=RSPAMD_MILTER, dnsbls=[dnsbl_site(d) for d in mail.dnsbls],
            dnsbl_threshold=mail.dnsbl_threshold), 0o644),
        "postfix/master.cf": MailFile(render(
            "mail/master.cf.j2", submission=[("submission", False), ("submissions", True)]),
            0o644),
        "postfix/domains": MailFile(_table([(d.lower(), "OK") for d in mail.domains]), 0o644),
        "postfix/mailboxes": MailFile(_table(
            [(b.address.lower(), "OK") for b in sorted(mail.mailboxes, key=lambda b: b.address)]),
            0o644),
        "postfix/aliases": MailFile(_table(
            [(alias.lower(), ", ".join(t.lower() for t in targets))
             for alias, targets in sorted(mail.aliases.items())]), 0o644),
        "postfix/senders": MailFile(_table(
            [(sender, ", ".join(logins)) for sender, logins in sender_logins(mail).items()]),
            0o644),
        "dovecot/dovecot.conf": MailFile(render(
            "mail/dovecot.conf.j2", conf=conf, ciphers=INTERMEDIATE_CIPHERS,
            imaps_port=IMAPS_PORT, spam=spam, sieve_dir=SIEVE_DIR,
            sieve_programs=SIEVE_PROGRAMS), 0o644),
        "dovecot/users": MailFile(users_file(users), 0o640, (0, DOVECOT_GID)),
        "opendkim/opendkim.conf": MailFile(render("mail/opendkim.conf.j2", conf=conf,
                                                   spam=spam), 0o644),
        "opendkim/KeyTable": MailFile(_table(
            [(f"{mail.dkim_selector}._domainkey.{d.lower()}",
              f"{d.lower()}:{mail.dkim_selector}:{conf}/{DKIM_KEY}") for d in mail.domains]),
            0o644),
        "opendkim/SigningTable": MailFile(_table(
            [(f"*@{d.lower()}", f"{mail.dkim_selector}._domainkey.{d.lower()}")
             for d in mail.domains]), 0o644),
        # OpenDKIM refuses a key others could read; it reads it as its own user.
        DKIM_KEY: MailFile(dkim_key_pem.decode(), 0o400, (OPENDKIM_UID, OPENDKIM_UID)),
    }
    if spam:  # its presence also tells the image's entrypoint to run rspamd
        files[SPAM_ACTIONS] = MailFile(spam_actions(mail), 0o644)
    if relay is not None and relay_password is not None:
        files["postfix/relay_password"] = MailFile(
            f"[{relay.host}]:{relay.port} {relay.username}:{_one_line_secret(relay_password)}\n",
            0o600)
    return files


def spam_actions(mail: Mail) -> str:
    """rspamd's action thresholds (included by the image's local.d/actions.conf)."""
    return ("# arkbox mail: mail.spam of the appliance config, rendered by the `mail` step.\n"
            f"add_header = {mail.spam.junk_score:g};\n"
            f"reject = {mail.spam.reject_score:g};\n")


def _one_line_secret(password: str) -> str:
    # A second line would be a second entry of the map. Never show the secret.
    if not is_one_line(password):
        raise BadInputError(
            "the relay password (mail.relay.password) holds a line break or a control "
            "character: it cannot go into Postfix's password map",
            hint="write the password on one line in its secret file (one trailing newline "
                 "is ignored)")
    return password
