"""The drills' record, as status, the status page and the alert check read it: the last
drill's result (drill.json) and a line per drill (drill-history.json), both below
/var/lib/arkbox. drill.py writes them; reading them here costs none of its imports (the
Docker SDK, the restore, the config model), which status pays on every start (issue 19).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firstboot.core.context import Paths

RESULT_FILE = "drill.json"  # below /var/lib/arkbox
HISTORY_FILE = "drill-history.json"  # below /var/lib/arkbox
HISTORY_KEPT = 30


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def last_drill(paths: Paths) -> dict[str, Any] | None:
    raw = _read_json(paths.state / RESULT_FILE)
    return raw if isinstance(raw, dict) else None


def drill_history(paths: Paths) -> list[dict[str, Any]]:
    """The last drills, oldest first (an unreadable file counts as none: it is rewritten)."""
    raw = _read_json(paths.state / HISTORY_FILE)
    return [entry for entry in raw if isinstance(entry, dict)] if isinstance(raw, list) else []
