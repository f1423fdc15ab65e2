"""The conditions: pure functions from the box's facts to a verdict per alert.

Each returns {alert key: verdict}. `Raised` says what is wrong and the fix;
`CLEAR` says the condition is over; `UNKNOWN` (no data to judge) leaves the alert
as it was. A key a condition no longer returns (a service removed from the
config) is cleared by the state, unless its family (the key up to ":") is
UNKNOWN as a whole. `Raised.hold` asks the state to wait that long
before it fires (a service restarting is not yet an outage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from firstboot.alerts.facts import BoxFacts, parse_time
from firstboot.core.config.alerts import Thresholds
from firstboot.core.config.scalars import period_seconds


@dataclass(frozen=True)
class Raised:
    title: str  # one line: what is wrong
    fix: str  # what to do about it
    hold: timedelta = timedelta(0)


class Judged(Enum):
    CLEAR = "clear"
    UNKNOWN = "unknown"


CLEAR = Judged.CLEAR
UNKNOWN = Judged.UNKNOWN
Verdict = Raised | Judged
Verdicts = dict[str, Verdict]


def _period(value: str) -> timedelta:
    return timedelta(seconds=period_seconds(value))


def backup_failed(facts: BoxFacts, limits: Thresholds) -> Verdicts:
    if not facts.backups_enabled:
        return {"backup_failed": CLEAR}
    failure = facts.backup_failure
    if failure is None:
        return {"backup_failed": CLEAR}
    hint = failure.get("hint")
    return {"backup_failed": Raised(
        f"the backup failed ({failure.get('at')}): {failure.get('message')}",
        (f"{hint}; then " if hint else "") + "run: arkbox-installer backup "
        "(journalctl -u arkbox-backup shows the run)")}


def backup_stale(facts: BoxFacts, limits: Thresholds) -> Verdicts:
    if not facts.backups_enabled:
        return {"backup_stale": CLEAR}
    limit = _period(limits.backup_age)
    last = parse_time((facts.last_backup or {}).get("finished_at"))
    since = last or facts.first_boot_done
    if since is None:
        return {"backup_stale": UNKNOWN}  # first boot is still running
    if facts.now - since <= limit:
        return {"backup_stale": CLEAR}
    hours = (facts.now - since).total_seconds() / 3600
    what = (f"the last successful backup is {hours:.0f} h old" if last else
            f"no backup has succeeded in the {hours:.0f} h since first boot")
    return {"backup_stale": Raised(
        f"{what} (more than {limits.backup_age})",
        "see why: journalctl -u arkbox-backup; is the timer on: systemctl list-timers "
        "arkbox-backup.timer; then run: arkbox-installer backup")}


def drill_failed(facts: BoxFacts, limits: Thresholds) -> Verdicts:
    drill = facts.last_drill
    if drill is None or drill.get("result") == "pass":
        return {"drill_failed": CLEAR}
    return {"drill_failed": Raised(
        f"the restore drill of {drill.get('archive')} failed ({drill.get('started_at')}): "
        f"{drill.get('failure')}",
        (f"{drill['hint']}; " if drill.get("hint") else "the backup may not restore: ")
        + "read the report (arkbox-installer drill --json), fix the service or the backup, "
        "then run: arkbox-installer drill")}


def verify_failed(facts: BoxFacts, limits: Thresholds) -> Verdicts:
    verify = facts.last_verify
    if verify is None or verify.get("ok"):
        return {"verify_failed": CLEAR}
    return {"verify_failed": Raised(
        f"check --verify-data failed ({verify.get('at')}): {verify.get('message')}",
        "some backup data may not read back: run arkbox-installer check --verify-data again; "
        "if it fails again, make a fresh backup and see docs/backup.md (repair)")}


def certificate(facts: BoxFacts, limits: Thresholds) -> Verdicts:
    cert = facts.certificate
    if cert is None:
        return {"certificate": UNKNOWN}
    fix = ("see why: arkbox-installer status (renewal) and journalctl -u arkbox-renew; "
           "check DNS points at this box and port 80 is reachable, then run: "
           "arkbox-installer renew")
    if cert.get("source") == "fallback":
        done = facts.first_boot_done
        if done is None or facts.now - done <= _period(limits.fallback_certificate):
            return {"certificate": CLEAR}
        return {"certificate": Raised(
            f"the self-signed fallback certificate is still served, {limits.fallback_certificate}"
            f" after first boot: {cert.get('reason', 'no certificate from the CA yet')}", fix)}
    not_after = parse_time(cert.get("not_after"))
    if not_after is None:
        return {"certificate": UNKNOWN}
    left = not_after - facts.now
    if left >= _period(limits.certificate_days_left):
        return {"certificate": CLEAR}
    error = (cert.get("renewal") or {}).get("last_error")
    when = "expired" if left <= timedelta(0) else f"expires in {left.days} days"
    return {"certificate": Raised(
        f"the certificate {when} ({not_after:%Y-%m-%d %H:%M} UTC) and was not renewed"
        + (f": {error}" if error else ""), fix)}


def services(facts: BoxFacts, limits: Thresholds) -> Verdicts:
    running = (facts.last_run or {}).get("result") == "running"
    if facts.services is None or facts.first_boot_done is None or running:
        # No engine answer, or first boot / apply is making the containers: the family
        # marker keeps what fires and starts nothing.
        return {"service": UNKNOWN}
    hold = _period(limits.service_unhealthy)
    verdicts: Verdicts = {}
    for health in facts.services:
        key = f"service:{health.name}"
        if health.problem is None:
            verdicts[key] = CLEAR
            continue
        verdicts[key] = Raised(
            f"service {health.name} is not healthy: {health.problem}",
            f"see why: docker logs arkbox-{health.name} (or arkbox-installer status); "
            "arkbox-installer apply recreates it from the config", hold=hold)
    return verdicts


def disks(facts: BoxFacts, limits: Thresholds) -> Verdicts:
    verdicts: Verdicts = {}
    limit = limits.disk_percent
    for disk in facts.disks:
        for kind, used in (("space", disk.space_percent), ("inodes", disk.inode_percent)):
            key = f"disk:{disk.mount}:{kind}"
            if used is None or used <= limit:
                verdicts[key] = CLEAR
                continue
            fix = (f"see what grows: du -xh --max-depth=2 {disk.mount} | sort -h | tail; "
                   "old journal: journalctl --vacuum-size=200M; or grow the disk"
                   if kind == "space" else
                   f"many small files: find {disk.mount} -xdev -type f | cut -d/ -f1-4 | "
                   "sort | uniq -c | sort -n | tail")
            verdicts[key] = Raised(f"{kind} use of {disk.mount} is {used:.0f} % "
                                   f"(above {limit} %)", fix)
    return verdicts


def last_run_failed(facts: BoxFacts, limits: Thresholds) -> Verdicts:
    run = facts.last_run
    if run is None or run.get("result") in (None, "running"):
        return {"run_failed": UNKNOWN}
    if run.get("result") != "failed":
        return {"run_failed": CLEAR}
    failures = run.get("failures") or [{}]
    first = failures[0]
    command = run.get("command", "firstboot")
    fix = first.get("hint") or "see arkbox-installer status"
    return {"run_failed": Raised(
        f"{command} failed at step {first.get('step')}: {first.get('message')}",
        f"{fix}; then run: arkbox-installer apply")}


def reboot_pending(facts: BoxFacts, limits: Thresholds) -> Verdicts:
    since = facts.reboot_required_since
    if since is None or facts.now - since <= _period(limits.reboot_pending):
        return {"reboot_pending": CLEAR}
    days = (facts.now - since).days
    return {"reboot_pending": Raised(
        f"the host has needed a reboot for {days} days (updates installed {since:%Y-%m-%d} "
        "wait for it)",
        "reboot at a quiet time: systemctl reboot (the box comes back by itself); or set "
        "build.hardening.auto_reboot")}


UPDATE_FAILED = ("rolled back", "failed", "interrupted")


def update_failed(facts: BoxFacts, limits: Thresholds) -> Verdicts:
    """The last update failed (rolled back, or failed before or after changing files, or
    cut off); else the last unattended fetch failed or was refused (a bad signature)."""
    update, fetch = facts.last_update, facts.last_fetch
    if update is not None and update.get("result") in UPDATE_FAILED:
        version = (update.get("version") or ["?", "?"])[-1]
        hint = update.get("hint")
        return {"update_failed": Raised(
            f"the update to arkbox {version} ({update.get('started_at')}) "
            f"{update.get('result')}: {update.get('failure')}",
            (f"{hint}; " if hint else "") + "arkbox-installer status shows the update; "
            "the box runs its previous build")}
    if fetch is not None and fetch.get("result") in ("failed", "refused"):
        return {"update_failed": Raised(
            f"the unattended update ({fetch.get('at')}) {fetch.get('result')}: "
            f"{fetch.get('message')}",
            "journalctl -u arkbox-update shows the run; check updates.url and the "
            "published bundle's .sig; the box runs its current build meanwhile")}
    return {"update_failed": CLEAR}


def package_files(facts: BoxFacts, limits: Thresholds) -> Verdicts:
    """The weekly check of package files (debsums) found a packaged file changed."""
    check = facts.package_check
    if check is None:
        return {"package_files": UNKNOWN}
    if not check.failed:
        return {"package_files": CLEAR}
    when = f" ({check.finished:%Y-%m-%d %H:%M} UTC)" if check.finished else ""
    return {"package_files": Raised(
        f"installed files differ from their packages' checksums: the check of package "
        f"files{when} failed",
        "see which: journalctl -u arkbox-debsums; a file nobody changed on purpose means "
        "an intruder or a failing disk: flash a new box with the same seed (its first "
        "boot restores the data) and retire this one; once explained (apt-get install "
        "--reinstall PACKAGE), check again: systemctl start arkbox-debsums")}


CONDITIONS: tuple[Callable[[BoxFacts, Thresholds], Verdicts], ...] = (
    backup_failed, backup_stale, drill_failed, verify_failed, certificate, services, disks,
    last_run_failed, reboot_pending, update_failed, package_files)


def evaluate(facts: BoxFacts, limits: Thresholds) -> Verdicts:
    """Every condition's verdicts, in one mapping."""
    verdicts: Verdicts = {}
    for condition in CONDITIONS:
        verdicts.update(condition(facts, limits))
    return verdicts
