"""Is the spam filter working, and what has it learned? (`status`, `check mail`)

rspamd runs in the mail container (image/recipes/mail); its controller answers on the
container's loopback only, so the box asks it through the engine: `rspamc -j stat` in the
container, bounded by `timeout` there and by the engine client's own time-out here. Bayes
counts are the statfiles' revisions (kept in Redis, so a restore brings them back).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import docker
import docker.errors

from firstboot.containers.naming import Naming
from firstboot.core.config import Appliance
from firstboot.mail.names import MAIL_SERVICE, RSPAMD_CONTROLLER

ENGINE_TIMEOUT_S = 20
STAT_TIMEOUT_S = 10  # `timeout` inside the container: rspamc never hangs the caller
SPAM_STATFILE, HAM_STATFILE = "BAYES_SPAM", "BAYES_HAM"


def stat_argv() -> list[str]:
    return ["timeout", str(STAT_TIMEOUT_S), "rspamc", "--connect", RSPAMD_CONTROLLER,
            "--timeout", str(STAT_TIMEOUT_S - 2), "-j", "stat"]


@dataclass(frozen=True)
class SpamHealth:
    """rspamd as the box sees it. `problem` is None when it answered."""

    enabled: bool
    problem: str | None = None
    scanned: int = 0
    learned_spam: int = 0
    learned_ham: int = 0
    actions: dict[str, int] = field(default_factory=dict)

    @property
    def answering(self) -> bool:
        return self.enabled and self.problem is None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "answering": self.answering, "summary": self.describe()}

    def describe(self) -> str:
        if not self.enabled:
            return "off (mail.spam.enabled is false): mail from the world is not filtered"
        if self.problem is not None:
            return f"rspamd does not answer: {self.problem}"
        junk = self.actions.get("add header", 0)
        refused = self.actions.get("reject", 0)
        return (f"rspamd answers · {self.scanned} scanned since it started ({junk} to Junk, "
                f"{refused} refused) · learned {self.learned_spam} spam, "
                f"{self.learned_ham} ham")


def fix_hint(naming: Naming) -> str:
    return (f"see the mail container's log: docker logs {naming.container(MAIL_SERVICE)}; "
            "`arkbox-installer apply` starts it again if it stopped")


def parse_stat(text: str) -> SpamHealth:
    """`rspamc -j stat`'s answer."""
    try:
        raw = json.loads(text)
    except ValueError:
        return SpamHealth(True, f"rspamc gave no JSON: {text.strip()[:200]!r}")
    if not isinstance(raw, dict) or "statfiles" not in raw:
        return SpamHealth(True, f"rspamc's answer has no statfiles: {text.strip()[:200]!r}")
    revisions = {str(s.get("symbol")): int(s.get("revision") or 0)
                 for s in raw.get("statfiles") or [] if isinstance(s, dict)}
    actions = raw.get("actions")
    if not isinstance(actions, dict):
        actions = {}
    return SpamHealth(True, None, int(raw.get("scanned") or 0),
                      revisions.get(SPAM_STATFILE, 0), revisions.get(HAM_STATFILE, 0),
                      {str(k): int(v or 0) for k, v in actions.items()})


def spam_health(config: Appliance | None, naming: Naming) -> SpamHealth | None:
    """None when the box has no mail server; otherwise what rspamd answers."""
    if config is None or not config.mail.enabled:
        return None
    if not config.mail.spam.enabled:
        return SpamHealth(False)
    name = naming.container(MAIL_SERVICE)
    try:
        client = docker.from_env(timeout=ENGINE_TIMEOUT_S)
        result = client.containers.get(name).exec_run(stat_argv())
    except docker.errors.NotFound:
        return SpamHealth(True, f"the mail container {name} does not exist")
    except (docker.errors.DockerException, OSError) as e:
        return SpamHealth(True, f"the container engine did not answer: {e}")
    output = result.output.decode(errors="replace") if isinstance(result.output, bytes) else ""
    if result.exit_code:
        shown = output.strip()[-200:] or "no output"
        return SpamHealth(True, f"rspamc stat exited {result.exit_code}: {shown}")
    return parse_stat(output)
