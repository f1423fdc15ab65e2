"""Sending one event to one destination: SMTP for email, an HTTP POST for webhooks and
pings. Every failure becomes `DeliveryFailed`, whose message never holds a secret
(the URL and the SMTP password are masked out of whatever the library said)."""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from firstboot.alerts.destinations import (
    LOCAL_MAIL_CONTAINER,
    Destination,
    EmailRoute,
    shown_url,
)
from firstboot.alerts.messages import email_message, ping_body, webhook_body
from firstboot.alerts.state import Event
from firstboot.core.config import Appliance, SecretUnavailable
from firstboot.core.errors import ArkboxError
from firstboot.core.execute import CommandError, mask, run

SMTP_TIMEOUT_S = 20
HTTP_TIMEOUT_S = 10
USER_AGENT = "arkbox-alerts"


class DeliveryFailed(ArkboxError):
    """An alert did not reach a destination; it stays queued for a later retry."""


def send(config: Appliance, destination: Destination, event: Event) -> None:
    if destination.problem is not None:
        raise DeliveryFailed(destination.problem)
    box, hostname = config.appliance.name, config.appliance.hostname
    if destination.route is not None:
        _send_email(config, destination.route, event, box)
        return
    assert destination.url is not None
    if destination.kind == "ping":
        post(destination.url, ping_body(event, box).encode(), "text/plain; charset=utf-8")
    else:
        body = json.dumps(webhook_body(event, box, hostname)).encode()
        post(destination.url, body, "application/json")


def _send_email(config: Appliance, route: EmailRoute, event: Event, box: str) -> None:
    message = email_message(event, box, route.helo, route.sender, route.recipients)
    if route.local:
        _inject_locally(route, message.as_bytes())
        return
    password = None
    if route.password is not None:
        try:
            password = config.secret(route.password)
        except SecretUnavailable as err:
            raise DeliveryFailed(f"the SMTP password is unavailable: {err.message}") from err
    secrets = [password] if password else []
    try:
        with _connect(route) as smtp:
            if route.username is not None and password is not None:
                smtp.login(route.username, password)
            refused = smtp.send_message(message, route.sender, list(route.recipients))
    except smtplib.SMTPResponseException as err:
        said = err.smtp_error.decode(errors="replace") if isinstance(err.smtp_error, bytes) \
            else str(err.smtp_error)
        raise DeliveryFailed(mask(f"{route.host}:{route.port} answered {err.smtp_code} "
                                  f"{said}", secrets)) from None
    except smtplib.SMTPRecipientsRefused as err:
        raise DeliveryFailed(mask(f"{route.host}:{route.port} refused every recipient: "
                                  f"{_refusals(err.recipients)}", secrets)) from None
    except (smtplib.SMTPException, OSError) as err:
        raise DeliveryFailed(mask(f"cannot send through {route.host}:{route.port}: "
                                  f"{_reason(err)}", secrets)) from None
    if refused:
        raise DeliveryFailed(f"{route.host}:{route.port} refused {_refusals(refused)}")


def local_sendmail_argv(route: EmailRoute) -> tuple[str, ...]:
    return ("docker", "exec", "-i", LOCAL_MAIL_CONTAINER, "/usr/sbin/sendmail", "-i",
            "-f", route.sender, "--", *route.recipients)


def _inject_locally(route: EmailRoute, message: bytes) -> None:
    """Hand the message to the box's own Postfix through sendmail in its container."""
    try:
        done = run(local_sendmail_argv(route), input_data=message, check=False,
                   timeout=SMTP_TIMEOUT_S)
    except CommandError as err:  # not there, or no answer in time
        raise DeliveryFailed(f"sendmail in {LOCAL_MAIL_CONTAINER}: {err.message}") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no message"]
        raise DeliveryFailed(f"sendmail in {LOCAL_MAIL_CONTAINER} exited {done.returncode}: "
                             f"{said[0]}")


def _connect(route: EmailRoute) -> smtplib.SMTP:
    context = ssl.create_default_context()
    if route.security == "tls":
        return smtplib.SMTP_SSL(route.host, route.port, local_hostname=route.helo,
                                timeout=SMTP_TIMEOUT_S, context=context)
    smtp = smtplib.SMTP(route.host, route.port, local_hostname=route.helo,
                        timeout=SMTP_TIMEOUT_S)
    try:
        smtp.ehlo()
        if route.security == "starttls":
            smtp.starttls(context=context)
            smtp.ehlo()
    except BaseException:
        smtp.close()
        raise
    return smtp


def _refusals(refused: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{who}: {code} {said.decode(errors='replace')}"
                     for who, (code, said) in refused.items())


def _reason(err: BaseException) -> str:
    if isinstance(err, socket.gaierror):
        return f"the host name does not resolve ({err.strerror})"
    if isinstance(err, TimeoutError | socket.timeout):
        return "no answer (timed out)"
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def post(url: str, body: bytes, content_type: str) -> None:
    """POST `body` to `url`; anything but a 2xx answer is a failure."""
    where = shown_url(url)
    # A url_secret is read from a file unchecked: never let it open file: or ftp:.
    if urlsplit(url).scheme not in ("http", "https"):
        raise DeliveryFailed(f"{where} is not an http:// or https:// URL")
    request = urllib.request.Request(url, data=body, method="POST", headers={  # noqa: S310
        "Content-Type": content_type, "User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as answer:  # noqa: S310
            status = int(answer.status)
    except urllib.error.HTTPError as err:
        raise DeliveryFailed(f"{where} answered HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        reason = err.reason if isinstance(err.reason, BaseException) else None
        why = _reason(reason) if reason is not None else str(err.reason)
        raise DeliveryFailed(mask(f"cannot reach {where}: {why}", [url])) from None
    except (OSError, ValueError) as err:
        raise DeliveryFailed(mask(f"cannot reach {where}: {_reason(err)}", [url])) from None
    if not 200 <= status < 300:
        raise DeliveryFailed(f"{where} answered HTTP {status}")

