"""Issue 16: each alert condition, from its input (the box's facts) to raise / clear /
nothing, and each raised alert says what is wrong and the fix."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from firstboot.alerts import conditions
from firstboot.alerts.conditions import CLEAR, UNKNOWN, Raised, Verdict
from firstboot.alerts.facts import BoxFacts, DiskUse, PackageCheck, ServiceHealth
from firstboot.alerts.gather import package_check_argv, parse_package_check
from firstboot.core.config.alerts import Thresholds

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
LIMITS = Thresholds()
BOOTED = NOW - timedelta(days=3)
HEALTHY = BoxFacts(
    now=NOW, first_boot_done=BOOTED,
    last_run={"command": "apply", "result": "ok", "failures": []},
    backups_enabled=True,
    last_backup={"archive": "a", "finished_at": (NOW - timedelta(hours=9)).isoformat()},
    certificate={"source": "acme", "not_after": (NOW + timedelta(days=60)).isoformat(),
                 "renewal": {}},
    services=[ServiceHealth("wiki", None), ServiceHealth("proxy", None)],
    disks=[DiskUse("/", 40.0, 10.0), DiskUse("/srv", 50.0, 5.0)],
    package_check=PackageCheck(failed=False, finished=NOW - timedelta(days=2)),
)


def raised(verdict: Verdict) -> Raised:
    assert isinstance(verdict, Raised), verdict
    assert verdict.title and verdict.fix  # what is wrong, and what to do
    return verdict


def test_a_healthy_box_raises_nothing() -> None:
    verdicts = conditions.evaluate(HEALTHY, LIMITS)
    assert verdicts and all(v is CLEAR for v in verdicts.values()), verdicts


def test_backup_failed_raises_with_the_recorded_hint_and_clears_on_success() -> None:
    failed = replace(HEALTHY, backup_failure={"at": "2026-12-05T03:00:00+00:00",
                                              "message": "the backup server did not answer",
                                              "hint": "is backup.arkbox.test up?"})
    verdict = raised(conditions.backup_failed(failed, LIMITS)["backup_failed"])
    assert "did not answer" in verdict.title and "is backup.arkbox.test up?" in verdict.fix
    assert conditions.backup_failed(HEALTHY, LIMITS) == {"backup_failed": CLEAR}
    off = replace(failed, backups_enabled=False)
    assert conditions.backup_failed(off, LIMITS) == {"backup_failed": CLEAR}


@pytest.mark.parametrize(("age_h", "expected"), [(25, "clear"), (27, "raise")])
def test_no_successful_backup_for_26_hours(age_h: int, expected: str) -> None:
    facts = replace(HEALTHY, last_backup={
        "finished_at": (NOW - timedelta(hours=age_h)).isoformat()})
    verdict = conditions.backup_stale(facts, LIMITS)["backup_stale"]
    if expected == "clear":
        assert verdict is CLEAR
    else:
        assert "27 h old" in raised(verdict).title


def test_no_backup_ever_counts_from_first_boot_and_waits_for_it() -> None:
    never = replace(HEALTHY, last_backup=None)
    assert "since first boot" in raised(conditions.backup_stale(never, LIMITS)[
        "backup_stale"]).title
    fresh = replace(never, first_boot_done=NOW - timedelta(hours=2))
    assert conditions.backup_stale(fresh, LIMITS)["backup_stale"] is CLEAR
    booting = replace(never, first_boot_done=None)
    assert conditions.backup_stale(booting, LIMITS)["backup_stale"] is UNKNOWN
    shorter = Thresholds(backup_age="1h")
    assert isinstance(conditions.backup_stale(fresh, shorter)["backup_stale"], Raised)


def test_drill_and_verify_data_failures() -> None:
    drill = replace(HEALTHY, last_drill={"result": "fail", "archive": "a-1",
                                         "started_at": "x", "failure": "wiki never healthy"})
    assert "wiki never healthy" in raised(conditions.drill_failed(drill, LIMITS)[
        "drill_failed"]).title
    passed = replace(HEALTHY, last_drill={"result": "pass"})
    assert conditions.drill_failed(passed, LIMITS)["drill_failed"] is CLEAR
    verify = replace(HEALTHY, last_verify={"at": "x", "ok": False, "message": "chunk damaged"})
    assert "chunk damaged" in raised(conditions.verify_failed(verify, LIMITS)[
        "verify_failed"]).title
    good = replace(HEALTHY, last_verify={"ok": True})
    assert conditions.verify_failed(good, LIMITS)["verify_failed"] is CLEAR


@pytest.mark.parametrize(("days_left", "expected"), [(20, "clear"), (13, "raise"),
                                                     (-1, "expired")])
def test_certificate_not_renewed_with_less_than_14_days(days_left: int, expected: str) -> None:
    facts = replace(HEALTHY, certificate={
        "source": "acme", "not_after": (NOW + timedelta(days=days_left)).isoformat(),
        "renewal": {"last_error": "DNS problem: NXDOMAIN"}})
    verdict = conditions.certificate(facts, LIMITS)["certificate"]
    if expected == "clear":
        assert verdict is CLEAR
        return
    title = raised(verdict).title
    assert ("expired" in title) == (expected == "expired")
    assert "NXDOMAIN" in title and "renew" in raised(verdict).fix


def test_fallback_certificate_24_hours_after_first_boot() -> None:
    fallback = {"source": "fallback", "reason": "the CA refused the order"}
    early = replace(HEALTHY, certificate=fallback, first_boot_done=NOW - timedelta(hours=5))
    assert conditions.certificate(early, LIMITS)["certificate"] is CLEAR
    late = replace(early, first_boot_done=NOW - timedelta(hours=25))
    assert "refused the order" in raised(conditions.certificate(late, LIMITS)[
        "certificate"]).title
    unknown = replace(HEALTHY, certificate=None)
    assert conditions.certificate(unknown, LIMITS)["certificate"] is UNKNOWN


def test_an_unhealthy_service_raises_after_its_hold_time() -> None:
    sick = replace(HEALTHY, services=[ServiceHealth("wiki", "unhealthy (last check exit 1)"),
                                      ServiceHealth("proxy", None)])
    verdicts = conditions.services(sick, LIMITS)
    assert raised(verdicts["service:wiki"]).hold == timedelta(minutes=5)
    assert "docker logs arkbox-wiki" in raised(verdicts["service:wiki"]).fix
    assert verdicts["service:proxy"] is CLEAR


def test_services_are_not_judged_without_the_engine_or_during_a_run() -> None:
    for facts in (replace(HEALTHY, services=None), replace(HEALTHY, first_boot_done=None),
                  replace(HEALTHY, last_run={"command": "apply", "result": "running"})):
        assert conditions.services(facts, LIMITS) == {"service": UNKNOWN}


def test_disk_space_and_inodes_above_85_percent() -> None:
    full = replace(HEALTHY, disks=[DiskUse("/", 86.2, 10.0), DiskUse("/srv", 20.0, 91.0)])
    verdicts = conditions.disks(full, LIMITS)
    assert "space use of / is 86 %" in raised(verdicts["disk:/:space"]).title
    assert verdicts["disk:/:inodes"] is CLEAR
    assert "du -xh" in raised(verdicts["disk:/:space"]).fix
    assert "inodes use of /srv is 91 %" in raised(verdicts["disk:/srv:inodes"]).title
    no_inode_limit = replace(HEALTHY, disks=[DiskUse("/", 10.0, None)])
    assert conditions.disks(no_inode_limit, LIMITS)["disk:/:inodes"] is CLEAR


def test_a_failed_first_boot_or_apply_raises_with_the_step_and_its_hint() -> None:
    failed = replace(HEALTHY, last_run={"command": "apply", "result": "failed", "failures": [
        {"step": "mail", "message": "postfix did not start", "hint": "see docker logs"}]})
    verdict = raised(conditions.last_run_failed(failed, LIMITS)["run_failed"])
    assert verdict.title == "apply failed at step mail: postfix did not start"
    assert verdict.fix.startswith("see docker logs")
    running = replace(HEALTHY, last_run={"command": "firstboot", "result": "running"})
    assert conditions.last_run_failed(running, LIMITS)["run_failed"] is UNKNOWN
    assert conditions.last_run_failed(HEALTHY, LIMITS)["run_failed"] is CLEAR


def test_a_reboot_pending_for_more_than_7_days() -> None:
    recent = replace(HEALTHY, reboot_required_since=NOW - timedelta(days=6))
    assert conditions.reboot_pending(recent, LIMITS)["reboot_pending"] is CLEAR
    old = replace(HEALTHY, reboot_required_since=NOW - timedelta(days=8))
    assert "8 days" in raised(conditions.reboot_pending(old, LIMITS)["reboot_pending"]).title


def test_a_failed_check_of_package_files_raises_until_a_run_passes() -> None:
    failed = replace(HEALTHY, package_check=PackageCheck(failed=True, finished=BOOTED))
    verdict = raised(conditions.package_files(failed, LIMITS)["package_files"])
    assert "differ from their packages' checksums" in verdict.title
    assert "2026-12-02 12:00 UTC" in verdict.title
    assert "journalctl -u arkbox-debsums" in verdict.fix
    assert conditions.package_files(HEALTHY, LIMITS)["package_files"] is CLEAR
    unknown = replace(HEALTHY, package_check=None)  # not installed, or systemd silent
    assert conditions.package_files(unknown, LIMITS)["package_files"] is UNKNOWN


def test_the_check_of_package_files_is_read_from_its_unit() -> None:
    assert package_check_argv()[:2] == ("systemctl", "show")
    failed = parse_package_check("LoadState=loaded\nActiveState=failed\nResult=exit-code\n"
                                 "ExecMainExitTimestamp=@1764936000\n")
    assert failed == PackageCheck(failed=True,
                                  finished=datetime(2025, 12, 5, 12, 0, tzinfo=UTC))
    passed = parse_package_check("LoadState=loaded\nActiveState=inactive\nResult=success\n"
                                 "ExecMainExitTimestamp=@1764936000\n")
    assert passed is not None and not passed.failed
    never_ran = parse_package_check("LoadState=loaded\nActiveState=inactive\n"
                                    "Result=success\nExecMainExitTimestamp=\n")
    assert never_ran == PackageCheck(failed=False, finished=None)
    assert parse_package_check("LoadState=not-found\nActiveState=inactive\n") is None
