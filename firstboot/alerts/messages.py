"""What an event says: the email (subject, body) and the webhook's JSON body."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from firstboot.alerts.facts import parse_time
from firstboot.alerts.state import Event

HEADINGS = {"firing": "ALERT", "resolved": "RESOLVED", "test": "TEST", "digest": "DIGEST",
            "ping-success": "OK", "ping-fail": "FAILED"}


SUBJECT_MAX = 200


def subject(event: Event, box: str) -> str:
    """One line (a title may quote a command's output, line breaks and all: a header with
    one is refused), cut to SUBJECT_MAX; the body has the whole title."""
    line = f"[arkbox {box}] {HEADINGS.get(event.kind, event.kind.upper())}: " \
        + " ".join(event.title.split())
    return line if len(line) <= SUBJECT_MAX else line[:SUBJECT_MAX - 1] + "…"


def body_text(event: Event, box: str, hostname: str) -> str:
    lines = [event.title, ""]
    if event.kind == "digest":
        lines += ["Still firing:", event.fix]
    elif event.fix:
        lines.append(("Fix: " if event.kind != "resolved" else "") + event.fix)
    if event.since:
        lines.append(f"Since: {event.since}")
    lines += ["", f"Box: {box} ({hostname}) · alert: {event.alert} · at {event.at}",
              "The whole state: arkbox-installer status (over SSH). Each alert is sent once "
              "when it starts and once when it is resolved."]
    return "\n".join(lines) + "\n"


def email_message(event: Event, box: str, hostname: str, sender: str,
                  recipients: tuple[str, ...]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject(event, box)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    when = parse_time(event.at)
    if when is not None:
        message["Date"] = format_datetime(when)
    message["Message-ID"] = make_msgid("arkbox-alert", domain=hostname)
    # RFC 3834: a machine wrote it; auto-responders must not answer.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body_text(event, box, hostname))
    return message


def webhook_body(event: Event, box: str, hostname: str) -> dict[str, Any]:
    """The JSON POSTed to webhooks; "text" is what chat webhooks (Slack, Mattermost) show."""
    return {
        "source": "arkbox", "box": box, "hostname": hostname,
        "event": event.kind, "alert": event.alert, "title": event.title, "fix": event.fix,
        "since": event.since, "at": event.at, "text": subject(event, box),
    }


def ping_body(event: Event, box: str) -> str:
    """The text POSTed to a ping URL (healthchecks.io keeps it as the ping's log)."""
    return f"arkbox {box}: {event.title}\n"
