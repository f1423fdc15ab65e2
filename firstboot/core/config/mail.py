"""The `mail` section: the appliance's own mail server (Postfix + Dovecot)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from firstboot.core.config.base import Kind, Section, Text, key
from firstboot.core.config.network import Email, Hostname
from firstboot.core.config.scalars import PasswordHash, Port, RelayUser, Size
from firstboot.core.config.secrets import SecretRef


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


AliasTargets = Annotated[
    list[Email],
    Field(min_length=1),
    BeforeValidator(_one_or_many, json_schema_input_type=Email | list[Email]),
    Kind("e-mail address or list of them"),
]
DkimSelector = Annotated[str, Text(
    "DNS label", r"^[a-z0-9][a-z0-9-]{0,62}$",
    "must be a DNS label (lower-case letters, digits, dashes)")]


class Mailbox(Section):
    """A mailbox users log in to over IMAP and SMTP submission."""

    address: Email = key(
        "The mailbox's address; its domain must be one of mail.domains.",
        example="admin@arkbox.test")
    password: SecretRef | None = key(
        "Where the login password is kept; it is hashed at first boot. Give this or "
        "password_hash.",
        default=None, example={"file": "secrets/admin-mail-password"})
    password_hash: PasswordHash | None = key(
        "The password as a Dovecot hash (doveadm pw -s SHA512-CRYPT). Give this or password.",
        default=None, example="{SHA512-CRYPT}$6$rounds=5000$salt$hash")
    quota: Size | None = key(
        "Storage quota of the mailbox; no quota when absent.",
        default=None, example="2G")


class Relay(Section):
    """A smarthost all outbound mail goes through (for VPS providers that block port 25)."""

    host: Hostname = key("The relay's host name.", example="smtp.relay.example")
    port: Port = key(
        "The relay's submission port (STARTTLS on 587, implicit TLS on 465).",
        default=587, example=587)
    username: RelayUser = key(
        "The user name to authenticate with at the relay.",
        example="arkbox@relay.example")
    password: SecretRef = key(
        "Where the relay password is kept.",
        example={"env": "ARKBOX_RELAY_PASSWORD"})


class Mail(Section):
    """The mail server: SMTP (25, 465, 587) and IMAP (993), DKIM-signed, never an open relay."""

    enabled: bool = key(
        "Run the mail server. When the mail section is absent, mail is off.",
        default=True, example=True)
    hostname: Hostname | None = key(
        "The mail server's name (MX target, TLS certificate, HELO). Required when mail is "
        "enabled.",
        default=None, example="mail.arkbox.test")
    domains: list[Hostname] = key(
        "Domains this server receives mail for. Required when mail is enabled.",
        default_factory=list, example=["arkbox.test"])
    mailboxes: list[Mailbox] = key(
        "The mailboxes, each in one of the domains.",
        default_factory=list,
        example=[{"address": "admin@arkbox.test", "password": {"file": "secrets/admin"}}])
    aliases: dict[Email, AliasTargets] = key(
        "Addresses delivered elsewhere: alias -> one address or a list. A target in one of the "
        "domains must be a mailbox or another alias.",
        default_factory=dict, example={"postmaster@arkbox.test": "admin@arkbox.test"})
    relay: Relay | None = key(
        "Send outbound mail through this smarthost instead of directly.",
        default=None,
        example={"host": "smtp.relay.example", "username": "u", "password": {"env": "PW"}})
    dmarc_report_to: Email | None = key(
        "Address for DMARC aggregate reports (rua) in the published DMARC record.",
        default=None, example="postmaster@arkbox.test")
    dkim_selector: DkimSelector = key(
        "DKIM selector: the DNS record is SELECTOR._domainkey.DOMAIN.",
        default="arkbox", example="arkbox")
    max_message_size: Size = key(
        "Largest message accepted, attachments included.",
        default="25M", example="25M")
