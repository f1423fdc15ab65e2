"""The Debian archive's state a build is made from: the `Date:` of each `InRelease` file.

The base root fs and the service images install whatever the archive holds when they
are built, so their cache keys include this state. It is read from the mirror only on
`arkbox build --refresh` (or when the cache has none recorded yet) and kept in the cache
(`archive-state.json`); without `--refresh` a build reuses the recorded state and with it
every cached stage, as before. docs/updates.md says when to refresh.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from firstboot.core.errors import ArkboxError
from firstboot.core.files import atomic_write
from firstboot.updates.check import newest_date

STATE_FILE = "archive-state.json"
FETCH_TIMEOUT_S = 30
HEAD_BYTES = 8192  # the Date: field is in the first lines; the rest lists index hashes
_DATE = re.compile(r"^Date:\s*(.+?)\s*$", re.MULTILINE)

# What a build reads from each archive: "MIRROR/dists/DIST" -> the Date: of its InRelease.
ArchiveState = dict[str, str]
Fetch = Callable[[str], str]


@dataclass(frozen=True)
class Resolved:
    state: ArchiveState
    note: str  # for the stage's progress line


def release_dists(suite: str, mirror: str, security_mirror: str | None) -> list[str]:
    """The archives the image's sources.list names (rootfs.apt_sources), as dists URLs."""
    dists = [f"{mirror}/dists/{suite}", f"{mirror}/dists/{suite}-updates"]
    if security_mirror:
        dists.append(f"{security_mirror}/dists/{suite}-security")
    return dists


def parse_release_date(head: str, url: str) -> str:
    """The Date: field of the start of a Release/InRelease file (pure)."""
    found = _DATE.search(head)
    if found is None:
        raise ArkboxError(f"{url} has no Date: field in its first {HEAD_BYTES} bytes",
                          hint="check that the mirror in build.mirror is a Debian archive")
    return found.group(1)


def fetch_release_date(dist: str) -> str:
    """GET the start of DIST/InRelease from the mirror and return its Date:."""
    url = f"{dist}/InRelease"
    try:
        # A mirror that ignores Range sends the whole file: read only its start.
        with requests.get(url, headers={"Range": f"bytes=0-{HEAD_BYTES - 1}"}, stream=True,
                          timeout=FETCH_TIMEOUT_S) as response:
            response.raise_for_status()
            head = response.raw.read(HEAD_BYTES, decode_content=True).decode("utf-8", "replace")
    except (requests.RequestException, OSError) as e:
        raise ArkboxError(
            f"the archive's state: could not read {url} (no answer within "
            f"{FETCH_TIMEOUT_S} s, or refused): {e}",
            hint="check build.mirror and that it is reachable from here; with --refresh, a "
                 "build without it reuses the state the cache recorded") from e
    return parse_release_date(head, url)


def load_recorded(cache_dir: Path) -> Mapping[str, str]:
    try:
        raw = json.loads((cache_dir / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def resolve(cache_dir: Path, dists: list[str], *, refresh: bool,
            fetch: Fetch = fetch_release_date) -> Resolved:
    """The state this build uses: the recorded one, or the mirror's now on --refresh (or
    for an archive the cache has not seen). What was fetched is recorded for later builds."""
    recorded = load_recorded(cache_dir)
    to_fetch = dists if refresh else [d for d in dists if d not in recorded]
    fresh = {dist: fetch(dist) for dist in to_fetch}
    state = {dist: fresh.get(dist) or recorded[dist] for dist in dists}
    if fresh:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_dir / STATE_FILE,
                     json.dumps({**recorded, **fresh}, indent=2, sort_keys=True) + "\n", 0o644)
    return Resolved(state, _note(state, recorded, fresh, refresh))


def _note(state: ArchiveState, recorded: Mapping[str, str], fresh: Mapping[str, str],
          refresh: bool) -> str:
    newest = newest_date(state)
    moved = sorted(_short(d) for d, date in fresh.items() if recorded.get(d) not in (None, date))
    if not fresh:
        return f"recorded, newest {newest} (reused: no --refresh)"
    if not refresh:
        return f"read from the mirror (first build with this cache), newest {newest}"
    if moved:
        return f"refreshed: {', '.join(moved)} moved; newest {newest}"
    return f"refreshed: unchanged since the last refresh, newest {newest}"


def _short(dist: str) -> str:
    return dist.rsplit("/", 1)[-1]

