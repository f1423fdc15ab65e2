"""Issue 16: alerts reach real receivers (an SMTP server, an HTTP server, on real
sockets); a receiver that refuses (SMTP 5xx, HTTP 500, a name that does not resolve)
leaves the alert queued with growing delay, visible in status, and the backup that
raised it is still recorded as succeeded."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from alert_receivers import Hooks, Inbox, http_server, silent_server, smtp_server
from rich.console import Console

from firstboot.alerts import delivery, senders
from firstboot.alerts.check import run_check, send_test
from firstboot.alerts.destinations import destinations
from firstboot.alerts.facts import BoxFacts
from firstboot.alerts.hooks import after_backup
from firstboot.alerts.state import Event, load_state
from firstboot.alerts.status import alert_status
from firstboot.backup import backup as backup_module
from firstboot.backup import cli as backup_cli
from firstboot.backup import client as backup_client
from firstboot.backup.client import backup_status, read_failure, record_stats
from firstboot.core.config import Appliance, load_config
from firstboot.core.config.base import EXAMPLE_ADMIN_KEY
from firstboot.core.context import FirstbootContext, Paths
from firstboot.status_view import alert_lines

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
TOKEN = "s3cr3t-token-4711"


# ------------------------------------------------------------------ receivers


@pytest.fixture
def smtp_inbox() -> Iterator[tuple[Inbox, int]]:
    yield from smtp_server(Inbox())


@pytest.fixture
def smtp_refusing() -> Iterator[tuple[Inbox, int]]:
    yield from smtp_server(Inbox(refuse="554 5.7.1 not accepting alerts today"))


@pytest.fixture
def webhook() -> Iterator[tuple[Hooks, int]]:
    yield from http_server(Hooks(200))


@pytest.fixture
def webhook_500() -> Iterator[tuple[Hooks, int]]:
    yield from http_server(Hooks(500))


# ------------------------------------------------------------------ the box


def box(tmp_path: Path, smtp_port: int, hook_url: str, ping_url: str | None = None) -> Path:
    """A config (backups on, mail off) whose alerts go to the test's receivers."""
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / "borg").write_text("passphrase\n")
    (tmp_path / "secrets" / "hook").write_text(hook_url + "\n")
    (tmp_path / "secrets" / "borg").chmod(0o600)
    (tmp_path / "secrets" / "hook").chmod(0o600)
    ping = ""
    if ping_url is not None:
        (tmp_path / "secrets" / "ping").write_text(ping_url + "\n")
        (tmp_path / "secrets" / "ping").chmod(0o600)
        ping = ("  ping:\n    success: {url_secret: {file: secrets/ping}}\n"
                "    fail: {url_secret: {file: secrets/ping}}\n")
    config = tmp_path / "appliance.yaml"
    config.write_text(f"""\
appliance:
  name: alert-box
  domain: arkbox.test
  hostname: arkbox.test
  admin: {{ssh_keys: ["{EXAMPLE_ADMIN_KEY}"]}}
tls: {{contact_email: owner@example.org}}
backup:
  repository: ssh://borg@backup.arkbox.test:22/./alert-box
  passphrase: {{file: secrets/borg}}
alerts:
  thresholds: {{disk_percent: 100}}  # this machine's own disk is not the test's subject
  email:
    smtp: {{host: 127.0.0.1, port: {smtp_port}, security: none}}
  webhooks:
    - url_secret: {{file: secrets/hook}}
{ping}""")
    return config


def context(config: Path, root: Path, now: datetime = NOW) -> FirstbootContext:
    return FirstbootContext(config=load_config(config), paths=Paths(root), now=lambda: now)


def failing_backup_facts(ctx: FirstbootContext) -> BoxFacts:
    return BoxFacts(now=ctx.now(), first_boot_done=ctx.now() - timedelta(hours=2),
                    backups_enabled=True, backup_failure={
                        "at": ctx.now().isoformat(), "message": "the backup server is down",
                        "hint": None})


# ------------------------------------------------------------------ tests


