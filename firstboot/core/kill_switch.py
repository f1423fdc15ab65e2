"""The power-cut test hook: ARKBOX_TEST_KILL_AT=<where>:<point>[,...] SIGKILLs this process
at the named points, once each. A marker under /var/lib/arkbox/test-kill/ lets the next
run, after the simulated power cut, go past the point. Used by the step runner (first
boot, apply) and by `update`; unset, it does nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from firstboot.core.files import atomic_write, ensure_dir

log = logging.getLogger("arkbox.kill")

KILL_ENV = "ARKBOX_TEST_KILL_AT"


@dataclass(frozen=True)
class KillSwitch:
    """SIGKILL this process at the named points, once each."""

    points: frozenset[str]
    marker_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str], state_dir: Path) -> KillSwitch:
        spec = env.get(KILL_ENV, "")
        points = frozenset(p.strip() for p in spec.split(",") if p.strip())
        return cls(points, state_dir / "test-kill")

    def __call__(self, where_in: str, point: str) -> None:
        where = f"{where_in}:{point}"
        if where not in self.points:
            return
        marker = self.marker_dir / where.replace(":", "@")
        if marker.exists():
            return
        ensure_dir(self.marker_dir, 0o755)
        atomic_write(marker, where + "\n")
        log.warning("%s: test hook %s=%s: killing the installer now", where_in, KILL_ENV,
                    where)
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
