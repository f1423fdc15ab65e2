"""Network-facing types of the config: DNS names, addresses, URLs, networks, SSH keys."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, Field

from firstboot.core.config.base import ONE_LINE, Kind, Text, explain, refuse

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = rf"(?:{_LABEL}\.)+[a-z](?:[a-z0-9-]{{0,61}}[a-z0-9])?"
DNS_NAME = _DNS_NAME


def _check_dns_length(name: str) -> str:
    if len(name) > 253:
        raise refuse(f"must be at most 253 characters long, got {len(name)}")
    return name


Hostname = Annotated[str, Text(
    "DNS name", rf"^{_DNS_NAME}$", 'must be a fully-qualified DNS name like "wiki.arkbox.test"',
    "use lower-case letters, digits, dashes and at least one dot"),
    AfterValidator(_check_dns_length)]
Email = Annotated[str, Text(
    "e-mail address", rf"^[A-Za-z0-9._%+-]+@{_DNS_NAME}$",
    'must be an e-mail address like "admin@arkbox.test"')]
HttpUrl = Annotated[str, Text(
    "http(s) URL", r"^https?://[^\s/]+(?:/\S*)?$",
    'must be an http:// or https:// URL like "http://deb.debian.org/debian"')]
HttpsUrl = Annotated[str, Text(
    "https URL", r"^https://[^\s/]+(?:/\S*)?$", "must be an https:// URL")]
RepositoryUrl = Annotated[str, Text(
    "borg repository URL",
    r"^ssh://[a-z_][a-z0-9_-]*@[A-Za-z0-9.:\[\]-]+?(?::[0-9]{1,5})?/\S+$",
    'must look like "ssh://USER@HOST:PORT/PATH" (e.g. ssh://borg@backup.arkbox.test:22/./arkbox)')]
ImageReference = Annotated[str, Text(
    "image reference",
    r"^(?:[a-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$",
    'must be an image reference with a tag or digest, like "nextcloud:29.0"')]


def _check_cidr(text: str) -> str:
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            fixed = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise refuse(
                f'must be an IP network like "203.0.113.0/24" or "::/0", got "{text}"'
            ) from None
        raise refuse(f'"{text}" has host bits set — did you mean "{fixed}"?') from None
    return text


Cidr = Annotated[str, AfterValidator(_check_cidr), ONE_LINE, Kind("IP network (CIDR)")]

SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


class NotAnSshKey(ValueError):
    """A text that is no OpenSSH public key line; `hint` says what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class SshKeyLine:
    """The fields of an OpenSSH public key line."""

    key_type: str
    blob: str  # base64
    comment: str  # whitespace runs made single spaces; may be empty

    def line(self) -> str:
        """The key written anew from its fields: no option or second line can ride along."""
        return f"{self.key_type} {self.blob} {self.comment}".rstrip()


def split_ssh_public_key(text: str) -> SshKeyLine:
    """Parse "TYPE BASE64 [COMMENT]"; raise NotAnSshKey when `text` is no such line."""
    fields = text.split(maxsplit=2)
    if len(fields) < 2 or fields[0] not in SSH_KEY_TYPES:
        raise NotAnSshKey(
            'must be one OpenSSH public key line like "ssh-ed25519 AAAA... ops@laptop"',
            "copy the line from your ~/.ssh/id_ed25519.pub (the .pub file, never the key itself)",
        )
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except binascii.Error:
        raise NotAnSshKey("the key data (second field) is not valid base64") from None
    declared = fields[0].encode()
    if blob[4 : 4 + len(declared)] != declared:
        raise NotAnSshKey(f"the key data is not of type {fields[0]} (truncated or mismatched?)")
    comment = " ".join(fields[2].split()) if len(fields) > 2 else ""
    return SshKeyLine(fields[0], fields[1], comment)


def _check_ssh_public_key(text: str) -> str:
    try:
        split_ssh_public_key(text)
    except NotAnSshKey as err:
        raise refuse(str(err), err.hint) from None
    return text


SshPublicKey = Annotated[
    str, AfterValidator(_check_ssh_public_key), ONE_LINE, Kind("SSH public key")]
SshKeys = Annotated[
    list[SshPublicKey],
    Field(min_length=1),
    explain(
        "add the line of your ~/.ssh/id_ed25519.pub",
        too_short="at least one SSH public key is needed, or nobody can log in",
    ),
    Kind("list of SSH public keys"),
]
