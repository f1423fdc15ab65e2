"""`arkbox-installer status`: the last run on one screen (rich); the JSON and the
screen of a box that has not run are in firstboot/status.py, without rich.

One screen: when it ran and how it ended, each step with its state, the
certificate (real or fallback, until when), backups (last, size, dedup, duration,
next run, warnings), and every failure with its fix.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from firstboot.status import NOT_RUN_TEXT, RunResult, Status, StepState

STATE_STYLES = {
    StepState.CHANGED: "yellow",
    StepState.UNCHANGED: "green",
    StepState.OK: "green",
    StepState.SKIPPED: "dim",
    StepState.FAILED: "bold red",
    StepState.NOT_RUN: "dim",
    StepState.PENDING: "dim",
    StepState.RUNNING: "cyan",
}
RESULT_STYLES = {RunResult.OK: "green", RunResult.FAILED: "bold red", RunResult.RUNNING: "cyan",
                 RunResult.INTERRUPTED: "bold red"}


def seed_lines(seed: dict[str, Any]) -> list[Text]:
    """Where the box's secrets came from (seed.json, written by the seed step)."""
    if "error" in seed:
        return [Text.assemble(("seed: ", "bold"), (str(seed["error"]), "yellow"))]
    installed = seed.get("installed") or []
    lines = [Text.assemble(("seed: ", "bold"), (str(seed.get("source")), "green"),
                           f" · {seed.get('where')} · {_when(seed.get('installed_at'))}"
                           f" · {len(installed)} secrets installed"),
             Text(f"  wiped: {seed.get('wiped')}", style="dim")]
    for warning in seed.get("warnings") or []:
        lines.append(Text.assemble(("⚠ ", "yellow"), ("seed", "bold"), f": {warning}"))
    return lines


