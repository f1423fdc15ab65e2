"""The renewal's record (tls-renew.json) and what status shows of the certificate.

Apart from `renew` so that `arkbox-installer status` reads them without loading the ACME
client, the proxy and the config model: status starts on every page view and timer run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firstboot.core.files import atomic_write

if TYPE_CHECKING:
    from firstboot.core.context import Paths

STATE_FILE = "tls-renew.json"
WARN_BEFORE = timedelta(days=14)


@dataclass
class RenewState:
    """What the last attempts did (tls-renew.json), for backoff and for status."""

    failures: int = 0  # consecutive
    last_attempt: str | None = None
    last_error: str | None = None
    next_attempt: str | None = None
    last_success: str | None = None
    # The last certificates issued (when, by whom, until when): the status page's timeline.
    issued: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> RenewState:
        try:
            raw = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return cls()
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", 0o644)


def expiry_warning(not_after: datetime, now: datetime) -> str | None:
    """A warning for status from 14 days before the certificate expires."""
    left = not_after - now
    if left > WARN_BEFORE:
        return None
    if left <= timedelta(0):
        return f"the certificate expired on {not_after:%Y-%m-%d %H:%M} UTC"
    return (f"the certificate expires in {left.days} days ({not_after:%Y-%m-%d}) "
            "and was not renewed")


def state_path(paths: Paths) -> Path:
    return paths.state / STATE_FILE


def status_facts(paths: Paths, now: datetime) -> dict[str, Any] | None:
    """The live certificate and the renewal state, for `arkbox-installer status`."""
    info_path = paths.tls / "live" / "certificate.json"
    try:
        info: dict[str, Any] = json.loads(info_path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    state = RenewState.load(state_path(paths))
    facts: dict[str, Any] = {**info, "renewal": asdict(state)}
    try:
        not_after = datetime.fromisoformat(str(info["not_after"]))
    except (KeyError, ValueError):
        return facts
    warning = expiry_warning(not_after, now)
    if warning is not None:
        facts["warning"] = warning + (f": {state.last_error}" if state.last_error else "")
    return facts
