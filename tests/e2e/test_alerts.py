"""Issue 16, alerts end to end: a backup that fails reaches its owner once, and once more
when it is resolved.

One rig: the appliance (mail on, backups to the backup-server role), the backup server,
and a webhook receiver (a small HTTP server in the rig's client image that records every
POST). Email takes the default route: the admin mailbox (tls.contact_email) through the
box's own Postfix, read here over IMAPS.
"""

from __future__ import annotations

import imaplib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from restore_checks import MAIL_PASSWORD, MAILBOX, tls_trusting, wait_first_boot_or_failure
from rig_fixtures import (
    DEFAULT_CONFIG,
    INSTALLER,
    ClientContainer,
    admin_key,
    appliance_image,
    check,
    installer,
    rig_up,
    sh,
    the_client_image,
)

from builder.rig.parts import (
    ApplianceContainer,
    BackupServerContainer,
    RigError,
    image_from_rootfs_tar,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RIG_OCTET = 185
RECEIVER = "hooks.arkbox.test"
POSTS = "/tmp/posts.jsonl"
# Records each POST's body, one JSON line each; answers 200.
RECEIVER_SCRIPT = b"""\
import http.server

class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open("/tmp/posts.jsonl", "ab") as out:
            out.write(body.replace(b"\\n", b" ") + b"\\n")
        self.send_response(200)
        self.end_headers()

http.server.ThreadingHTTPServer(("", 8080), Hook).serve_forever()
"""
SUBJECT = "[arkbox arkbox-test] {kind}: the backup failed"


@dataclass
class Rig:
    app: ApplianceContainer
    server: BackupServerContainer
    receiver: ClientContainer


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    from built import built_backup_server

    config: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["appliance"]["admin"]["ssh_keys"] = [admin_key()]
    config["alerts"] = {"webhooks": [{"url": f"http://{RECEIVER}:8080/hook"}]}
    with rig_up("alerts", RIG_OCTET) as rig:
        receiver = ClientContainer(rig, "hooks", the_client_image(), aliases=[RECEIVER],
                              files={"/receiver.py": (RECEIVER_SCRIPT, 0o644)})
        rig.add(receiver)
        check(receiver, "nohup python3 /receiver.py >/tmp/receiver.log 2>&1 &")
        server_image = image_from_rootfs_tar(rig.client, built_backup_server(),
                                             "arkbox/backup-server-role")
        server = BackupServerContainer(rig, "backup", server_image, aliases=("backup.arkbox.test",))
        rig.add(server)
        app = ApplianceContainer(rig, "appliance", appliance_image(rig), aliases=["arkbox.test"],
                            config=yaml.safe_dump(config, sort_keys=False),
                            seed_config=DEFAULT_CONFIG, boot_timeout=420)
        rig.add(app)
        status = wait_first_boot_or_failure(app, timeout=900)
        assert status["result"] == "ok", status["failures"]
        yield Rig(app, server, receiver)


def posts(receiver: ClientContainer) -> list[dict[str, Any]]:
    _, out = sh(receiver, f"cat {POSTS} 2>/dev/null")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def mails(app: ApplianceContainer, subject: str) -> int:
    """How many messages with `subject` are in the admin's INBOX (over IMAPS)."""
    with imaplib.IMAP4_SSL(app.ip(4), 993, ssl_context=tls_trusting(app)) as imap:
        imap.login(MAILBOX, MAIL_PASSWORD)
        imap.select("INBOX", readonly=True)
        _, numbers = imap.search(None, "SUBJECT", f'"{subject}"')
        return len(numbers[0].split())


def wait_for(what: str, count: Any, expected: int, app: ApplianceContainer | None = None) -> None:
    """Until `count()` reaches `expected` (delivery is asynchronous: Postfix, the queue);
    when it does not, the box's alert state and journal say why."""
    def reached() -> str | None:
        seen = count()
        return None if seen >= expected else f"{seen} of {expected}"
    try:
        wait_until(what, reached, timeout=120, interval=3)
    except RigError as err:
        shown = "" if app is None else sh(app, f"{INSTALLER} status --json; journalctl "
                                               "--no-pager -o cat -n 60 -t arkbox-backup "
                                               "-t arkbox-alerts")[1]
        pytest.fail(f"{err.message}\n{shown[-6000:]}")


def backup(app: ApplianceContainer, ok: bool) -> None:
    code, out = installer(app, "backup")
    assert (code == 0) == ok, out


def alert_events(receiver: ClientContainer, event: str) -> list[dict[str, Any]]:
    return [p for p in posts(receiver)
            if p.get("alert") == "backup_failed" and p.get("event") == event]


def test_a_failed_backup_alerts_once_and_once_more_when_resolved(rig: Rig) -> None:
    app, server, receiver = rig.app, rig.server, rig.receiver
    firing, resolved = SUBJECT.format(kind="ALERT"), SUBJECT.format(kind="RESOLVED")
    backup(app, ok=True)
    assert mails(app, firing) == 0 and alert_events(receiver, "firing") == []

    assert server.exec("systemctl", "stop", "ssh.socket", "ssh.service")[0] in (0, 5)
    try:
        backup(app, ok=False)
        wait_for("the alert email in the admin's INBOX", lambda: mails(app, firing), 1, app)
        wait_for("the alert POST at the receiver",
                 lambda: len(alert_events(receiver, "firing")), 1)
        shown = json.loads(check(app, f"{INSTALLER} status --json"))["alerts"]
        assert [f["alert"] for f in shown["firing"]] == ["backup_failed"], shown
        assert shown["last_delivery"]["ok"] is True, shown
        (post,) = alert_events(receiver, "firing")
        assert post["box"] == "arkbox-test" and post["fix"], post

        backup(app, ok=False)  # still failing: nothing new is sent
        check(app, f"{INSTALLER} alert check")
        time.sleep(10)  # what would have been sent has had the time to arrive
        assert mails(app, firing) == 1
        assert len(alert_events(receiver, "firing")) == 1
    finally:
        server.exec("systemctl", "start", "ssh.service")

    for _ in range(10):  # sshd coming back, or its per-source penalty
        code, out = installer(app, "backup")
        if code == 0:
            break
        time.sleep(3)
    assert code == 0, out
    wait_for("the resolved email", lambda: mails(app, resolved), 1)
    wait_for("the resolved POST", lambda: len(alert_events(receiver, "resolved")), 1)
    assert mails(app, firing) == 1 and mails(app, resolved) == 1
    shown = json.loads(check(app, f"{INSTALLER} status --json"))["alerts"]
    assert shown["firing"] == [], shown
    table = installer(app, "status")[1]
    assert "alert" in table.lower(), table


def test_alert_test_reaches_every_destination(rig: Rig) -> None:
    app, receiver = rig.app, rig.receiver
    before = len([p for p in posts(receiver) if p.get("event") == "test"])
    code, out = installer(app, "alert test")
    assert code == 0, out
    assert "email" in out and "webhook" in out, out
    wait_for("the test POST", lambda: len([p for p in posts(receiver)
                                           if p.get("event") == "test"]), before + 1)
    wait_for("the test email", lambda: mails(app, "[arkbox arkbox-test] TEST"), 1)


def test_a_changed_package_file_alerts_until_the_weekly_check_passes_again(rig: Rig) -> None:
    app, receiver = rig.app, rig.receiver

    def events(event: str) -> list[dict[str, Any]]:
        return [p for p in posts(receiver)
                if p.get("alert") == "package_files" and p.get("event") == event]

    assert check(app, "systemctl is-enabled arkbox-debsums.timer").strip() == "enabled"
    check(app, "systemctl start arkbox-debsums.service")  # the image as built passes
    before = len(events("firing")), len(events("resolved"))
    victim = "/usr/share/bash-completion/completions/debsums"  # any packaged file
    check(app, f"cp -p {victim} /root/debsums.kept && echo changed >> {victim}")
    try:
        code, out = sh(app, "systemctl start arkbox-debsums.service")
        assert code != 0, out
        journal = check(app, "journalctl -u arkbox-debsums --no-pager -o cat")
        assert f"changed file {victim}" in journal, journal[-2000:]
        check(app, f"{INSTALLER} alert check")
        wait_for("the package_files alert POST", lambda: len(events("firing")),
                 before[0] + 1, app)
        post = events("firing")[-1]
        assert "journalctl -u arkbox-debsums" in post["fix"], post
    finally:
        check(app, f"cp -p /root/debsums.kept {victim}")
    check(app, "systemctl start arkbox-debsums.service")
    check(app, f"{INSTALLER} alert check")
    wait_for("the package_files resolved POST", lambda: len(events("resolved")),
             before[1] + 1, app)
