"""Data written through the applications before a backup, and compared after a restore.

Shared by the restore test (test_backup_restore.py) and `arkbox try disaster`'s
(test_try_disaster.py): CalDAV over HTTPS through the proxy, SQL through psql in the
database container, a wiki page; compared on the restored box by content, mode,
owner and mtime, the database by its rows, and the event by a CalDAV GET.
"""

from __future__ import annotations

import imaplib
import json
import smtplib
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from rig_fixtures import FULLCHAIN, ROOT, check, installer
from vm import VmBox

from builder.rig.parts import ApplianceContainer, FirstBootFailed, RigError, wait_until

EVENT = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//arkbox//e2e//EN
BEGIN:VEVENT
UID:restore-me@arkbox.test
DTSTAMP:20261126T120000Z
DTSTART:20261201T090000Z
DTEND:20261201T100000Z
SUMMARY:restored unattended
END:VEVENT
END:VCALENDAR
"""
DATA_TREES = ("/srv/arkbox/volumes/calendar", "/srv/arkbox/volumes/wiki", "/srv/arkbox/tls",
              "/srv/arkbox/secrets/config", "/srv/arkbox/secrets/generated")
# What the applications write by themselves while they run (DokuWiki's logs and caches):
# they change after the restore, on B, and are not compared.
RUNTIME_PREFIXES = tuple(f"/srv/arkbox/volumes/wiki/data/{d}/" for d in ("log", "cache", "tmp",
                                                                         "locks"))
SQL_ROWS = "SELECT id, note FROM e2e_restore ORDER BY id"
EVENT_FILES = "/srv/arkbox/volumes/calendar/collections/collection-root/admin/e2e/*.ics"


@dataclass(frozen=True)
class Outside:
    """Where HTTPS requests come from: a shell outside the appliance (a rig client, or
    this machine) and the address ("IP:PORT") at which it reaches the proxy's 443."""

    run: Callable[[str], str]  # runs a shell script there, returns its stdout
    address: str


def sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def caldav(app: ApplianceContainer, outside: Outside, method: str, path: str,
           body: str = "") -> str:
    """One CalDAV request from outside, through the appliance's proxy; the HTTP status."""
    password = check(app, "cat /etc/arkbox/secrets/admin-mail-password").strip()
    ip, port = outside.address.rsplit(":", 1)
    origin = "cal.arkbox.test" if port == "443" else f"cal.arkbox.test:{port}"
    script = (f"printf '%s' {sh_quote(body)} | curl -sk -o /dev/null -w '%{{http_code}}' "
              f"--resolve cal.arkbox.test:{port}:{ip} -u admin:{sh_quote(password)} "
              f"-X {method} -H 'Content-Type: text/calendar' "
              f"{'--data-binary @- ' if body else ''}https://{origin}{path}")
    return outside.run(script).strip()


def psql(app: ApplianceContainer, sql: str) -> str:
    return check(app, f"docker exec arkbox-db psql -At -d roundcube -c {sh_quote(sql)}")


def write_data(app: ApplianceContainer, outside: Outside) -> None:
    """An event over CalDAV, rows in the database, a wiki page: data a restore must bring back."""
    assert caldav(app, outside, "MKCALENDAR", "/admin/e2e/") == "201"
    assert caldav(app, outside, "PUT", "/admin/e2e/restore-me.ics", EVENT) in {"201", "204"}
    psql(app, "CREATE TABLE e2e_restore (id int PRIMARY KEY, note text)")
    psql(app, "INSERT INTO e2e_restore VALUES (1, 'first'), (2, 'zweite'), (3, 'trois')")
    check(app, "docker exec arkbox-wiki sh -c 'mkdir -p /var/lib/dokuwiki/data/pages && "
               "printf \"====== Restored ======\\n\" > /var/lib/dokuwiki/data/pages/e2e.txt'")


def assert_event_stored(app: ApplianceContainer) -> None:
    assert "restored unattended" in check(app, f"cat {EVENT_FILES}")


def file_facts(app: ApplianceContainer, trees: tuple[str, ...] = DATA_TREES) -> dict[str, str]:
    """path -> "mode uid gid mtime sha256" for every file and directory of the data trees."""
    out = check(app, "cd / && find " + " ".join(trees) +
                r" -printf '%p %m %U %G %T@ %y\n' | sort")
    facts: dict[str, str] = {}
    for line in out.splitlines():
        path, mode, uid, gid, mtime, kind = line.rsplit(" ", 5)
        facts[path] = f"{mode} {uid} {gid} {mtime if kind == 'f' else '-'}"
    sums = check(app, "cd / && find " + " ".join(trees) +
                 " -type f -print0 | sort -z | xargs -0r sha256sum")
    for line in sums.splitlines():
        digest, path = line.split(maxsplit=1)
        facts[path] += f" {digest}"
    return {path: fact for path, fact in facts.items() if not path.startswith(RUNTIME_PREFIXES)}