def test_an_alert_reaches_the_smtp_server_and_the_webhook_once(
        tmp_path: Path, smtp_inbox: tuple[Inbox, int], webhook: tuple[Hooks, int]) -> None:
    inbox, smtp_port = smtp_inbox
    hooks, http_port = webhook
    ctx = context(box(tmp_path, smtp_port, f"http://127.0.0.1:{http_port}/hook/{TOKEN}"),
                  tmp_path / "root")
    report = run_check(ctx, facts=failing_backup_facts(ctx))
    assert [e.kind for e in report.events] == ["firing"] and report.firing == ["backup_failed"]
    assert all(r["ok"] for r in report.results) and len(report.results) == 2
    sender, recipients, raw = inbox.messages[0]
    mail = message_from_bytes(raw)
    assert (sender, recipients) == ("arkbox@arkbox.test", ["owner@example.org"])
    assert mail["Subject"].startswith("[arkbox alert-box] ALERT: the backup failed")
    assert mail["Auto-Submitted"] == "auto-generated"
    assert "Fix: run: arkbox-installer backup" in mail.get_payload()
    path, body = hooks.posts[0]
    assert path == f"/hook/{TOKEN}"
    assert json.loads(body)["event"] == "firing"
    assert json.loads(body)["alert"] == "backup_failed"
    # The next check with the same facts sends nothing: once when it starts.
    assert run_check(ctx, facts=failing_backup_facts(ctx)).results == []
    resolved = BoxFacts(now=ctx.now(), first_boot_done=ctx.now(), backups_enabled=True)
    report = run_check(ctx, facts=resolved)
    assert [e.kind for e in report.events] == ["resolved"]
    assert len(inbox.messages) == 2 and len(hooks.posts) == 2
    assert "RESOLVED" in message_from_bytes(inbox.messages[1][2])["Subject"]


def test_refusing_destinations_are_retried_with_growing_delay_and_shown_in_status(
        tmp_path: Path, smtp_refusing: tuple[Inbox, int],
        webhook_500: tuple[Hooks, int]) -> None:
    _, smtp_port = smtp_refusing
    _, http_port = webhook_500
    config = box(tmp_path, smtp_port, f"http://127.0.0.1:{http_port}/hook/{TOKEN}")
    root = tmp_path / "root"
    ctx = context(config, root)
    report = run_check(ctx, facts=failing_backup_facts(ctx))
    errors = sorted(str(r["error"]) for r in report.results)
    assert "554 5.7.1 not accepting alerts today" in errors[0]
    assert errors[1] == (f"http://127.0.0.1:{http_port}/… answered HTTP 500 Internal "
                         "Server Error")
    state = load_state(Paths(root))
    assert [d.attempts for d in state.queue] == [1, 1]
    assert {d.next_attempt for d in state.queue} == {(NOW + timedelta(minutes=1)).isoformat()}
    # Not due yet: nothing is tried; then due: tried again, and the wait doubles.
    later = context(config, root, NOW + timedelta(seconds=30))
    assert run_check(later, facts=failing_backup_facts(later)).results == []
    due = context(config, root, NOW + timedelta(minutes=2))
    assert len(run_check(due, facts=failing_backup_facts(due)).results) == 2
    state = load_state(Paths(root))
    assert {d.next_attempt for d in state.queue} == {
        (NOW + timedelta(minutes=2 + 2)).isoformat()}
    shown = alert_status(Paths(root), load_config(config))
    assert shown["firing"][0]["alert"] == "backup_failed"
    assert shown["last_delivery"]["ok"] is False and len(shown["queue"]) == 2
    text = json.dumps(shown) + _screen(alert_lines(shown))
    assert TOKEN not in text  # the webhook URL's secret part is never shown
    assert "queued: firing backup_failed to webhook 1, attempt 2" in text


def _screen(lines: list[Any]) -> str:
    console = Console(width=300, record=True, force_terminal=False)
    for line in lines:
        console.print(line)
    return console.export_text()


