"""The `alerts` section: who hears of a failure (email, webhooks, pings), and when.

docs/alerts.md says what raises an alert and how delivery works; the thresholds
here default to the values of issue #16.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, model_validator

from firstboot.core.config.base import ONE_LINE, Bounded, Kind, Section, key, refuse
from firstboot.core.config.network import DNS_NAME, Email, HttpUrl
from firstboot.core.config.scalars import Period, Port, RelayUser
from firstboot.core.config.secrets import SecretRef

Percent = Annotated[int, Bounded("percent", 1, 100)]


def _check_server(text: str) -> str:
    if text == "localhost" or re.fullmatch(DNS_NAME, text):
        return text
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise refuse(f'must be a host name or an IP address, got "{text}"') from None
    return text


# A relay on the local network is often known by its address only.
ServerName = Annotated[str, AfterValidator(_check_server), ONE_LINE,
                       Kind("host name or IP address")]


class Endpoint(Section):
    """A URL arkbox POSTs to: written out, or kept as a secret when it carries a token."""

    url: HttpUrl | None = key(
        "The URL, when it holds nothing secret. Give this or url_secret.",
        default=None, example="https://ntfy.sh/arkbox-alerts")
    url_secret: SecretRef | None = key(
        "Where the URL is kept, when it carries a token (healthchecks.io ping URLs, chat "
        "webhooks): it is then never written in the image, the logs or status.",
        default=None, example={"file": "secrets/alert-webhook-url"})

    @model_validator(mode="after")
    def _exactly_one(self) -> Endpoint:
        if (self.url is None) == (self.url_secret is None):
            raise refuse("give exactly one of url or url_secret",
                         "e.g. url: https://ntfy.sh/TOPIC, or url_secret: "
                         "{file: secrets/webhook-url}")
        return self


class Smtp(Section):
    """An SMTP submission server alert emails are sent through, with its login."""

    host: ServerName = key("The server's host name or address.", example="smtp.example.org")
    port: Port = key(
        "Its port: 587 (STARTTLS) or 465 (TLS from the start).",
        default=587, example=587)
    security: Literal["starttls", "tls", "none"] = key(
        "starttls upgrades the connection (port 587); tls is TLS from the start (port 465); "
        "none is plain text, for a relay on the local network, and never with a username.",
        default="starttls", example="starttls")
    username: RelayUser | None = key(
        "The login; no login when absent.",
        default=None, example="alerts@example.org")
    password: SecretRef | None = key(
        "Where the login's password is kept. Required with username.",
        default=None, example={"file": "secrets/alert-smtp-password"})


class EmailAlerts(Section):
    """Alert emails to the administrator. The route: alerts.email.smtp when given, else the
    box's own mail server (sendmail in its container) when mail is on, else mail.relay."""

    enabled: bool = key(
        "Send alert emails (when a recipient and a route exist).",
        default=True, example=True)
    to: list[Email] = key(
        "Recipients; tls.contact_email when empty.",
        default_factory=list, example=["admin@arkbox.test"])
    sender: Email | None = key(
        "The From address; arkbox@ and the appliance's host name when absent.",
        default=None, example="arkbox@arkbox.test")
    smtp: Smtp | None = key(
        "Send through this submission server instead of the box's own mail server or "
        "mail.relay.",
        default=None,
        example={"host": "smtp.example.org", "username": "alerts@example.org",
                 "password": {"file": "secrets/alert-smtp-password"}})


class Ping(Section):
    """Dead man's switch URLs (healthchecks.io, ntfy, Uptime Kuma push): POSTed after each
    backup run, so a service outside the box notices when backups stop altogether."""

    success: Endpoint | None = key(
        "POSTed after each successful backup.",
        default=None, example={"url_secret": {"file": "secrets/healthchecks-ping-url"}})
    fail: Endpoint | None = key(
        "POSTed after each failed backup (healthchecks.io: the ping URL + /fail).",
        default=None, example={"url_secret": {"file": "secrets/healthchecks-fail-url"}})


class Thresholds(Section):
    """When a state becomes an alert."""

    backup_age: Period = key(
        "Alert when the last successful backup is older than this.",
        default="26h", example="26h")
    certificate_days_left: Period = key(
        "Alert when the certificate has less than this left (renewal starts at 30 days).",
        default="14d", example="14d")
    fallback_certificate: Period = key(
        "Alert when the self-signed fallback is still served this long after first boot.",
        default="24h", example="24h")
    service_unhealthy: Period = key(
        "Alert when a service has been unhealthy (or stopped) this long.",
        default="5m", example="5m")
    disk_percent: Percent = key(
        "Alert when space or inode use of / or /srv is above this.",
        default=85, example=90)
    reboot_pending: Period = key(
        "Alert when the host has needed a reboot (/run/reboot-required) this long.",
        default="7d", example="7d")


class Alerts(Section):
    """Alerts: a failure that matters is sent once when it starts and once when it clears."""

    email: EmailAlerts = key(
        "Alert emails to the administrator.",
        default_factory=EmailAlerts, example={"to": ["admin@arkbox.test"]})
    webhooks: list[Endpoint] = key(
        "URLs each alert is POSTed to as JSON (docs/alerts.md shows the body).",
        default_factory=list, example=[{"url": "https://hooks.example.org/arkbox"}])
    ping: Ping = key(
        "URLs POSTed after each backup: one on success, one on failure.",
        default_factory=Ping,
        example={"success": {"url_secret": {"file": "secrets/healthchecks-ping-url"}}})
    thresholds: Thresholds = key(
        "When a state becomes an alert.",
        default_factory=Thresholds, example={"disk_percent": 90})
    check_every: Period = key(
        "How often `arkbox-installer alert check` runs (its systemd timer).",
        default="5m", example="5m")
    digest: Literal["daily", "off"] = key(
        "daily: once an alert has fired for a day, one email a day listing what still "
        "fires (a reminder); off: each alert only when it starts and when it clears.",
        default="off", example="daily")