@dataclass(frozen=True)
class DataFacts:
    files: dict[str, str]
    rows: str


def data_facts(app: ApplianceContainer) -> DataFacts:
    """What `assert_same_data` compares: the data trees' files, the database's rows."""
    return DataFacts(file_facts(app), psql(app, SQL_ROWS))


def assert_same_data(restored: ApplianceContainer, outside: Outside, before: DataFacts) -> None:
    """The restored box holds the same files and rows, and serves the event again."""
    assert file_facts(restored) == before.files
    assert psql(restored, SQL_ROWS) == before.rows
    assert caldav(restored, outside, "GET", "/admin/e2e/restore-me.ics") == "200"


# ---------------------------------------------------------------- the mail store (issue 7)

MAILBOX = "admin@arkbox.test"  # config/default.yaml's mailbox
MAIL_PASSWORD = (ROOT / "config/secrets/admin-mail-password").read_text().strip()
MAILBOXES = "/srv/arkbox/volumes/mail/mailboxes"
MAILDIR = f"{MAILBOXES}/vhosts/arkbox.test/admin/Maildir"
DKIM_KEY = "/srv/arkbox/secrets/generated/dkim.key"
DELIVERY_TIMEOUT_S = 90


@dataclass(frozen=True)
class MailFacts:
    """What a restore must bring back of the mail: the mailbox tree (content, mode,
    owner, mtime of every file), the DKIM key and the DKIM record `dns --json` prints."""

    mailboxes: dict[str, str]
    dkim_key_sha256: str
    dkim_records: dict[str, str]  # SELECTOR._domainkey.DOMAIN. -> TXT value


def tls_trusting(app: ApplianceContainer) -> ssl.SSLContext:
    """Trust the box's own (fallback) certificate; connections go by address."""
    context = ssl.create_default_context(cadata=check(app, f"cat {FULLCHAIN}"))
    context.check_hostname = False
    return context


def submit_587(app: ApplianceContainer, context: ssl.SSLContext, subject: str) -> None:
    """A message to the local mailbox on 587: STARTTLS, then AUTH as the mailbox."""
    body = (f"From: {MAILBOX}\r\nTo: {MAILBOX}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@arkbox.test>\r\n\r\nrestore me\r\n")
    with smtplib.SMTP(app.ip(4), 587, timeout=30) as smtp:
        smtp.ehlo("client.example")
        smtp.starttls(context=context)
        smtp.ehlo("client.example")
        smtp.login(MAILBOX, MAIL_PASSWORD)
        smtp.sendmail(MAILBOX, [MAILBOX], body)


def send_mail_and_wait(app: ApplianceContainer) -> str:
    """Submit a message and wait until it is in the Maildir (on disk: no IMAP session
    touches the mailbox before its facts are taken). Its subject."""
    subject = f"restore me {uuid.uuid4().hex[:8]}"
    submit_587(app, tls_trusting(app), subject)
    wait_until(f"message {subject!r} in the Maildir",
               lambda: None if app.exec("sh", "-c", f"grep -rlF '{subject}' {MAILDIR}/new"
                                        )[0] == 0 else "not delivered yet",
               DELIVERY_TIMEOUT_S, interval=2)
    return subject


def dkim_records(app: ApplianceContainer) -> dict[str, str]:
    code, out = installer(app, "dns --json --ipv6 none")
    assert code == 0, out
    records: list[dict[str, Any]] = json.loads(out[out.index("{"):])["records"]
    found = {str(r["name"]): str(r["value"]) for r in records if "._domainkey." in r["name"]}
    assert found, records
    return found


def mail_facts(app: ApplianceContainer) -> MailFacts:
    digest = check(app, f"sha256sum {DKIM_KEY}").split()[0]
    return MailFacts(file_facts(app, (MAILBOXES,)), digest, dkim_records(app))


SPAM_SAMPLE = ("From: offers@promo.example\nTo: admin@arkbox.test\nSubject: cheap watches\n\n"
               "Limited offer: replica watches, miracle pills and lottery winnings, click "
               "now to claim your exclusive prize before midnight tonight, act fast friend\n")


