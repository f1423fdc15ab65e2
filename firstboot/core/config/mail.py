"""The `mail` section: the appliance's own mail server (Postfix + Dovecot)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from firstboot.core.config.base import Bounded, Kind, Section, Text, key, refuse
from firstboot.core.config.network import Cidr, Email, Hostname
from firstboot.core.config.scalars import Duration, PasswordHash, Port, RelayUser, Size
from firstboot.core.config.secrets import SecretRef


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


AliasTargets = Annotated[
    list[Email],
    Field(min_length=1),
    BeforeValidator(_one_or_many, json_schema_input_type=Email | list[Email]),
    Kind("e-mail address or list of them"),
]
# A DNSBL's answers that count, in Postfix's filter syntax: 127.0.0.2 or 127.0.0.[2..11]
# or 127.0.[0..255].[1;3].
DnsblReplies = Annotated[str, Text(
    "DNSBL answer filter",
    r"^[0-9]{1,3}(?:\.(?:[0-9]{1,3}|\[[0-9]{1,3}(?:(?:\.\.|;)[0-9]{1,3})*\])){3}$",
    'must be an address like "127.0.0.2", or with ranges like "127.0.0.[2..11]"')]
DnsblWeight = Annotated[int, Bounded("integer", -100, 100)]
DnsblThreshold = Annotated[int, Bounded("integer", 1, 100)]
LoginFailures = Annotated[int, Bounded("integer", 2, 1000)]
DkimSelector = Annotated[str, Text(
    "DNS label", r"^[a-z0-9][a-z0-9-]{0,62}$",
    "must be a DNS label (lower-case letters, digits, dashes)")]


SpamScore = Annotated[float, Bounded("score", 1, 1000)]


class Spam(Section):
    """rspamd scores mail arriving on port 25 (SPF, DKIM, DMARC, ARC, Bayes, DNS lists):
    above junk_score it is filed in Junk, above reject_score it is refused. Moving a
    message into Junk or out of it teaches the filter."""

    enabled: bool = key(
        "Filter mail arriving from the world. Off: it is delivered as it comes.",
        default=True, example=True)
    junk_score: SpamScore = key(
        "From this score on, a message is delivered into the Junk folder.",
        default=6, example=6)
    reject_score: SpamScore = key(
        "From this score on, a message is refused (the sender is told). Above junk_score.",
        default=15, example=15)

    @model_validator(mode="after")
    def _reject_above_junk(self) -> Spam:
        if self.reject_score <= self.junk_score:
            raise refuse(f"reject_score ({self.reject_score:g}) must be above junk_score "
                         f"({self.junk_score:g})",
                         "e.g. junk_score: 6 and reject_score: 15 (the defaults)")
        return self


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


class Dnsbl(Section):
    """A DNS blocklist postscreen asks about each new client on port 25."""

    zone: Hostname = key("The list's DNS zone.", example="zen.spamhaus.org")
    replies: DnsblReplies | None = key(
        "Only these answers count (a list's own codes for 'listed'); any answer when absent.",
        default=None, example="127.0.0.[2..11]")
    weight: DnsblWeight = key(
        "What a listing adds to the client's score (negative for an allowlist).",
        default=1, example=3)


class LoginBan(Section):
    """Banning an address that keeps failing to log in (IMAP 993, SMTP 465/587)."""

    enabled: bool = key(
        "Ban addresses with too many failed logins from all mail ports.",
        default=True, example=True)
    max_failures: LoginFailures = key(
        "Failed logins from one address within `window` that ban it.",
        default=10, example=10)
    window: Duration = key(
        "How far back failed logins are counted.", default="10m", example="10m")
    ban_time: Duration = key(
        "How long a ban lasts (`arkbox-installer mail unban ADDRESS` ends it early).",
        default="1h", example="1h")
    exempt: list[Cidr] = key(
        "Networks never banned (an office whose users share one address).",
        default_factory=list, example=["192.0.2.0/24"])


DEFAULT_DNSBLS = [
    Dnsbl(zone="zen.spamhaus.org", replies="127.0.0.[2..11]", weight=3),
    Dnsbl(zone="bl.spamcop.net", replies="127.0.0.2", weight=2),
    Dnsbl(zone="list.dnswl.org", replies="127.0.[0..255].[1..3]", weight=-2),
]


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
    dnsbls: list[Dnsbl] = key(
        "DNS blocklists postscreen checks clients on port 25 against; an empty list turns "
        "the check off. A list that does not answer in time adds nothing: it never blocks "
        "mail.",
        default_factory=lambda: list(DEFAULT_DNSBLS),
        example=[{"zone": "zen.spamhaus.org", "replies": "127.0.0.[2..11]", "weight": 3}])
    dnsbl_threshold: DnsblThreshold = key(
        "The score (sum of the weights of the lists naming a client) at which postscreen "
        "refuses its mail (550).",
        default=3, example=3)
    login_ban: LoginBan = key(
        "Banning addresses that keep failing to log in.",
        default_factory=LoginBan, example={"max_failures": 10, "ban_time": "1h"})
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
    spam: Spam = key(
        "Spam filtering of mail from the world (rspamd), with thresholds.",
        default_factory=Spam, example={"junk_score": 6, "reject_score": 15})
