"""borg commands as data, archive names, what a backup is made of, and borg's errors explained."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from firstboot.backup import borg, timer
from firstboot.backup.client import BackupError
from firstboot.backup.feed import plan_backup
from firstboot.backup.restore import Contents, complete_backups, extract_jobs, read_contents
from firstboot.core.config import DEFAULT_CONFIG_PATH, Appliance, load_config
from firstboot.core.config.backup import Retention

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
    name = borg.parse_archive_name(stamp)
    assert name is not None and name.host == "arkbox-test"
    assert borg.parse_archive_name(stamp + ".checkpoint") is None  # a run cut short
    assert borg.parse_archive_name("something-else") is None


def test_commands() -> None:
    assert borg.init_argv() == ("borg", "init", "--encryption=repokey-blake2", "--append-only",
                                "--make-parent-dirs")
    assert borg.create_argv("a", ["."], compression="lz4", excludes=["./volumes/x"],
                            comment='{"a": 1}') == (
        "borg", "create", "--json", "--compression", "lz4", "--one-file-system", "--numeric-ids",
        "--exclude", "./volumes/x", "--comment", '{{"a": 1}}', "::a", ".")
    assert borg.create_from_stdin_argv("a", compression="lz4", comment='{"b": 2}') == (
        "borg", "create", "--json", "--compression", "lz4", "--numeric-ids",
        "--paths-from-stdin", "--paths-delimiter", "\\0", "--read-special",
        "--comment", '{{"b": 2}}', "::a")
    assert borg.extract_argv("a") == ("borg", "extract", "--numeric-ids", "::a")
    assert borg.extract_argv("a", ["volumes/wiki"], patterns=["-pp:x"]) == (
        "borg", "extract", "--numeric-ids", "--pattern=-pp:x", "::a", "volumes/wiki")
    assert borg.key_export_argv(Path("/s/k"), paper=True) == (
        "borg", "key", "export", "--paper", "::", "/s/k")
    assert borg.check_argv(verify_data=True) == ("borg", "check", "--verify-data")
    assert borg.docker_exec_argv("c", ["psql"], stdin=True) == ("docker", "exec", "-i", "c",
                                                                 "psql")


def test_borg_create_reads_the_data_through_a_private_nodev_nosymfollow_view() -> None:
    argv = borg.in_private_view(Path("/srv/arkbox"), ("borg", "create", "::a"))
    assert argv[:5] == ("unshare", "--mount", "--propagation", "private", "--")
    shell, option, script, name, data, *rest = argv[5:]
    assert (shell, option, name, data, rest) == (
        "sh", "-c", "sh", "/srv/arkbox", ["borg", "create", "::a"])
    # The data directory is an argument, never spliced into the script.
    assert "remount,bind,nodev,nosymfollow" in script and "/srv" not in script
    assert script.index("mount -o remount") < script.index('cd "$1"') < script.index("exec")
    what, hint = borg.diagnose("mount: /srv/arkbox: permission denied.") or ("", "")
    assert "private view" in what and "nosymfollow" in hint


def test_list_items_is_one_json_object_a_line() -> None:
    assert borg.list_items_argv("a") == ("borg", "list", "--json-lines", "::a")


def test_prune_with_retention_never_touches_checkpoints() -> None:
    retention = Retention(daily=7, weekly=4, monthly=6, yearly=0)
    assert borg.prune_argv("h-*Z", retention) == (
        "borg", "prune", "--glob-archives", "h-*Z", "--keep-daily", "7", "--keep-weekly", "4",
        "--keep-monthly", "6")
    assert borg.archive_glob("h") == "h-*Z"  # "h-...Z.checkpoint" does not match


def test_plan_of_the_default_appliance(config: Appliance) -> None:
    plan = plan_backup(config, lambda service, volume: True)
    assert [(p.service, p.paths) for p in plan.paused] == [
        ("calendar", ("volumes/calendar/collections",)),
        ("wiki", ("volumes/wiki/acl", "volumes/wiki/data")),
        # The mail store, read with arkbox-mail paused, after the services.
        ("mail", ("volumes/mail/mailboxes", "volumes/mail/queue", "volumes/mail/spam"))]
    (dump,) = plan.dumps
    assert dump.service == "db" and dump.command == ("pg_dumpall", "--clean", "--if-exists")
    assert dump.path == ".backup/dumps/db/postgres.sql"
    # The live walk leaves out what is read paused, the live db directory and the run dir;
    # secrets (with the DKIM key) are in it.
    assert plan.skip == {".backup", "volumes/calendar/collections", "volumes/wiki/acl",
                         "volumes/wiki/data", "volumes/db/data", "volumes/mail/mailboxes",
                         "volumes/mail/queue", "volumes/mail/spam"}
    comment = plan.comment("h")
    assert comment == {"arkbox": "backup", "format": 2, "appliance": "h",
                       "paused": ["calendar", "wiki", "mail"],
                       "dumps": {"db": ".backup/dumps/db/postgres.sql"}}


def test_plan_skips_volumes_that_do_not_exist(config: Appliance) -> None:
    plan = plan_backup(config, lambda service, volume: service != "wiki")
    assert "wiki" not in {p.service for p in plan.paused}
    only_boxes = plan_backup(config, lambda s, v: s != "mail" or v == "mailboxes")
    assert only_boxes.paused[-1].paths == ("volumes/mail/mailboxes",)
    assert "volumes/mail/queue" not in only_boxes.skip
    no_mail = plan_backup(config, lambda service, volume: service != "mail")
    assert "mail" not in {p.service for p in no_mail.paused}


def test_restore_extracts_paused_volumes_beside_the_rest() -> None:
    contents = Contents(("wiki", "mail"), {"db": ".backup/dumps/db/p.sql"})
    jobs = dict(extract_jobs("h-2026-11-25T030000Z", contents))
    assert jobs["the rest"] == (
        "borg", "extract", "--numeric-ids", "--pattern=+pp:.backup/specials.json",
        "--pattern=+pp:.backup/dumps", "--pattern=-pp:.backup", "--pattern=-pp:volumes/wiki",
        "--pattern=-pp:volumes/mail", "::h-2026-11-25T030000Z")
    assert jobs["volumes/mail"] == ("borg", "extract", "--numeric-ids",
                                    "::h-2026-11-25T030000Z", "volumes/mail")
    assert len(jobs) == 3


def test_backups_are_whole_archives_of_this_host() -> None:
    archives = [{"name": n, "time": "t"} for n in (
        "h-2026-11-26T030000Z", "h-2026-11-25T030000Z",
        "h-2026-11-27T030000Z.checkpoint",  # cut short: not a backup
        "other-2026-11-27T030000Z", "junk")]
    backups = complete_backups(archives, "h")
    assert [b.name for b in backups] == ["h-2026-11-25T030000Z", "h-2026-11-26T030000Z"]


def test_the_restore_reads_only_backups_it_can_restore() -> None:
    def info(comment: str) -> dict[str, object]:
        return {"archives": [{"comment": comment}]}

    contents = read_contents(info('{"arkbox": "backup", "format": 2, "paused": ["wiki"], '
                                  '"dumps": {"db": "x"}}'), "a")
    assert contents == Contents(("wiki",), {"db": "x"})
    with pytest.raises(BackupError, match="not made by arkbox-installer backup"):
        read_contents(info(""), "a")
    with pytest.raises(BackupError, match="format 1; this version restores format 2"):
        read_contents(info('{"arkbox": "backup", "parts": [".svc-wiki"]}'), "a")


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
    # seen in CI: a flipped byte in a segment, and no "errors found" line after it
    ("Remote: ID: 3bbd2c3f rebuilt index: <not found>      committed index: (29, 62920616)",
     "damaged"),
    # borg 1.2/1.4 over a forced --storage-quota (tests/integration/test_borg_quota.py)
    ("The storage quota (10.00 MB) has been exceeded (13.87 MB). Try deleting some archives.",
     "storage quota"),
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
    from firstboot.core.context import Paths

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


def test_list_shows_each_archive_with_its_size_files_and_duration() -> None:
    from firstboot.backup.cli import archive_table

    table = archive_table([{"name": "h-2026-11-25T030000Z", "start": "2026-11-25T03:00:00.123",
                            "duration": 41.2, "stats": {"original_size": 3 << 30,
                                                        "deduplicated_size": 5 << 20,
                                                        "nfiles": 20412}}])
    assert table[1].split() == ["h-2026-11-25T030000Z", "2026-11-25", "03:00:00", "3.0", "GiB",
                                "5.0", "MiB", "20412", "41s"]
    assert "no archives yet" in archive_table([])[1]
    assert borg.info_archives_argv("h-*") == ("borg", "info", "--json", "--glob-archives", "h-*")
