"""Where alerts go, from the config: the email route, each webhook, the backup pings.

A destination is named ("email", "webhook 1", "ping success") in the state and in
status; its `shown` form never holds a secret (a URL is cut to its host).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from firstboot.core.config import Appliance, SecretRef, SecretUnavailable
from firstboot.core.config.alerts import Endpoint

# The box's own Postfix: a message is handed to sendmail inside the mail container (its
# pickup queue), not to port 25. Port 25 sees the engine's gateway address, not a local
# client, so the sender's domain would have to resolve in DNS; local injection needs no
# network and passes no client restrictions, yet goes through cleanup and delivery.
LOCAL_MAIL_CONTAINER = "arkbox-mail"
LOCAL_HOST = "local"  # EmailRoute.host of the own server: shown as "via arkbox-mail"
ALERT_KINDS = frozenset({"firing", "resolved", "test", "digest"})


@dataclass(frozen=True)
class EmailRoute:
    host: str
    port: int
    security: str  # none | starttls | tls
    username: str | None
    password: SecretRef | None
    sender: str
    recipients: tuple[str, ...]
    helo: str

    @property
    def local(self) -> bool:
        return self.host == LOCAL_HOST

    @property
    def shown(self) -> str:
        return f"sendmail in {LOCAL_MAIL_CONTAINER}" if self.local else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Destination:
    name: str
    kind: str  # email | webhook | ping
    shown: str  # safe to print and log
    events: frozenset[str]  # the event kinds it takes
    route: EmailRoute | None = None
    url: str | None = field(default=None, repr=False)  # secret when from url_secret
    problem: str | None = None  # why it cannot be used (a secret is missing)


def shown_url(url: str) -> str:
    """scheme://host/… : enough to recognise, never the path or query that hold tokens."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def _endpoint(config: Appliance, name: str, kind: str, events: frozenset[str],
              endpoint: Endpoint) -> Destination:
    if endpoint.url is not None:
        return Destination(name, kind, shown_url(endpoint.url), events, url=endpoint.url)
    assert endpoint.url_secret is not None
    try:
        url = config.secret(endpoint.url_secret).strip()
    except SecretUnavailable as err:
        return Destination(name, kind, f"{endpoint.url_secret}", events,
                           problem=f"its URL is unavailable: {err.message}")
    return Destination(name, kind, shown_url(url), events, url=url)


def email_route(config: Appliance) -> EmailRoute | None:
    """How alert emails leave: alerts.email.smtp; else the box's own server when every
    recipient is in mail.domains (it relays for nobody); else mail.relay. None without a
    recipient or a way out."""
    email = config.alerts.email
    recipients = _recipients(config)
    if not email.enabled or not recipients:
        return None
    hostname = config.appliance.hostname
    sender = email.sender or f"arkbox@{hostname}"
    if email.smtp is not None:
        smtp = email.smtp
        return EmailRoute(smtp.host, smtp.port, smtp.security, smtp.username, smtp.password,
                          sender, recipients, hostname)
    mail = config.mail
    if mail.enabled and all(r.rpartition("@")[2] in mail.domains for r in recipients):
        return EmailRoute(LOCAL_HOST, 0, "none", None, None, sender, recipients, hostname)
    if mail.relay is not None:
        security = "tls" if mail.relay.port == 465 else "starttls"
        return EmailRoute(mail.relay.host, mail.relay.port, security, mail.relay.username,
                          mail.relay.password, sender, recipients, hostname)
    return None


def _recipients(config: Appliance) -> tuple[str, ...]:
    contact = config.tls.contact_email
    return tuple(config.alerts.email.to) or ((contact,) if contact else ())


def destinations(config: Appliance) -> list[Destination]:
    """Every configured destination, in a stable order (their names are in the state)."""
    found: list[Destination] = []
    route = email_route(config)
    if route is not None:
        found.append(Destination(
            "email", "email", f"email to {', '.join(route.recipients)} via {route.shown}",
            ALERT_KINDS, route=route))
    for number, hook in enumerate(config.alerts.webhooks, start=1):
        found.append(_endpoint(config, f"webhook {number}", "webhook", ALERT_KINDS, hook))
    ping = config.alerts.ping
    for which, endpoint in (("success", ping.success), ("fail", ping.fail)):
        if endpoint is not None:
            found.append(_endpoint(config, f"ping {which}", "ping",
                                   frozenset({f"ping-{which}", "test"}), endpoint))
    return found


def email_unavailable_reason(config: Appliance) -> str | None:
    """Why no alert email goes out, for status and `alert test`; None when one does."""
    if email_route(config) is not None:
        return None
    if not config.alerts.email.enabled:
        return "alert emails are off (alerts.email.enabled: false)"
    if not _recipients(config):
        return "no recipient: set alerts.email.to or tls.contact_email"
    if config.mail.enabled:
        return (f"{', '.join(_recipients(config))} is outside mail.domains and this box's own "
                "mail server relays for nobody: set alerts.email.smtp (or mail.relay), or "
                "alerts.email.to a mailbox of this box")
    return "no way to send: mail is off and there is no mail.relay; set alerts.email.smtp"