def test_retry_delay_doubles_and_is_capped() -> None:
    assert [delivery.retry_delay(n).total_seconds() / 60 for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert delivery.retry_delay(30) == timedelta(hours=6)


def test_a_destination_is_given_up_after_its_attempts(
        tmp_path: Path, smtp_refusing: tuple[Inbox, int]) -> None:
    _, smtp_port = smtp_refusing
    config = box(tmp_path, smtp_port, "http://alerts.invalid/hook")
    root = tmp_path / "root"
    when = NOW
    for _ in range(delivery.MAX_ATTEMPTS):
        ctx = context(config, root, when)
        run_check(ctx, facts=failing_backup_facts(ctx))
        when += timedelta(hours=7)
    state = load_state(Paths(root))
    assert state.queue == [] and state.deliveries[-1].get("gave_up") is True


def test_alert_test_reports_each_destination(
        tmp_path: Path, smtp_inbox: tuple[Inbox, int], webhook_500: tuple[Hooks, int]) -> None:
    inbox, smtp_port = smtp_inbox
    _, http_port = webhook_500
    ctx = context(box(tmp_path, smtp_port, f"http://127.0.0.1:{http_port}/{TOKEN}",
                      ping_url="http://ping.invalid/ping/uuid"), tmp_path / "root")
    results = {d.name: error for d, error in send_test(ctx)}
    assert set(results) == {"email", "webhook 1", "ping success", "ping fail"}
    assert results["email"] is None and "TEST" in message_from_bytes(inbox.messages[0][2])[
        "Subject"]
    assert results["webhook 1"] is not None and "HTTP 500" in results["webhook 1"]
    assert results["ping success"] is not None
    assert "does not resolve" in results["ping success"] and TOKEN not in str(results)


def _backup_args(config: Path, root: Path) -> argparse.Namespace:
    return argparse.Namespace(config=str(config), root=str(root), no_prune=False)


class FakeReport:
    def summary(self) -> str:
        return "backup alert-box-1 made"


def test_the_backup_is_recorded_as_succeeded_when_every_destination_refuses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp_refusing: tuple[Inbox, int],
        webhook_500: tuple[Hooks, int]) -> None:
    _, smtp_port = smtp_refusing
    _, http_port = webhook_500
    root = tmp_path / "root"
    config = box(tmp_path, smtp_port, f"http://127.0.0.1:{http_port}/hook",
                 ping_url="http://ping.invalid/uuid")
    paths = Paths(root)

    def made_backup(ctx: FirstbootContext, prune: bool) -> FakeReport:
        # Stands in for borg (no backup server here): what a real run records.
        record_stats(ctx.paths, {"archive": "alert-box-1", "finished_at": NOW.isoformat(),
                                 "original_size": 10, "deduplicated_size": 5})
        return FakeReport()

    monkeypatch.setattr(backup_module, "run_backup", made_backup)
    monkeypatch.setattr(backup_client, "prepare_client", lambda ctx: [])
    assert backup_cli._cmd_backup(_backup_args(config, root)) == 0
    assert backup_status(paths, NOW)["last"] == "alert-box-1" and read_failure(paths) is None
    queued = {d.destination: d for d in load_state(paths).queue}
    ping = queued["ping success"]
    assert ping.event.kind == "ping-success" and ping.attempts == 1
    assert ping.last_error is not None
    assert ping.last_error.startswith("cannot reach http://ping.invalid/…: the host name "
                                      "does not resolve")


def test_a_failed_backup_sends_the_fail_ping_and_still_raises_its_own_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp_inbox: tuple[Inbox, int],
        webhook: tuple[Hooks, int]) -> None:
    inbox, smtp_port = smtp_inbox
    hooks, http_port = webhook
    root = tmp_path / "root"
    config = box(tmp_path, smtp_port, f"http://127.0.0.1:{http_port}/hook",
                 ping_url=f"http://127.0.0.1:{http_port}/ping")
    (root / "var/lib/arkbox").mkdir(parents=True)
    # The backup command reads the real clock: a first boot at the fixed NOW would, a day
    # later, also raise "no backup since first boot" (a test that failed by the date).
    (root / "var/lib/arkbox/firstboot.done").write_text(datetime.now(UTC).isoformat() + "\n")

    def broken_backup(ctx: FirstbootContext, prune: bool) -> FakeReport:
        raise backup_client.BackupError("the backup server did not answer",
                                        hint="is backup.arkbox.test up?")

    monkeypatch.setattr(backup_module, "run_backup", broken_backup)
    monkeypatch.setattr(backup_client, "prepare_client", lambda ctx: [])
    with pytest.raises(backup_client.BackupError, match="did not answer"):
        backup_cli._cmd_backup(_backup_args(config, root))
    assert read_failure(Paths(root)) is not None
    paths_posted = sorted(path for path, _ in hooks.posts)
    assert paths_posted == ["/hook", "/ping"]
    assert b"backup failed" in dict(hooks.posts)["/ping"]
    assert "the backup failed" in message_from_bytes(inbox.messages[0][2])["Subject"]


