"""The status page's HTML, from status --json's data (pure: a dict in, text out).

Every part of status --json has a section; a part this page does not know yet (added to
status later) is shown as its JSON under its own heading, so nothing status knows is
missing from the page.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from firstboot.core.render import render_html
from firstboot.status_view import human_size

# The sections, in page order: id -> heading.
SECTIONS = {
    "services": "Services",
    "certificate": "Certificate",
    "backups": "Backups",
    "drills": "Restore drills",
    "mail": "Mail: check and spam filter",
    "ports": "Open ports",
    "host": "Host: updates, reboot, disks",
    "run": "Last first boot / apply",
}
# Top-level keys of status --json that the sections above show.
SHOWN_KEYS = frozenset({
    "ran", "command", "installer_version", "started_at", "config_path", "config_sha256",
    "mode", "mode_reason", "result", "finished_at", "seconds", "steps", "failures",
    "schema_version", "changes", "certificate", "backup", "seed", "services", "host",
    "mail_check", "spam",
})
GOOD = {"healthy", "running (no check)", "ok", "pass", "acme", "unchanged", "changed",
        "skipped"}


def when(iso: Any) -> str:
    """An ISO time as "2026-01-02 03:04 UTC"; anything else as given."""
    if not iso:
        return "-"
    try:
        moment = datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    return moment.strftime("%Y-%m-%d %H:%M") + (" UTC" if moment.utcoffset() is not None
                                                else "")


def tone(value: Any) -> str:
    """The CSS class of a state: good, bad or neutral."""
    text = str(value)
    if text in GOOD:
        return "good"
    if text in {"failed", "fail", "unhealthy", "exited", "dead", "interrupted", "fallback"}:
        return "bad"
    return "warn" if text in {"starting", "warn", "restarting", "running"} else "neutral"


def page_html(doc: Mapping[str, Any], hostname: str, generated_at: str) -> str:
    return render_html(
        "statuspage/page.html.j2", hostname=hostname, generated_at=generated_at,
        sections=SECTIONS, run=run_view(doc), services=services_view(doc),
        certificate=certificate_view(doc), backups=backups_view(doc),
        drills=drills_view(doc), mail=mail_view(doc), spam=doc.get("spam"),
        ports=ports_view(doc),
        host=host_view(doc), others=others_view(doc), when=when, tone=tone)


def login_html(hostname: str, message: str | None = None) -> str:
    return render_html("statuspage/login.html.j2", hostname=hostname, message=message)


def run_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    if not doc.get("ran"):
        return {"ran": False}
    seed = doc.get("seed") or {}
    return {"ran": True, "result": doc.get("result"), "command": doc.get("command"),
            "started_at": doc.get("started_at"), "seconds": doc.get("seconds"),
            "mode": doc.get("mode"), "installer": doc.get("installer_version"),
            "steps": doc.get("steps") or [], "failures": doc.get("failures") or [],
            "seed": seed.get("source")}


def services_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    services = doc.get("services") or {}
    return {"containers": services.get("containers") or [], "error": services.get("error")}


def certificate_view(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    cert = doc.get("certificate")
    if not cert:
        return None
    renewal = cert.get("renewal") or {}
    timeline = [{"at": e.get("at"), "what": f"issued by {e.get('issuer')}",
                 "until": e.get("not_after")} for e in renewal.get("issued") or []]
    if renewal.get("failures"):
        timeline.append({"at": renewal.get("last_attempt"),
                         "what": f"renewal failed {renewal['failures']}×: "
                                 f"{renewal.get('last_error')}",
                         "until": None, "bad": True})
    return {"source": cert.get("source"), "issuer": cert.get("issuer") or "-",
            "names": cert.get("names") or [], "not_after": cert.get("not_after"),
            "reason": cert.get("reason"), "warning": cert.get("warning"),
            "next_attempt": renewal.get("next_attempt"), "timeline": timeline}


def backups_view(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    backup = doc.get("backup")
    if not backup:
        return None
    if not backup.get("enabled", True):
        return {"enabled": False}
    from firstboot.statuspage.charts import longest_pause

    rows = [{"at": b.get("finished_at"), "archive": b.get("archive"),
             "size": human_size(int(b.get("original_size") or 0)),
             "added": human_size(int(b.get("deduplicated_size") or 0)),
             "seconds": b.get("seconds"), "pause": longest_pause(b), "failed": False}
            for b in backup.get("history") or []]
    rows += [{"at": f.get("at"), "archive": f.get("message"), "failed": True}
             for f in backup.get("failed_runs") or []]
    rows.sort(key=lambda r: str(r["at"]), reverse=True)
    return {"enabled": True, "last": backup.get("last"), "finished_at": backup.get("finished_at"),
            "next_run": backup.get("next_run"), "warnings": backup.get("warnings") or [],
            "rows": rows, "count": len(backup.get("history") or [])}


def drills_view(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    backup = doc.get("backup") or {}
    drills = list(backup.get("drills") or [])
    if not drills and backup.get("last_drill"):
        drills = [backup["last_drill"]]
    if not backup.get("enabled", bool(backup)):
        return None
    return {"rows": sorted(drills, key=lambda d: str(d.get("started_at")), reverse=True)}


def mail_view(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    check = doc.get("mail_check")
    if not check:
        return None
    return {"result": check.get("result"), "checked_at": check.get("checked_at"),
            "findings": check.get("findings") or []}


def ports_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    firewall: Mapping[str, Any] = next(
        (s for s in doc.get("steps") or [] if s.get("name") == "firewall"), {})
    published = [{"container": c.get("name"), "ports": ", ".join(c["published_ports"])}
                 for c in (doc.get("services") or {}).get("containers") or []
                 if c.get("published_ports")]
    return {"firewall": firewall.get("summary"), "published": published}


def host_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    host = doc.get("host") or {}
    disks = [{**d, "used": human_size(int(d.get("used_bytes") or 0)),
              "total": human_size(int(d.get("total_bytes") or 0)),
              "full": max(float(d.get("used_percent") or 0),
                          float(d.get("inodes_used_percent") or 0)) > 85}
             for d in host.get("disks") or []]
    return {"reboot_required": False, "reboot_required_since": None, "reboot_required_by": [],
            **host, "disks": disks}


def others_view(doc: Mapping[str, Any]) -> dict[str, str]:
    """Parts of status --json without a section of their own (e.g. added later), as JSON."""
    return {key: json.dumps(value, indent=2, sort_keys=True)
            for key, value in sorted(doc.items()) if key not in SHOWN_KEYS}
