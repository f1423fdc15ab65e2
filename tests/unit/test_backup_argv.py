"""borg commands as data, archive names, what a backup is made of, and borg's errors explained."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from firstboot.backup import borg, timer
from firstboot.backup.backup import plan_parts
from firstboot.backup.restore import complete_backups
from firstboot.config import DEFAULT_CONFIG_PATH, Appliance, load_config
from firstboot.config.backup import Retention

REMOTE = borg.Remote("ssh://borg@backup.arkbox.test:2222/./arkbox", Path("/k/ssh-key"),
                     Path("/k/known_hosts"), pinned=False)


@pytest.fixture(scope="module")
def config() -> Appliance:
    return load_config(DEFAULT_CONFIG_PATH)


def test_ssh_command_uses_only_our_key_and_known_hosts() -> None:
    rsh = borg.ssh_command(REMOTE)
    assert "-i /k/ssh-key" in rsh and "IdentitiesOnly=yes" in rsh
    assert "UserKnownHostsFile=/k/known_hosts" in rsh and "BatchMode=yes" in rsh
    assert "StrictHostKeyChecking=accept-new" in rsh  # trust on first use without host_key
    pinned = borg.Remote(REMOTE.repository, REMOTE.ssh_key, REMOTE.known_hosts, pinned=True)
    assert "StrictHostKeyChecking=yes" in borg.ssh_command(pinned)


def test_env_carries_passphrase_and_refuses_questions() -> None:
    env = borg.borg_env(REMOTE, "s3cret", Path("/state/borg"))
    assert env["BORG_PASSPHRASE"] == "s3cret"
    assert env["BORG_REPO"] == REMOTE.repository
    assert env["BORG_BASE_DIR"] == "/state/borg"
    assert env["BORG_RELOCATED_REPO_ACCESS_IS_OK"] == "no"
    assert env["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] == "no"


def test_known_hosts_line_uses_bracketed_port() -> None:
    line = borg.known_hosts_line(REMOTE, "ssh-ed25519 AAAAKEY root@backup")
    assert line == "[backup.arkbox.test]:2222 ssh-ed25519 AAAAKEY\n"


def test_archive_names_round_trip() -> None:
    stamp = borg.archive_stamp("arkbox-test", datetime(2026, 11, 26, 3, 4, 5, tzinfo=UTC))
    assert stamp == "arkbox-test-2026-11-26T030405Z"
    base = borg.parse_archive_name(stamp)
    assert base is not None and base.host == "arkbox-test" and base.part == ""
    part = borg.parse_archive_name(stamp + ".dump-db")
    assert part is not None and part.part == ".dump-db" and part.stamp == stamp
    assert borg.parse_archive_name("something-else") is None


def test_commands() -> None:
    assert borg.init_argv() == ("borg", "init", "--encryption=repokey-blake2", "--append-only")
    assert borg.create_argv("a", ["."], compression="lz4", excludes=["./volumes/x"],
                            comment='{"a": 1}') == (
        "borg", "create", "--json", "--compression", "lz4", "--one-file-system", "--numeric-ids",
        "--exclude", "./volumes/x", "--comment", '{{"a": 1}}', "::a", ".")
    assert borg.create_from_command_argv("a.dump-db", "dumps/db/p.sql",
                                         ("docker", "exec", "c", "pg_dumpall"),
                                         compression="lz4") == (
        "borg", "create", "--json", "--compression", "lz4", "--content-from-command",
        "--stdin-name", "dumps/db/p.sql", "::a.dump-db", "--", "docker", "exec", "c",
        "pg_dumpall")
    assert borg.extract_argv("a") == ("borg", "extract", "--numeric-ids", "::a")
    assert borg.extract_stdout_argv("a.dump-db") == ("borg", "extract", "--stdout",
                                                     "::a.dump-db")
    assert borg.key_export_argv(Path("/s/k"), paper=True) == (
        "borg", "key", "export", "--paper", "::", "/s/k")
    assert borg.check_argv(verify_data=True) == ("borg", "check", "--verify-data")
    assert borg.docker_exec_argv("c", ["psql"], stdin=True) == ("docker", "exec", "-i", "c",
                                                                 "psql")
    assert borg.docker_pause_argv("c", True) == ("docker", "pause", "c")


def test_prune_per_series_with_retention() -> None:
    retention = Retention(daily=7, weekly=4, monthly=6, yearly=0)
    assert borg.prune_argv("h-*Z", retention) == (
        "borg", "prune", "--glob-archives", "h-*Z", "--keep-daily", "7", "--keep-weekly", "4",
        "--keep-monthly", "6")
    # The base series must not match the parts: each is pruned on its own.
    assert borg.prune_globs("h", [".svc-wiki", ".dump-db"]) == ["h-*Z", "h-*Z.svc-wiki",
                                                                "h-*Z.dump-db"]


def test_plan_of_the_default_appliance(config: Appliance) -> None:
    parts = plan_parts(config, lambda service, volume: True)
    by_suffix = {p.suffix: p for p in parts}
    assert list(by_suffix) == [".svc-calendar", ".dump-db", ".svc-wiki", ".svc-mail", ""]
    assert by_suffix[".svc-calendar"].pause
    assert by_suffix[".svc-calendar"].paths == ("volumes/calendar/collections",)
    dump = by_suffix[".dump-db"]
    assert dump.dump_command == ("pg_dumpall", "--clean", "--if-exists")
    assert dump.dump_file == "dumps/db/postgres.sql"
    base = by_suffix[""]
    assert base.paths == (".",)
    # Paused services' volumes are in their own part; the live db directory is not backed up.
    # The mail store too: it is a part of its own, read with arkbox-mail paused.
    assert set(base.excludes) == {"./volumes/calendar/collections", "./volumes/wiki/acl",
                                  "./volumes/wiki/data", "./volumes/db/data",
                                  "./volumes/mail/mailboxes", "./volumes/mail/queue"}
    assert parts[-1].suffix == ""  # the base, written last, marks the backup complete


def test_plan_skips_volumes_that_do_not_exist(config: Appliance) -> None:
    parts = plan_parts(config, lambda service, volume: service != "wiki")
    assert ".svc-wiki" not in {p.suffix for p in parts}


def test_mail_store_is_its_own_part_read_with_the_mail_container_paused(
        config: Appliance) -> None:
    parts = plan_parts(config, lambda service, volume: True)
    mail = next(p for p in parts if p.suffix == ".svc-mail")
    assert mail.service == "mail" and mail.pause  # arkbox-mail, paused while borg reads
    assert mail.paths == ("volumes/mail/mailboxes", "volumes/mail/queue")
    assert not mail.dump_command and not mail.excludes
    # The DKIM key stays in the base (secrets/generated), like every secret.
    base = parts[-1]
    assert base.paths == (".",) and not any("secrets" in e for e in base.excludes)
    # Only the volumes that exist (a box whose queue was never made) are in the part.
    only_boxes = plan_parts(config, lambda s, v: s != "mail" or v == "mailboxes")
    mail = next(p for p in only_boxes if p.suffix == ".svc-mail")
    assert mail.paths == ("volumes/mail/mailboxes",)
    assert "./volumes/mail/queue" not in only_boxes[-1].excludes


def test_no_mail_part_without_a_mail_store(config: Appliance) -> None:
    parts = plan_parts(config, lambda service, volume: service != "mail")
    assert ".svc-mail" not in {p.suffix for p in parts}
    assert not any("mail" in e for e in parts[-1].excludes)


def test_restore_extracts_the_mail_part_with_the_others() -> None:
    archives = [{"name": n, "time": "t"} for n in (
        "h-2026-11-25T030000Z.svc-mail", "h-2026-11-25T030000Z.svc-wiki",
        "h-2026-11-25T030000Z")]
    (backup,) = complete_backups(archives, "h")
    assert backup.parts == (".svc-mail", ".svc-wiki")
    parsed = borg.parse_archive_name("h-2026-11-25T030000Z.svc-mail")
    assert parsed is not None and parsed.part == ".svc-mail"
    assert borg.prune_globs("h", [".svc-mail"]) == ["h-*Z", "h-*Z.svc-mail"]


def test_complete_backups_groups_parts_and_ignores_other_hosts() -> None:
    archives = [{"name": n, "time": "t"} for n in (
        "h-2026-11-25T030000Z.dump-db", "h-2026-11-25T030000Z.svc-wiki", "h-2026-11-25T030000Z",
        "h-2026-11-26T030000Z.dump-db",  # cut short: no base archive
        "other-2026-11-27T030000Z", "junk")]
    backups = complete_backups(archives, "h")
    assert [b.base for b in backups] == ["h-2026-11-25T030000Z"]
    assert backups[0].parts == (".dump-db", ".svc-wiki")


@pytest.mark.parametrize(("stderr", "expected"), [
    ("passphrase supplied in BORG_PASSPHRASE, by BORG_PASSCOMMAND or via BORG_PASSPHRASE_FD "
     "is incorrect.", "wrong passphrase"),
    ("Repository ssh://x/./a does not exist.", "does not exist"),
    ("ssh: connect to host backup port 22: Connection refused\nConnection closed by remote host",
     "cannot be reached"),
    ("borg.remote.PathNotAllowed: ./other", "refuses this repository path"),
    ("Host key verification failed.", "host key"),
    ("borg@backup: Permission denied (publickey).", "refused this box's SSH key"),
    ("Archive consistency check complete, problems found.", "damaged"),
    ("Data integrity error: Segment entry checksum mismatch [segment 45, offset 20975585]",
     "damaged"),
])
def test_diagnose(stderr: str, expected: str) -> None:
    diagnosis = borg.diagnose(stderr)
    assert diagnosis is not None and expected in diagnosis[0]


def test_timer_is_daily_randomized_and_persistent() -> None:
    unit = timer.timer_unit("*-*-* 03:00")
    assert "OnCalendar=*-*-* 03:00" in unit
    assert "RandomizedDelaySec=" in unit and "Persistent=true" in unit
    assert "ExecStart=/usr/local/sbin/arkbox-installer backup" in timer.service_unit()


def test_backup_status_from_the_recorded_stats(tmp_path: Path) -> None:
    from firstboot.backup.client import backup_status, record_stats
    from firstboot.context import Paths

    paths = Paths(tmp_path)
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert backup_status(paths, now)["stale"] is True
    record_stats(paths, {"archive": "h-2026-11-26T030000Z", "finished_at":
                         "2026-11-26T03:00:00+00:00", "seconds": 20.5, "original_size": 4096,
                         "deduplicated_size": 1024, "pauses": {"wiki": 0.4}})
    fresh = backup_status(paths, now)
    assert fresh["last"] == "h-2026-11-26T030000Z" and fresh["dedup_ratio"] == 4.0
    assert fresh["stale"] is False and "warning" not in fresh
    later = backup_status(paths, datetime(2026, 11, 27, 6, 0, tzinfo=UTC))
    assert later["stale"] is True and "27 h old" in later["warning"]


def test_a_full_check_with_errors_is_diagnosed_as_damage() -> None:
    from firstboot.backup.borg import diagnose

    stderr = ("Remote: ID: 109d2c1e rebuilt index: <not found>  committed index: (45, 6292052)\n"
              "Remote: Finished full repository check, errors found.")
    found = diagnose(stderr)
    assert found is not None and "damaged" in found[0]