def test_after_backup_never_raises_even_when_the_state_is_unwritable(
        tmp_path: Path, webhook: tuple[Hooks, int]) -> None:
    _, http_port = webhook
    config = box(tmp_path, 1, f"http://127.0.0.1:{http_port}/hook")
    blocked = tmp_path / "root"
    blocked.mkdir()
    (blocked / "var").write_text("not a directory")  # /var/lib/arkbox cannot be made
    after_backup(context(config, blocked), ok=True)


def test_appliance_alerts_default_to_the_contact_address(tmp_path: Path) -> None:
    config: Appliance = load_config(box(tmp_path, 2525, "http://127.0.0.1/hook"))
    assert config.alerts.thresholds.backup_age == "26h"
    assert config.alerts.email.smtp is not None and config.alerts.email.smtp.host == "127.0.0.1"


def test_a_hung_destination_times_out_and_a_refused_recipient_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(senders, "HTTP_TIMEOUT_S", 0.5)
    monkeypatch.setattr(senders, "SMTP_TIMEOUT_S", 0.5)
    hung = silent_server()
    port = next(hung)
    try:
        with pytest.raises(senders.DeliveryFailed, match="timed out"):
            senders.post(f"http://127.0.0.1:{port}/{TOKEN}", b"{}", "application/json")
        config = load_config(box(tmp_path, port, "http://127.0.0.1:9/hook"))
        (email, _) = destinations(config)
        event = Event("test", "test", "a test", at=NOW.isoformat())
        with pytest.raises(senders.DeliveryFailed, match="timed out"):
            senders.send(config, email, event)
    finally:
        hung.close()
    refusing = smtp_server(Inbox(refuse_rcpt="550 5.1.1 no such mailbox"))
    _, smtp_port = next(refusing)
    try:
        config = load_config(box(tmp_path, smtp_port, "http://127.0.0.1:9/hook"))
        (email, _) = destinations(config)
        with pytest.raises(senders.DeliveryFailed,
                           match=re.escape("refused every recipient: owner@example.org: "
                                           "550 5.1.1")):
            senders.send(config, email, Event("test", "test", "a test", at=NOW.isoformat()))
    finally:
        refusing.close()


def test_the_own_mail_server_gets_the_message_through_sendmail_in_its_container() -> None:
    """No SMTP to 127.0.0.1:25 (the engine's gateway would be the client, and the
    sender's domain would have to resolve): the message enters Postfix's queue."""
    from firstboot.alerts.destinations import email_route
    from firstboot.alerts.senders import local_sendmail_argv

    config = load_config(Path(__file__).resolve().parents[2] / "config/default.yaml")
    route = email_route(config)
    assert route is not None and route.local
    assert route.shown == "sendmail in arkbox-mail"
    assert local_sendmail_argv(route) == (
        "docker", "exec", "-i", "arkbox-mail", "/usr/sbin/sendmail", "-i",
        "-f", "arkbox@arkbox.test", "--", "admin@arkbox.test")


def test_a_title_with_line_breaks_makes_a_one_line_subject() -> None:
    """A backup failure quotes borg, line breaks and all; a header may not hold one."""
    from firstboot.alerts.messages import SUBJECT_MAX, email_message, subject

    event = Event("firing", "backup_failed", "the backup failed: Remote: ssh: no route\r\n"
                  "Connection closed by remote host " + "x" * 300, "fix it",
                  at="2026-12-05T03:00:00+00:00")
    line = subject(event, "box")
    assert "\n" not in line and "\r" not in line and len(line) == SUBJECT_MAX
    assert line.startswith("[arkbox box] ALERT: the backup failed: Remote: ssh: no route "
                           "Connection closed")
    message = email_message(event, "box", "box.test", "arkbox@box.test", ("a@box.test",))
    assert message["Subject"] == line
    assert "Connection closed by remote host" in message.get_content()


def test_a_sender_that_breaks_is_a_failed_delivery_not_a_failed_check() -> None:
    from firstboot.alerts.delivery import _send_safely
    from firstboot.alerts.destinations import Destination
    from firstboot.alerts.senders import DeliveryFailed

    url = "https://hooks.example.org/s3cret-token"
    hook = Destination("webhook 1", "webhook", "https://hooks.example.org/…", frozenset(),
                       url=url)

    def broken(destination: Destination, event: Event) -> None:
        raise ValueError(f"cannot post to {url}")

    with pytest.raises(DeliveryFailed) as failed:
        _send_safely(broken, hook, Event("test", "test", "a test"))
    assert failed.value.message.startswith("ValueError: cannot post to ")
    assert "s3cret" not in failed.value.message
