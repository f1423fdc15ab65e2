"""Spam filtering (rspamd in the mail image): what the mail step renders for it, the
`mail.spam` config, and how status and `check mail` read rspamd's answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from rich.console import Console

from firstboot.containers.naming import Naming
from firstboot.core.config import load_config
from firstboot.core.config.mail import Mail, Spam
from firstboot.mail import dkim
from firstboot.mail.render import (
    RSPAMD_MILTER,
    SIEVE_DIR,
    SIEVE_PROGRAMS,
    SPAM_ACTIONS,
    UserEntry,
    render_mail_files,
)
from firstboot.mail.spam import SpamHealth, parse_stat, spam_health, stat_argv
from firstboot.status_view import spam_line

ROOT = Path(__file__).resolve().parents[2]
KEY = dkim.make_private_key()
OPENDKIM = "inet:127.0.0.1:8891"


@pytest.fixture(scope="module")
def mail() -> Mail:
    return load_config(ROOT / "config/default.yaml").mail


def render(mail: Mail, **spam: object) -> dict[str, str]:
    changed = mail.model_copy(update={"spam": Spam(**spam)})  # type: ignore[arg-type]
    files = render_mail_files(changed, [UserEntry("admin@arkbox.test", "{ARGON2ID}x", None)],
                              KEY)
    return {path: item.content for path, item in files.items()}


def main_cf_value(text: str, name: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} =")]
    return line.partition("=")[2].strip()


def test_mail_from_the_world_passes_rspamd_then_opendkim(mail: Mail) -> None:
    files = render(mail)
    main = files["postfix/main.cf"]
    assert main_cf_value(main, "smtpd_milters") == f"inet:{RSPAMD_MILTER}, {OPENDKIM}"
    # Local mail (the box's own alerts) and the submission ports are signed, not scored.
    assert main_cf_value(main, "non_smtpd_milters") == OPENDKIM
    assert main_cf_value(main, "milter_default_action") == "accept"  # never lose mail
    master = files["postfix/master.cf"]
    for service in ("submission", "submissions"):
        block = master.split(f"\n{service} inet")[1].split("\n\n")[0].split("\npickup")[0]
        assert f"-o smtpd_milters={OPENDKIM}" in block, block


def test_thresholds_are_rendered_for_rspamd(mail: Mail) -> None:
    assert render(mail)[SPAM_ACTIONS].splitlines()[1:] == ["add_header = 6;", "reject = 15;"]
    assert render(mail, junk_score=4.5, reject_score=20)[SPAM_ACTIONS].splitlines()[1:] == [
        "add_header = 4.5;", "reject = 20;"]


def test_dovecot_files_junk_and_learns_from_moves(mail: Mail) -> None:
    conf = render(mail)["dovecot/dovecot.conf"]
    assert "protocol lmtp {\n  mail_plugins {\n    sieve = yes" in conf
    assert "imap_sieve = yes" in conf
    assert f"path = {SIEVE_DIR}/spam-to-junk.sieve" in conf
    junk = conf.split("\nmailbox Junk {")[1].split("\n}")[0]
    assert "cause = copy" in junk and "learn-spam.sieve" in junk
    out_of_junk = conf.split("\nimapsieve_from Junk {")[1].split("\n}")[0]
    assert "cause = copy" in out_of_junk and "learn-ham.sieve" in out_of_junk
    assert f"sieve_pipe_bin_dir = {SIEVE_PROGRAMS}" in conf


def test_spam_filtering_off_renders_none_of_it(mail: Mail) -> None:
    files = render(mail, enabled=False)
    assert SPAM_ACTIONS not in files  # the image's entrypoint then starts no rspamd
    assert main_cf_value(files["postfix/main.cf"], "smtpd_milters") == OPENDKIM
    assert "sieve" not in files["dovecot/dovecot.conf"]


def test_reject_must_be_above_junk() -> None:
    with pytest.raises(ValidationError) as refused:
        Spam(junk_score=10, reject_score=8)
    assert "reject_score (8) must be above junk_score (10)" in str(refused.value)
    with pytest.raises(ValidationError):
        Spam(junk_score=0)


STAT = {
    "version": "3.12.1", "scanned": 42, "learned": 5,
    "actions": {"reject": 3, "add header": 4, "no action": 35},
    "statfiles": [{"symbol": "BAYES_SPAM", "revision": 3, "type": "redis"},
                  {"symbol": "BAYES_HAM", "revision": 2, "type": "redis"}],
}


def test_rspamc_stat_gives_scanned_actions_and_learned_counts() -> None:
    health = parse_stat(json.dumps(STAT))
    assert health == SpamHealth(True, None, 42, 3, 2, {"reject": 3, "add header": 4,
                                                       "no action": 35})
    assert health.describe() == ("rspamd answers · 42 scanned since it started (4 to Junk, "
                                 "3 refused) · learned 3 spam, 2 ham")


@pytest.mark.parametrize("text", ["", "connection refused", "[]", json.dumps({"scanned": 1})])
def test_an_answer_that_is_not_rspamds_is_a_problem(text: str) -> None:
    health = parse_stat(text)
    assert health.enabled and not health.answering and health.problem


def test_rspamc_is_bounded_inside_the_container() -> None:
    argv = stat_argv()
    assert argv[:2] == ["timeout", "10"] and "-j" in argv and argv[-1] == "stat"


def test_no_mail_server_means_no_spam_line(tmp_path: Path, mail: Mail) -> None:
    naming = Naming.for_root(tmp_path)
    assert spam_health(None, naming) is None
    config = load_config(ROOT / "config/default.yaml")
    off = config.model_copy(update={"mail": mail.model_copy(update={"spam": Spam(
        enabled=False)})})
    health = spam_health(off, naming)
    assert health is not None and not health.enabled and "off" in health.describe()


def test_status_shows_the_spam_line() -> None:
    console = Console(record=True, width=200)
    console.print(spam_line(parse_stat(json.dumps(STAT)).to_json()))
    console.print(spam_line(SpamHealth(True, "rspamc stat exited 124: no output").to_json()))
    text = console.export_text()
    assert "spam filter: rspamd answers · 42 scanned" in text
    assert "spam filter: rspamd does not answer: rspamc stat exited 124" in text


def test_the_status_page_shows_the_spam_filter_in_the_mail_section() -> None:
    from firstboot.statuspage.page import page_html

    doc = {"ran": False, "spam": parse_stat(json.dumps(STAT)).to_json()}
    html = page_html(doc, "arkbox.test", "2026-12-07 00:00 UTC")
    mail = html.split('<section id="mail">')[1].split("</section>")[0]
    assert 'Spam filter: <span class="good">rspamd answers · 42 scanned' in mail


def test_opendkim_only_signs_while_rspamd_verifies(mail: Mail) -> None:
    assert "\nMode                    s\n" in render(mail)["opendkim/opendkim.conf"]
    assert "\nMode                    sv\n" in render(mail, enabled=False)[
        "opendkim/opendkim.conf"]