def spam_filter(app: ApplianceContainer) -> dict[str, Any]:
    """What `status --json` says of the spam filter (rspamd, asked live)."""
    code, out = installer(app, "status --json")
    assert code == 0, out
    return dict(json.loads(out[out.index("{"):])["spam"])


def learned_counts(app: ApplianceContainer) -> tuple[int, int]:
    """(spam, ham) rspamd's Bayes has learned, as status reports them."""
    spam = spam_filter(app)
    assert spam["answering"], spam
    return int(spam["learned_spam"]), int(spam["learned_ham"])


def teach_spam_filter(app: ApplianceContainer) -> tuple[int, int]:
    """Teach rspamd one spam message (as a move into Junk would), wait until it counts,
    and give Redis the second it takes to write it down. The counts after that."""
    before = learned_counts(app)
    check(app, f"printf %s {sh_quote(SPAM_SAMPLE)} | docker exec -i arkbox-mail "
               "rspamc --connect 127.0.0.1:11334 learn_spam")
    wait_until("rspamd to count the learned spam", lambda: None if learned_counts(app)[0] >
               before[0] else f"still {learned_counts(app)}", 60, interval=2)
    time.sleep(2)  # appendfsync everysec (image/recipes/mail/redis.conf)
    return learned_counts(app)


def fetch_imaps(app: ApplianceContainer, subject: str) -> bytes:
    """The raw message with `subject` from the mailbox's INBOX over IMAPS (993)."""
    return imaps_message(app.ip(4), tls_trusting(app), MAILBOX, MAIL_PASSWORD, subject,
                         timeout=60, interval=3, readonly=True)


def imaps_message(host: str, context: ssl.SSLContext, user: str, password: str,
                  subject: str, *, timeout: float, interval: float, readonly: bool,
                  mailbox: str = "INBOX") -> bytes:
    """The newest message with `subject` in `user`'s `mailbox`, waiting until it is there."""
    found: list[bytes] = []

    def fetched() -> str | None:
        with imaplib.IMAP4_SSL(host, 993, ssl_context=context) as imap:
            imap.login(user, password)
            imap.select(mailbox, readonly=readonly)
            _, numbers = imap.search(None, "SUBJECT", f'"{subject}"')
            ids = numbers[0].split()
            if not ids:
                return f"not in {mailbox} yet"
            _, data = imap.fetch(ids[-1], "(RFC822)")
            item = data[0]
            assert isinstance(item, tuple)
            found.append(item[1])
            return None

    wait_until(f"message {subject!r} in {mailbox} over IMAPS", fetched, timeout,
               interval=interval)
    return found[0]


def assert_same_mail(restored: ApplianceContainer, before: MailFacts, subject: str) -> None:
    """Mailboxes, DKIM key and DKIM record identical; the message is served over IMAPS.
    (Compared before any IMAP session: Dovecot writes its index files on access.)"""
    started = time.monotonic()
    after = mail_facts(restored)
    assert after.mailboxes == before.mailboxes
    assert after.dkim_key_sha256 == before.dkim_key_sha256
    assert after.dkim_records == before.dkim_records
    assert f"Subject: {subject}".encode() in fetch_imaps(restored, subject)
    print(f"B: mail store, DKIM key and record identical; message fetched over IMAPS "
          f"({time.monotonic() - started:.1f} s)")


def unhealthy_logs(part: ApplianceContainer | VmBox) -> str:
    """What the engine says of each container that is not healthy: the first thing to read
    when a first boot fails at its health step."""
    script = ("docker ps -a --format '{{.Names}} {{.Status}}'; "
              "for c in $(docker ps -a --format '{{.ID}} {{.Status}}' | grep -v '(healthy)' "
              "| cut -d' ' -f1); do "
              "echo \"--- $(docker inspect -f '{{.Name}}' $c)\"; docker logs --tail 80 $c 2>&1; "
              "done")
    return part.exec("sh", "-c", script)[1][-6000:]


def wait_first_boot_or_failure(part: ApplianceContainer | VmBox, timeout: float
                               ) -> dict[str, Any]:
    """The finished first boot's status; a failed run fails the test at once (the unit
    would retry it for as long as it takes, which helps a real box, not a test), with the
    journal and the unhealthy containers' logs to read."""
    try:
        return part.wait_first_boot(timeout)
    except FirstBootFailed as failed:
        pytest.fail(f"{part.role}: {failed}\n{part.journal()[-4000:]}\n"
                    f"{unhealthy_logs(part)}")
    except RigError as gave_up:
        pytest.fail(f"{part.role}: {gave_up}")
