"""Connection-time defence (pure, no Docker): postscreen's rendered config, the login ban's
log parsing, counting within the window, the bans file, the nftables ruleset and commands,
the service's unit, status and `mail unban`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from rich.console import Console

from firstboot.cli import main
from firstboot.core.config import load_config
from firstboot.core.config.mail import LoginBan, Mail
from firstboot.core.context import Paths
from firstboot.core.execute import Completed
from firstboot.mail import guard_service
from firstboot.mail.guard import (
    Ban,
    Failure,
    FailureWindow,
    ban_argv,
    bans_from_text,
    bans_text,
    listed_addresses,
    parse_failure,
    ruleset,
    unban_argv,
)
from firstboot.mail.guard_service import (
    Guard,
    GuardSettings,
    add_ban,
    current_bans,
    enforce_all,
    lift_ban,
    status_facts,
    unit_text,
)
from firstboot.mail.render import dnsbl_site, render_mail_files
from firstboot.status_view import mail_ban_lines

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
PORTS = (25, 465, 587, 993)

DOVECOT_24 = ("imap-login: Login aborted: Connection closed (auth failed, 3 attempts in 9 secs) "
              "(auth_failed): user=<admin@arkbox.test>, method=PLAIN, rip=192.0.2.7, "
              "lip=172.17.0.2, TLS, session=<AbCd>")
DOVECOT_23 = ("Dec  7 12:00:00 imap-login: Info: Disconnected (auth failed, 1 attempts in 2 secs):"
              " user=<x@y.test>, method=PLAIN, rip=2001:db8::7, lip=::1, TLS")
POSTFIX = ("Dec  7 12:00:00 mail postfix/submissions/smtpd[77]: warning: unknown[192.0.2.8]: "
           "SASL PLAIN authentication failed: (reason unavailable), sasl_username=a@arkbox.test")


@pytest.fixture(scope="module")
def mail() -> Mail:
    return load_config(ROOT / "config/default.yaml").mail


# ---------------------------------------------------------------- postscreen


def test_port_25_is_postscreen_handing_clients_to_smtpd(mail: Mail) -> None:
    master = render_mail_files(mail, [], b"key")["postfix/master.cf"].content
    services = {(line.split()[0], line.split()[1]): line.split() for line in master.splitlines()
                if line and not line[0].isspace() and not line.startswith("#")}
    assert services["smtp", "inet"][-1] == "postscreen"
    assert services["smtpd", "pass"][-1] == "smtpd"
    assert services["dnsblog", "unix"][-1] == "dnsblog"
    assert services["tlsproxy", "unix"][-1] == "tlsproxy"
    # The submission ports stay plain smtpd with their login rules.
    assert services["submission", "inet"][-1] == "smtpd"
    assert services["submissions", "inet"][-1] == "smtpd"


def test_postscreen_asks_the_configured_dnsbls_and_a_silent_one_scores_nothing(
        mail: Mail) -> None:
    main_cf = render_mail_files(mail, [], b"key")["postfix/main.cf"].content
    settings = dict(line.split(" = ", 1) for line in main_cf.splitlines() if " = " in line
                    and line.startswith("postscreen_"))
    assert settings["postscreen_dnsbl_sites"] == (
        "zen.spamhaus.org=127.0.0.[2..11]*3 bl.spamcop.net=127.0.0.2*2 "
        "list.dnswl.org=127.0.[0..255].[1..3]*-2")
    assert settings["postscreen_dnsbl_threshold"] == "3"
    assert settings["postscreen_dnsbl_action"] == "enforce"  # 550, and the attempt logged
    assert settings["postscreen_greet_action"] == "enforce"
    # Local clients (the healthcheck, the box's own mail) skip the tests.
    assert settings["postscreen_access_list"] == "permit_mynetworks"
    # No test that disconnects a first-time client (a sender would retry only later).
    assert not any(k.startswith(("postscreen_pipelining", "postscreen_non_smtp",
                                 "postscreen_bare_newline")) for k in settings)


def test_no_dnsbl_turns_the_lookups_off(mail: Mail) -> None:
    main_cf = render_mail_files(mail.model_copy(update={"dnsbls": []}), [], b"key"
                                )["postfix/main.cf"].content
    assert "postscreen_dnsbl_sites =\n" in main_cf


def test_a_dnsbl_site_is_written_as_postfix_reads_it() -> None:
    one = Mail.model_validate({"dnsbls": [{"zone": "dnsbl.test"}]}).dnsbls[0]
    assert dnsbl_site(one) == "dnsbl.test"
    two = Mail.model_validate({"dnsbls": [{"zone": "l.test", "replies": "127.0.0.[2;4]",
                                           "weight": -1}]}).dnsbls[0]
    assert dnsbl_site(two) == "l.test=127.0.0.[2;4]*-1"


@pytest.mark.parametrize("replies", ["127.0.0", "127.0.0.2 x", "127.0.0.[2..", "any"])
def test_a_bad_answer_filter_is_refused(replies: str) -> None:
    with pytest.raises(ValidationError, match="must be an address like"):
        Mail.model_validate({"dnsbls": [{"zone": "l.test", "replies": replies}]})


def test_login_ban_defaults() -> None:
    ban = LoginBan()
    assert (ban.enabled, ban.max_failures, ban.window, ban.ban_time, ban.exempt) == (
        True, 10, "10m", "1h", [])
    with pytest.raises(ValidationError):
        LoginBan.model_validate({"max_failures": 1})


# ---------------------------------------------------------------- reading the log


def test_failed_logins_are_read_from_dovecot_and_postfix_lines() -> None:
    assert parse_failure(DOVECOT_24) == Failure("192.0.2.7", 3, "imap")
    assert parse_failure(DOVECOT_23) == Failure("2001:db8::7", 1, "imap")
    assert parse_failure(POSTFIX) == Failure("192.0.2.8", 1, "submissions")
    plain = POSTFIX.replace("postfix/submissions/smtpd", "postfix/smtpd")
    assert parse_failure(plain) == Failure("192.0.2.8", 1, "smtp")
    mapped = DOVECOT_24.replace("rip=192.0.2.7", "rip=::ffff:192.0.2.9")
    assert parse_failure(mapped) == Failure("192.0.2.9", 3, "imap")


@pytest.mark.parametrize("line", [
    "imap-login: Login: user=<admin@arkbox.test>, method=PLAIN, rip=192.0.2.7, TLS",
    "imap-login: Disconnected: Connection closed (no auth attempts in 0 secs): rip=192.0.2.7",
    "postfix/smtpd[1]: connect from unknown[192.0.2.7]",
    "postfix/smtpd[1]: warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: x"
    .replace("SASL LOGIN", "TLS library problem"),
    "imap-login: x (auth failed, 1 attempts in 2 secs): rip=not-an-address",
    "",
])
def test_other_lines_are_no_failure(line: str) -> None:
    assert parse_failure(line) is None


def test_failures_are_counted_within_the_window() -> None:
    window = FailureWindow(5, timedelta(minutes=10))
    one = Failure("192.0.2.7", 1, "imap")
    assert window.record(one, NOW) == 1
    assert window.record(Failure("192.0.2.7", 3, "imap"), NOW + timedelta(minutes=1)) == 4
    # The first has left the window 10 minutes later.
    assert window.record(one, NOW + timedelta(minutes=10)) == 4
    assert window.record(Failure("192.0.2.8", 1, "imap"), NOW + timedelta(minutes=10)) == 1
    assert window.reached(5) and not window.reached(4)
    window.record(one, NOW + timedelta(hours=1))
    assert set(window.seen) == {"192.0.2.7"}  # the quiet ones are forgotten


def settings(**changes: Any) -> GuardSettings:
    values: dict[str, Any] = {"max_failures": 3, "window_s": 600, "ban_s": 3600,
                              "exempt": ["198.51.100.0/24"], "ports": PORTS}
    values.update(changes)
    return GuardSettings(**values)


def test_the_guard_bans_at_the_limit_and_counts_afresh_after() -> None:
    guard = Guard(settings(), local=["172.17.0.0/16"])
    line = DOVECOT_24.replace("3 attempts", "1 attempts")
    assert guard.line(line, NOW) is None
    assert guard.line(line, NOW + timedelta(seconds=5)) is None
    ban = guard.line(line, NOW + timedelta(seconds=10))
    assert ban == Ban("192.0.2.7", NOW + timedelta(seconds=10),
                      NOW + timedelta(seconds=3610), 3, "imap")
    assert guard.line(line, NOW + timedelta(seconds=20)) is None  # counted afresh


def test_exempt_and_container_networks_are_never_banned() -> None:
    guard = Guard(settings(max_failures=2), local=["172.17.0.0/16"])
    for address in ("198.51.100.9", "172.17.0.5"):
        line = DOVECOT_24.replace("rip=192.0.2.7", f"rip={address}")
        assert all(guard.line(line, NOW) is None for _ in range(5)), address


# ---------------------------------------------------------------- bans and nftables


def test_the_bans_file_keeps_running_bans_only() -> None:
    running = Ban("192.0.2.7", NOW, NOW + timedelta(hours=1), 10, "imap")
    over = Ban("192.0.2.8", NOW - timedelta(hours=2), NOW - timedelta(hours=1), 10, "imap")
    assert bans_from_text(bans_text([running, over]), NOW) == [running]
    assert bans_from_text("{not json", NOW) == []
    assert bans_from_text(None, NOW) == []


def test_the_ruleset_holds_what_is_left_of_each_ban_before_the_engines_dnat() -> None:
    bans = [Ban("192.0.2.7", NOW, NOW + timedelta(minutes=30), 10, "imap"),
            Ban("2001:db8::7", NOW, NOW + timedelta(minutes=5), 10, "submission")]
    text = ruleset(bans, PORTS, NOW + timedelta(minutes=1))
    assert text.startswith("table inet arkbox_guard\ndelete table inet arkbox_guard\n")
    assert "elements = { 192.0.2.7 timeout 1740s }" in text
    assert "elements = { 2001:db8::7 timeout 240s }" in text
    assert "type filter hook prerouting priority -150; policy accept;" in text
    assert ("fib daddr type local tcp dport { 25, 465, 587, 993 } ip saddr @mail_banned_v4 drop"
            in text)
    empty = ruleset([], PORTS, NOW)
    assert "elements" not in empty and "ip6 saddr @mail_banned_v6 drop" in empty


def test_ban_and_unban_commands() -> None:
    ban = Ban("192.0.2.7", NOW, NOW + timedelta(hours=1), 10, "imap")
    assert ban_argv(ban, NOW) == ("nft", "add", "element", "inet", "arkbox_guard",
                                  "mail_banned_v4", "{ 192.0.2.7 timeout 3600s }")
    assert unban_argv("2001:db8::7") == ("nft", "delete", "element", "inet", "arkbox_guard",
                                         "mail_banned_v6", "{ 2001:db8::7 }")


def test_listed_addresses_reads_nft_json() -> None:
    listing = {"nftables": [{"metainfo": {}}, {"set": {"name": "mail_banned_v4", "elem": [
        {"elem": {"val": "192.0.2.7", "timeout": 3600, "expires": 3500}}]}}]}
    assert listed_addresses(json.dumps(listing)) == {"192.0.2.7"}


class FakeNft:
    def __init__(self) -> None:
        self.argvs: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], **_: Any) -> Completed:
        self.argvs.append(tuple(argv))
        return Completed(tuple(argv), 0, "", "")


@pytest.fixture
def nft(monkeypatch: pytest.MonkeyPatch) -> FakeNft:
    fake = FakeNft()
    monkeypatch.setattr(guard_service, "run", fake)
    return fake


def test_bans_are_recorded_enforced_and_lifted(tmp_path: Path, nft: FakeNft) -> None:
    paths = Paths(tmp_path)
    ban = Ban("192.0.2.7", NOW, NOW + timedelta(hours=1), 10, "imap")
    add_ban(paths, ban, NOW, PORTS)
    assert current_bans(paths, NOW) == [ban]
    assert nft.argvs[-1] == ban_argv(ban, NOW)
    # A restart rebuilds the table from the record, with the time left.
    assert enforce_all(paths, PORTS, NOW + timedelta(minutes=10)) == [ban]
    assert nft.argvs[-1][:2] == ("nft", "-f")
    assert "192.0.2.7 timeout 3000s" in Path(nft.argvs[-1][2]).read_text()
    assert lift_ban(paths, "192.0.2.7", NOW) == ban
    assert nft.argvs[-1] == unban_argv("192.0.2.7")
    assert current_bans(paths, NOW) == []
    assert lift_ban(paths, "192.0.2.7", NOW) is None


def test_a_ban_remakes_a_table_that_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    argvs: list[tuple[str, ...]] = []

    def nft(argv: Sequence[str], **_: Any) -> Completed:
        argvs.append(tuple(argv))
        return Completed(tuple(argv), 1 if argv[1] == "add" else 0, "", "No such file")

    monkeypatch.setattr(guard_service, "run", nft)
    ban = Ban("192.0.2.7", NOW, NOW + timedelta(hours=1), 10, "imap")
    add_ban(Paths(tmp_path), ban, NOW, PORTS)
    assert [a[:2] for a in argvs] == [("nft", "add"), ("nft", "-f")]
    assert "192.0.2.7 timeout 3600s" in Path(argvs[-1][2]).read_text()


def test_mail_unban_exit_codes(tmp_path: Path, nft: FakeNft,
                               capsys: pytest.CaptureFixture[str]) -> None:
    paths = Paths(tmp_path)
    now = datetime.now(UTC)
    add_ban(paths, Ban("192.0.2.7", now, now + timedelta(hours=1), 10, "imap"), now, PORTS)

    def code_of(*argv: str) -> int:
        with pytest.raises(SystemExit) as exited:
            main([*argv, "--root", str(tmp_path)])
        return int(str(exited.value.code))

    assert code_of("mail", "bans", "--json") == 0
    assert [b["address"] for b in json.loads(capsys.readouterr().out)["bans"]] == ["192.0.2.7"]
    assert [b["address"] for b in status_facts(paths)["bans"]] == ["192.0.2.7"]
    assert code_of("mail", "unban", "192.0.2.7") == 0
    assert "ban lifted" in capsys.readouterr().out
    assert code_of("mail", "unban", "192.0.2.7") == 1
    assert "was not banned" in capsys.readouterr().out
    assert code_of("mail", "unban", "banned.example") == 2


def test_status_shows_each_ban_until_when() -> None:
    facts = {"bans": [{**Ban("192.0.2.7", NOW, NOW + timedelta(hours=1), 10, "imap").as_json(),
                       "left_s": 3600}]}
    console = Console(width=200, record=True)
    for line in mail_ban_lines(facts):
        console.print(line)
    text = console.export_text()
    assert "mail bans: 1 address(es)" in text and "arkbox-installer mail unban" in text
    assert "192.0.2.7 until 2026-12-07 13:00:00 UTC (10 failed imap logins)" in text
    assert mail_ban_lines({"bans": []}) == []


def test_the_unit_carries_the_configs_limits(mail: Mail) -> None:
    ban = mail.login_ban.model_copy(update={"exempt": ["192.0.2.0/24"], "window": "5m"})
    chosen = GuardSettings.of(mail.model_copy(update={"login_ban": ban}), PORTS, "arkbox-mail")
    text = unit_text(chosen)
    assert ("ExecStart=/usr/local/sbin/arkbox-installer mail guard --max-failures 10 "
            "--window 300 --ban-time 3600 --ports 25,465,587,993 --container arkbox-mail "
            "--exempt 192.0.2.0/24\n") in text
    assert "CapabilityBoundingSet=CAP_NET_ADMIN" in text and "Restart=always" in text
