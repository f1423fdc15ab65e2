"""Before a restore extracts anything: every item of the archive lands below the staging
directory, or the archive is refused.

The image's borg (trixie's 1.4.0) follows an archived symlink when it extracts an item
below it: `x -> /etc`, then `x/passwd`, writes /etc/passwd (CVE-2026-62268, fixed upstream after
1.4.0, borg PR #9919). Such an archive is not made by accident: a service whose volume is read live
swapped a directory for a symlink while borg read it, or the archive was crafted. Checking
borg's own listing first costs one `borg list` and refuses before a byte is written;
extracting as an unprivileged user cannot give the files their owners back, and looking
after extracting would find the damage already done outside.

Refused: an absolute path or one with an empty, `.` or `..` component; an item below an
archived symlink or file; a hard link whose source is such a path; a volume, service or
dump directory that is not a directory (the services step mounts them); a dump that is not
a regular file (the dumps step reads it into a container).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

SHOWN = 5  # refused paths named in the error; the rest are counted
_DIR = "d"
# borg 1.x lists a hard link as type "-" with its first path as "source" (mode "h...").
_FILE_TYPES = frozenset({"-", "h"})


def items_of(json_lines: str) -> Iterator[dict[str, Any]]:
    """The items of `borg list --json-lines ::ARCHIVE`, one per line."""
    for line in json_lines.splitlines():
        if line.strip():
            item = json.loads(line)
            if isinstance(item, dict):
                yield item


def unsafe_paths(items: Iterable[Mapping[str, Any]], run_dir: str) -> list[str]:
    """Why each refused item is refused ("PATH: reason"), in archive order; [] when safe."""
    listed = [(str(i.get("path", "")), str(i.get("type", "")), str(i.get("source") or ""))
              for i in items]
    kinds = {path: kind for path, kind, _ in listed}
    problems = []
    for path, kind, source in listed:
        reason = (_path_problem(path, kinds) or _structure_problem(path, kind, run_dir)
                  or (_path_problem(source, kinds) if source and kind != "l" else None))
        if reason is not None:
            problems.append(f"{path}: {reason}")
    return problems


def _path_problem(path: str, kinds: Mapping[str, str]) -> str | None:
    if path == "." and kinds.get(path) == _DIR:
        return None  # the walk's first path: the data directory itself
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return f"{path!r} is not a plain relative path"
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        if kinds.get(parent, _DIR) != _DIR:
            return f"below {parent!r}, which the archive holds as a {_name(kinds[parent])}"
    return None


def _structure_problem(path: str, kind: str, run_dir: str) -> str | None:
    parts = path.split("/")
    top = parts[0]
    must_be_dir = ((top == "volumes" and len(parts) <= 3)
                   or (top == run_dir and parts[1:2] == ["dumps"] and len(parts) <= 3))
    if must_be_dir and kind != _DIR:
        return f"a {_name(kind)} where arkbox keeps a directory"
    if top == run_dir and parts[1:2] == ["dumps"] and len(parts) == 4 \
            and kind not in _FILE_TYPES:
        return f"a dump that is a {_name(kind)}, not a file"
    return None


def _name(kind: str) -> str:
    return {"l": "symlink", "-": "file", "h": "hard link", "d": "directory", "p": "FIFO",
            "c": "character device", "b": "block device"}.get(kind, f"item of type {kind!r}")


def refusal(archive: str, problems: list[str]) -> str:
    """The error message for an archive with unsafe paths."""
    shown = "; ".join(problems[:SHOWN])
    more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
    return (f"refusing to restore {archive}: {len(problems)} item(s) would be written outside "
            f"the restored tree or where arkbox keeps its own directories: {shown}{more}")