def human_size(size: float) -> str:
    """1536 -> "1.5 KiB"; binary units, as borg and du -h."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError  # unreachable


def backup_lines(backup: dict[str, Any]) -> list[Text]:
    """The backup part of the status screen (from client.backup_status)."""
    if not backup.get("enabled", True):
        return [Text.assemble(("backup: ", "bold"), ("off", "dim"),
                              " (no backup.repository in the config)")]
    lines = []
    if backup.get("last") and backup.get("finished_at"):
        ratio = backup.get("dedup_ratio")
        seconds = backup.get("seconds")
        facts = [f"{_when(backup.get('finished_at'))} ({backup.get('age_hours', 0):.0f} h ago)",
                 f"{human_size(backup.get('original_size', 0))}, "
                 f"{human_size(backup.get('deduplicated_size', 0))} new"
                 + (f" (dedup {ratio:.1f}x)" if ratio else ""),
                 f"took {seconds:.0f} s" if isinstance(seconds, int | float) else ""]
        pauses = backup.get("pauses") or {}
        if pauses:
            facts.append("paused " + ", ".join(f"{k} {v:.1f} s" for k, v in pauses.items()))
        style = "yellow" if backup.get("stale") else "green"
        lines.append(Text.assemble(("last backup: ", "bold"), (str(backup["last"]), style),
                                   " · " + " · ".join(f for f in facts if f)))
    else:
        lines.append(Text.assemble(("last backup: ", "bold"), ("none yet", "yellow")))
    lines.append(Text.assemble(("next backup: ", "bold"),
                               _when(backup.get("next_run")) if backup.get("next_run")
                               else Text("not scheduled", "yellow")))
    drill = backup.get("last_drill")
    if drill:
        lines.append(Text.assemble(("last drill: ", "bold"),
                                   (str(drill.get("result")),
                                    "green" if drill.get("result") == "pass" else "bold red"),
                                   f" · {_when(drill.get('started_at'))} · {drill.get('archive')}"))
    drills = backup.get("drills") or []
    if drills:
        passed = sum(1 for entry in drills if entry.get("result") == "pass")
        lines.append(Text(f"  drills: {passed} of the last {len(drills)} passed", style="dim"))
    for warning in backup.get("warnings", []):
        lines.append(Text.assemble(("⚠ ", "yellow"), ("backup", "bold"), f": {warning}"))
    return lines


QUEUE_SHOWN = 3  # the screen shows a few queued deliveries; --json has them all


def alert_lines(alerts: dict[str, Any]) -> list[Text]:
    """The alert part of the status screen (from alerts.status.alert_status)."""
    firing = alerts.get("firing") or []
    lines = [Text.assemble(("alerts: ", "bold"),
                           (f"{len(firing)} firing", "bold red") if firing
                           else ("none firing", "green"),
                           f" · last check {_when(alerts.get('last_check'))}")]
    for alert in firing:
        lines.append(Text.assemble(("⚠ ", "bold red"), (str(alert.get("alert")), "bold"),
                                   f" since {_when(alert.get('since'))}: {alert.get('title')}"))
        lines.append(Text(f"  fix: {alert.get('fix')}"))
    last = alerts.get("last_delivery")
    if last:
        result = ("delivered", "green") if last.get("ok") else (
            f"failed: {last.get('error')}", "yellow")
        lines.append(Text.assemble("  last delivery: ", f"{last.get('kind')} "
                                   f"{last.get('alert')} to {last.get('shown')} at "
                                   f"{_when(last.get('at'))}: ", result))
    queue = alerts.get("queue") or []
    for item in queue[:QUEUE_SHOWN]:
        lines.append(Text(f"  queued: {item.get('kind')} {item.get('alert')} to "
                          f"{item.get('destination')}, attempt {item.get('attempts')}, next "
                          f"{_when(item.get('next_attempt'))}: {item.get('last_error')}",
                          style="yellow"))
    if len(queue) > QUEUE_SHOWN:
        lines.append(Text(f"  … and {len(queue) - QUEUE_SHOWN} more queued (status --json "
                          "lists them)", style="yellow"))
    problems = [d for d in alerts.get("destinations") or [] if d.get("problem")]
    for destination in problems:
        lines.append(Text(f"  ⚠ {destination.get('name')}: {destination.get('problem')}",
                          style="yellow"))
    email = alerts.get("email")
    if email not in (None, "on"):
        lines.append(Text(f"  email: {email}", style="dim"))
    return lines


UPDATE_STYLES = {"ok": "green", "running": "cyan"}


def update_lines(update: dict[str, Any]) -> list[Text]:
    """The last update (firstboot/updates/record.py), with what failed and the fix."""
    version = update.get("version") or ["?", "?"]
    result = str(update.get("result"))
    changed = ", ".join(update.get("images_changed") or []) or "no image"
    backup = update.get("backup_archive")
    lines = [Text.assemble(("update: ", "bold"), (result, UPDATE_STYLES.get(result, "bold red")),
                           f" · arkbox {version[0]} → {version[1]} ({changed} changed)"
                           f" · started {_when(update.get('started_at'))}"
                           + (f" · backup before it: {backup}" if backup else ""))]
    if update.get("failure"):
        lines.append(Text(f"  {update['failure']}"))
    if update.get("hint"):
        lines.append(Text(f"  hint: {update['hint']}"))
    return lines


def fetch_line(fetch: dict[str, Any]) -> Text:
    """The last unattended fetch (firstboot/updates/fetch.py)."""
    result = str(fetch.get("result"))
    style = "bold red" if result in ("failed", "refused") else "green"
    return Text.assemble(("unattended update: ", "bold"), (result, style),
                         f" · {_when(fetch.get('at'))} · {fetch.get('message')}")


def _when(iso: str | None) -> str:
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return iso


def render_status(status: Status, certificate: dict[str, Any] | None = None,
                  backup: dict[str, Any] | None = None,
                  seed: dict[str, Any] | None = None,
                  alerts: dict[str, Any] | None = None,
                  update: dict[str, Any] | None = None,
                  update_fetch: dict[str, Any] | None = None,
                  spam: dict[str, Any] | None = None,
                  mail_bans: dict[str, Any] | None = None) -> RenderableType:
    parts: list[RenderableType] = []
    took = f" in {status.seconds:.0f} s" if status.seconds is not None else ""
    headline = Text.assemble(
        (f"{status.result}", RESULT_STYLES[status.result]),
        f" · {status.command} started {_when(status.started_at)}{took}",
        f" · {status.changes} changed" if status.result is not RunResult.RUNNING else "",
    )
    parts.append(headline)
    if status.result is RunResult.INTERRUPTED:
        parts.append(Text("  the run stopped without finishing (power cut or killed); first "
                          "boot retries by itself, or run: arkbox-installer apply"))
    parts.append(Text(f"mode {status.mode}" + (f" ({status.mode_reason})"
                                                 if status.mode_reason else "")
                      + f" · installer {status.installer_version}", style="dim"))
    if status.steps:
        parts.append(_steps_table(status))
    if seed is not None:
        parts.extend(seed_lines(seed))
    parts += _certificate_lines(status, certificate)
    if backup is not None:
        parts.extend(backup_lines(backup))
    if alerts is not None:
        parts.extend(alert_lines(alerts))
    if update is not None:
        parts.extend(update_lines(update))
    if update_fetch is not None:
        parts.append(fetch_line(update_fetch))
    if spam is not None:
        parts.append(spam_line(spam))
    if mail_bans is not None:
        parts.extend(mail_ban_lines(mail_bans))
    for failure in status.failures:
        parts.append(Text.assemble(("✗ ", "bold red"), (failure.step, "bold"), ": ",
                                   failure.message))
        if failure.hint:
            parts.append(Text(f"  hint: {failure.hint}"))
    return Group(*parts)


def spam_line(spam: dict[str, Any]) -> Text:
    """The spam filter: answering or not, scanned, learned (firstboot/mail/spam.py)."""
    style = "green" if spam.get("answering") else "red" if spam.get("enabled") else "dim"
    return Text.assemble(("spam filter: ", "bold"), (str(spam.get("summary")), style))


def mail_ban_lines(facts: dict[str, Any]) -> list[Text]:
    """The addresses banned from the mail ports for failed logins, until when."""
    bans = facts.get("bans") or []
    if not bans:
        return []
    lines = [Text.assemble(("mail bans: ", "bold"), (f"{len(bans)} address(es)", "yellow"),
                           " banned for failed logins (lift: arkbox-installer mail unban "
                           "ADDRESS)")]
    for ban in bans:
        lines.append(Text(f"  {ban.get('address')} until {_when(ban.get('until'))} "
                          f"({ban.get('failures')} failed {ban.get('service')} logins)"))
    return lines


def _steps_table(status: Status) -> Table:
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("#", justify="right", style="dim")
    table.add_column("step")
    table.add_column("state")
    table.add_column("what", overflow="fold")
    table.add_column("time", justify="right", style="dim")
    for index, step in enumerate(status.steps, start=1):
        seconds = f"{step.seconds:.1f} s" if step.seconds is not None else ""
        summary = step.summary if step.state is not StepState.OK else (
            f"{step.summary} (done {_when(step.done_at)})")
        table.add_row(str(index), step.name, Text(str(step.state), STATE_STYLES[step.state]),
                      summary, seconds)
    return table


def _certificate_lines(status: Status, live: dict[str, Any] | None) -> list[Text]:
    """The certificate served now (live facts, renewal included), else the tls step's."""
    details = live
    if details is None:
        try:
            details = status.step("tls").details
        except KeyError:
            return []
    if not details:
        return []
    until = _when(details.get("not_after"))
    renewal = details.get("renewal") or {}
    if details.get("source") == "fallback":
        lines = [Text.assemble(("certificate: ", "bold"), ("fallback (self-signed)", "yellow"),
                               f", valid until {until}: {details.get('reason', '')}")]
        if renewal.get("next_attempt"):
            lines.append(Text(f"  next attempt {_when(renewal['next_attempt'])} · now: "
                              "arkbox-installer renew", style="dim"))
        return lines
    lines = [Text.assemble(("certificate: ", "bold"), ("real (ACME)", "green"),
                           f", valid until {until}")]
    if details.get("warning"):
        lines.append(Text.assemble(("⚠ ", "bold yellow"), details["warning"]))
        lines.append(Text("  hint: fix the cause, then: arkbox-installer renew"))
    elif renewal.get("failures"):
        lines.append(Text(f"  renewal failed {renewal['failures']}×: {renewal.get('last_error')}"
                          f"; next attempt {_when(renewal.get('next_attempt'))}", style="yellow"))
    return lines


def print_status(status: Status | None, console: Console,
                 certificate: dict[str, Any] | None = None,
                 backup: dict[str, Any] | None = None,
                 seed: dict[str, Any] | None = None,
                 alerts: dict[str, Any] | None = None,
                 update: dict[str, Any] | None = None,
                 update_fetch: dict[str, Any] | None = None,
                 spam: dict[str, Any] | None = None,
                 mail_bans: dict[str, Any] | None = None) -> None:
    if status is None:
        console.print(NOT_RUN_TEXT, markup=False)
        return
    console.print(render_status(status, certificate, backup=backup, seed=seed, alerts=alerts,
                                update=update, update_fetch=update_fetch, spam=spam,
                                mail_bans=mail_bans))
