"""Secrets everyone knows: the development values published in config/secrets/.

A box built for a real domain with one of them would ship with a password or key that
anyone can read in this repository, so the build and `arkbox seed` refuse them unless
the domain is under `.test` (which cannot be reached on the Internet) or the operator
says `--allow-published-secrets`. The values are kept as sha256 digests, not read from
config/secrets/ at run time: an installed arkbox may not have that directory.
tests/unit/test_published_secrets.py fails when this list and config/secrets/ disagree.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from firstboot.core.config import Appliance
from firstboot.core.errors import BadInputError

log = logging.getLogger("arkbox.published")

OVERRIDE_FLAG = "--allow-published-secrets"

# config/secrets/NAME -> sha256 of its value as a secret reference reads it (one trailing
# newline dropped, see SecretRef.resolve).
PUBLISHED_SECRET_SHA256: dict[str, str] = {
    "admin-mail-password": "d89a1cd019b0e5943c9c5c91108460e439d59c5aefaca3b39bebc286c6b0292d",
    "backup-ssh-key": "204b00ade05d3bce13feab12b3f3203804dc874a1c5239aec6b43cba6e86ac6f",
    "borg-passphrase": "126379ed785325beb3dca821963d58073190f574b86c9db3e14542c523a7c033",
    "radicale-users": "c640311aab4a2d50a06dd283a87bc2b1f9a75cf72d4c7289f5e4d199d4a5a840",
    "status-page-password": "8b419c8a0d0cf06a7c0e3feb90503f46066669a0bc6f84a40177e351bf5ff638",
    "webmail-db-password": "b473ee256c689d5460b26859a5c60f26fcba18824ce788ffce54599caf3082de",
    "webmail-des-key": "8a18e3e1981b4fcf75e0b76e7bae71f9b48c5c6a472f4905633803237b9da126",
}
# config/secrets/NAME.pub -> sha256 of the key blob (the base64 field, decoded): a backup
# server that authorizes it lets anyone with this repository write to the repository.
PUBLISHED_PUBLIC_KEY_SHA256: dict[str, str] = {
    "backup-ssh-key.pub": "91e31c0349b291a1ae7572c88b66f75833c3ca846fcf4c2de9fa9a5d5be78f0e",
}

FIX = {
    "backup-ssh-key": "ssh-keygen -t ed25519 -N '' -C 'backup' -f secrets/backup-ssh-key",
    "backup-ssh-key.pub": "authorize the appliance's own backup key (the .pub next to its "
                          "backup.ssh_key) instead",
    "radicale-users": "htpasswd -B -c secrets/radicale-users admin",
    # Roundcube wants exactly 24 characters: 18 random bytes in base64.
    "webmail-des-key": "(umask 077; openssl rand -base64 18 > secrets/webmail-des-key)",
}
DEFAULT_FIX = "(umask 077; openssl rand -base64 32 > secrets/{name})"


@dataclass(frozen=True)
class Finding:
    where: str  # the secret's config path, e.g. backup.passphrase
    published_as: str  # the file in config/secrets/ whose value it is


def value_digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def published_name(value: str) -> str | None:
    """The config/secrets/ file holding `value`, when it is a published one."""
    digest = value_digest(value.removesuffix("\n").removesuffix("\r"))
    return next((name for name, known in PUBLISHED_SECRET_SHA256.items() if known == digest),
                None)


def published_public_key(line: str) -> str | None:
    """The config/secrets/ file holding this OpenSSH public key (comment ignored), if any."""
    fields = line.split()
    try:
        blob = base64.b64decode(fields[1], validate=True) if len(fields) > 1 else b""
    except binascii.Error:
        return None
    digest = hashlib.sha256(blob).hexdigest()
    return next((name for name, known in PUBLISHED_PUBLIC_KEY_SHA256.items() if known == digest),
                None)


def is_test_domain(config: Appliance) -> bool:
    """`.test` is reserved (RFC 6761): such a box cannot be reached from the Internet."""
    domain = config.appliance.domain.lower().rstrip(".")
    return domain == "test" or domain.endswith(".test")


def authorized_published_keys(config: Appliance) -> list[Finding]:
    """Backup-server clients whose key is a published one."""
    server = config.backup_server
    findings = []
    for index, client in enumerate(server.clients if server is not None else []):
        name = published_public_key(client.public_key)
        if name is not None:
            findings.append(Finding(f"backup_server.clients[{index}].public_key", name))
    return findings


def refuse_published(config: Appliance, findings: Iterable[Finding], *,
                     allow: bool) -> None:
    """Raise BadInputError naming each published secret, unless allowed (.test or the flag).

    The message names the config, each secret's path and the file it was copied from, never
    the value itself.
    """
    found = list(findings)
    if not found:
        return
    source = config.source_path or "the config"
    listed = ", ".join(f"{f.where} (= config/secrets/{f.published_as})" for f in found)
    if allow:
        log.warning("%s: %s: PUBLISHED in the arkbox repository, anyone can read them; "
                    "allowed by %s. Never put this box on the Internet.",
                    source, listed, OVERRIDE_FLAG)
        return
    if is_test_domain(config):  # the development default: cannot be reached anyway
        log.info("%s: development secrets, allowed for the .test domain %s",
                 source, config.appliance.domain)
        return
    fixes = sorted({FIX.get(f.published_as, DEFAULT_FIX).format(name=f.published_as)
                    for f in found})
    raise BadInputError(
        f"{source}: {listed}: a development value published in the arkbox repository, "
        f"anyone can read it; refused for domain {config.appliance.domain}",
        hint="make your own secret and point the config at it: " + "; ".join(fixes)
        + f" (for a throw-away test box only: {OVERRIDE_FLAG})",
    )
