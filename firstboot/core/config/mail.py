"""The `mail` section: the appliance's own mail server (Postfix + Dovecot)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from firstboot.core.config.base import Kind, Section, Text
from firstboot.core.config.network import Email, Hostname
from firstboot.core.config.scalars import PasswordHash, Port, Size
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

    address: Email = Field(
        description="The mailbox's address; its domain must be one of mail.domains.",
        examples=["admin@arkbox.test"],
    )
    password: SecretRef | None = Field(
        default=None,
        description="Where the login password is kept; it is hashed at first boot. "
        "Give this or password_hash.",
        examples=[{"file": "secrets/admin-mail-password"}],
    )
    password_hash: PasswordHash | None = Field(
        default=None,
        description="The password as a Dovecot hash (doveadm pw -s SHA512-CRYPT). "
        "Give this or password.",
        examples=["{SHA512-CRYPT}$6$rounds=5000$salt$hash"],
    )
    quota: Size | None = Field(
        default=None,
        description="Storage quota of the mailbox; no quota when absent.",
        examples=["2G"],
    )


class Relay(Section):
    """A smarthost all outbound mail goes through (for VPS providers that block port 25)."""

    host: Hostname = Field(description="The relay's host name.", examples=["smtp.relay.example"])
    port: Port = Field(
        default=587,
        description="The relay's submission port (STARTTLS on 587, implicit TLS on 465).",
        examples=[587],
    )
    username: str = Field(
        min_length=1,
        description="The user name to authenticate with at the relay.",
        examples=["arkbox@relay.example"],
    )
    password: SecretRef = Field(
        description="Where the relay password is kept.",
        examples=[{"env": "ARKBOX_RELAY_PASSWORD"}],
    )


class Mail(Section):
    """The mail server: SMTP (25, 465, 587) and IMAP (993), DKIM-signed, never an open relay."""

    enabled: bool = Field(
        default=True,
        description="Run the mail server. When the mail section is absent, mail is off.",
        examples=[True],
    )
    hostname: Hostname | None = Field(
        default=None,
        description="The mail server's name (MX target, TLS certificate, HELO). "
        "Required when mail is enabled.",
        examples=["mail.arkbox.test"],
    )
    domains: list[Hostname] = Field(
        default_factory=list,
        description="Domains this server receives mail for. Required when mail is enabled.",
        examples=[["arkbox.test"]],
    )
    mailboxes: list[Mailbox] = Field(
        default_factory=list,
        description="The mailboxes, each in one of the domains.",
        examples=[[{"address": "admin@arkbox.test", "password": {"file": "secrets/admin"}}]],
    )
    aliases: dict[Email, AliasTargets] = Field(
        default_factory=dict,
        description="Addresses delivered elsewhere: alias -> one address or a list. A target "
        "in one of the domains must be a mailbox or another alias.",
        examples=[{"postmaster@arkbox.test": "admin@arkbox.test"}],
    )
    relay: Relay | None = Field(
        default=None,
        description="Send outbound mail through this smarthost instead of directly.",
        examples=[{"host": "smtp.relay.example", "username": "u", "password": {"env": "PW"}}],
    )
    dmarc_report_to: Email | None = Field(
        default=None,
        description="Address for DMARC aggregate reports (rua) in the published DMARC record.",
        examples=["postmaster@arkbox.test"],
    )
    dkim_selector: DkimSelector = Field(
        default="arkbox",
        description="DKIM selector: the DNS record is SELECTOR._domainkey.DOMAIN.",
        examples=["arkbox"],
    )
    max_message_size: Size = Field(
        default="25M",
        description="Largest message accepted, attachments included.",
        examples=["25M"],
    )
