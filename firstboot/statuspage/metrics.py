"""/metrics: status --json's numbers in Prometheus's text exposition format (version 0.0.4)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _timestamp(iso: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return None


class _Out:
    """Collects samples, one HELP/TYPE header per metric name."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._seen: set[str] = set()

    def add(self, name: str, help_text: str, value: float | None,
            labels: Mapping[str, str] | None = None, kind: str = "gauge") -> None:
        if value is None:
            return
        if name not in self._seen:
            self._seen.add(name)
            self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        shown = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted((labels or {}).items()))
        self.lines.append(f"{name}{{{shown}}} {float(value):g}" if shown
                          else f"{name} {float(value):g}")


def metrics_text(doc: Mapping[str, Any]) -> str:
    out = _Out()
    out.add("arkbox_last_run_ok", "1 when the last first boot or apply succeeded",
            1.0 if doc.get("result") == "ok" else 0.0)
    _services(out, doc)
    _certificate(out, doc.get("certificate") or {})
    _backup(out, doc.get("backup") or {})
    _host(out, doc.get("host") or {})
    check = doc.get("mail_check")
    if check:
        out.add("arkbox_mail_check_ok", "1 when the last `check mail` found no failure",
                0.0 if check.get("result") == "fail" else 1.0)
    return "\n".join(out.lines) + "\n"


def _services(out: _Out, doc: Mapping[str, Any]) -> None:
    for c in (doc.get("services") or {}).get("containers") or []:
        labels = {"container": str(c.get("name"))}
        out.add("arkbox_container_healthy", "1 when the container runs and is healthy",
                1.0 if c.get("health") in ("healthy", "running (no check)") else 0.0, labels)
        out.add("arkbox_container_restarts", "restarts of the container by the engine",
                float(c.get("restarts") or 0), labels)


def _certificate(out: _Out, cert: Mapping[str, Any]) -> None:
    if not cert:
        return
    out.add("arkbox_certificate_expiry_timestamp_seconds", "when the served certificate expires",
            _timestamp(cert.get("not_after")))
    out.add("arkbox_certificate_from_ca", "1 when a CA's certificate is served (0: the fallback)",
            1.0 if cert.get("source") == "acme" else 0.0)


def _backup(out: _Out, backup: Mapping[str, Any]) -> None:
    if not backup.get("enabled"):
        return
    out.add("arkbox_backup_last_success_timestamp_seconds", "when the last backup finished",
            _timestamp(backup.get("finished_at")))
    out.add("arkbox_backup_last_size_bytes", "original size of the last backup",
            backup.get("original_size"))
    out.add("arkbox_backup_last_added_bytes", "data the last backup added (deduplicated)",
            backup.get("deduplicated_size"))
    out.add("arkbox_backup_last_duration_seconds", "how long the last backup took",
            backup.get("seconds"))
    out.add("arkbox_backup_failing", "1 when the last backup run failed",
            1.0 if backup.get("failure") else 0.0)
    drill = backup.get("last_drill")
    if drill:
        out.add("arkbox_drill_last_pass", "1 when the last restore drill passed",
                1.0 if drill.get("result") == "pass" else 0.0)
        out.add("arkbox_drill_last_timestamp_seconds", "when the last drill started",
                _timestamp(drill.get("started_at")))


def _host(out: _Out, host: Mapping[str, Any]) -> None:
    for disk in host.get("disks") or []:
        labels = {"path": str(disk.get("path"))}
        out.add("arkbox_disk_used_ratio", "used share of the file system",
                float(disk.get("used_percent") or 0) / 100, labels)
        out.add("arkbox_disk_inodes_used_ratio", "used share of the file system's inodes",
                float(disk.get("inodes_used_percent") or 0) / 100, labels)
    if "updates_pending" in host:
        out.add("arkbox_updates_pending", "package upgrades apt would install",
                host.get("updates_pending"))
        out.add("arkbox_security_updates_pending", "of them from the security archive",
                host.get("security_updates_pending"))
    out.add("arkbox_reboot_required", "1 when an upgrade asks for a reboot",
            1.0 if host.get("reboot_required") else 0.0)
