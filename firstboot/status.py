"""status.json: what the last first-boot or apply run did, step by step.

The runner rewrites it (atomically) when it starts and after every step, so
`arkbox-installer status` shows a run in progress as well as a finished one.
It holds no secrets: it is world-readable, for the admin and the status page.
Also here, free of rich: `status --json` (the status page's data) and what `status`
says on a box that has not run (issue 19: neither should load the screen's modules).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from firstboot.core.files import atomic_write

SCHEMA_VERSION = 1
NOT_RUN_TEXT = ("arkbox has not run on this machine yet\n"
                "  hint: first boot starts by itself; see: systemctl status arkbox-firstboot")


class StepState(StrEnum):
    PENDING = "pending"  # not reached yet in this run
    RUNNING = "running"
    CHANGED = "changed"  # ran and changed something
    UNCHANGED = "unchanged"  # ran and found everything in place
    OK = "ok"  # done in an earlier run, verified now, not run again
    SKIPPED = "skipped"  # the config does not turn it on
    FAILED = "failed"
    NOT_RUN = "not run"  # after a failed step


class RunResult(StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    # Shown, never saved: "running" in status.json but no runner is (power cut, kill).
    INTERRUPTED = "interrupted"


@dataclass
class StepReport:
    name: str
    state: StepState = StepState.PENDING
    summary: str = ""
    hint: str | None = None
    seconds: float | None = None
    finished_at: str | None = None
    # When a step was skipped as done, the run that did it.
    done_at: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Failure:
    step: str
    message: str
    hint: str | None = None


@dataclass
class Status:
    command: str  # firstboot | apply
    installer_version: str
    started_at: str
    config_path: str | None = None
    config_sha256: str | None = None
    mode: str = "FRESH"
    mode_reason: str = ""
    result: RunResult = RunResult.RUNNING
    finished_at: str | None = None
    seconds: float | None = None
    steps: list[StepReport] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @property
    def changes(self) -> int:
        return sum(1 for s in self.steps if s.state is StepState.CHANGED)

    def step(self, name: str) -> StepReport:
        for report in self.steps:
            if report.name == name:
                return report
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["changes"] = self.changes
        return body

    def save(self, path: Path) -> None:
        text = json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"
        atomic_write(path, text, mode=0o644)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Status:
        body = {k: v for k, v in raw.items() if k != "changes"}
        body["result"] = RunResult(body.get("result", "running"))
        body["steps"] = [
            StepReport(**{**s, "state": StepState(s["state"])}) for s in body.get("steps", [])
        ]
        body["failures"] = [Failure(**f) for f in body.get("failures", [])]
        return cls(**body)

    @classmethod
    def load(cls, path: Path) -> Status | None:
        """The last run's status, or None when no run has started on this box yet."""
        try:
            return cls.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None


def status_json(status: Status | None, certificate: dict[str, Any] | None = None,
                backup: dict[str, Any] | None = None, seed: dict[str, Any] | None = None,
                extra: dict[str, Any] | None = None) -> str:
    """`status --json`: the last run (or {"ran": false}) with the facts beside it."""
    body: dict[str, Any] = {"ran": False} if status is None else {"ran": True, **status.to_json()}
    body.update(extra or {})
    if certificate is not None:
        body["certificate"] = certificate
    if backup is not None:
        body["backup"] = backup
    if seed is not None:
        body["seed"] = seed
    return json.dumps(body, indent=2, sort_keys=True)
