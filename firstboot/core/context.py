"""What every first-boot step gets: the config, where things live, and the engine."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firstboot.core import execute

if TYPE_CHECKING:
    import docker

    # Only a type here: `--version` and `status` never load the config model (pydantic).
    from firstboot.core.config import Appliance

log = logging.getLogger("arkbox.firstboot")

# The signature of execute.run, which tests replace with a recorder.
CommandRunner = Callable[..., execute.Completed]


class Mode(StrEnum):
    FRESH = "FRESH"
    RESTORE = "RESTORE"


@dataclass
class Paths:
    """Every path the installer touches, below `root` ("/" on a real box, a temp dir in tests)."""

    root: Path = Path("/")

    def at(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    @property
    def is_live(self) -> bool:
        """True on the real system: only then may a step change kernel state (hostname, ...)."""
        return self.root == Path("/")

    @property
    def state(self) -> Path:  # the runner's journal, status.json, the done marker
        return self.at("/var/lib/arkbox")

    @property
    def journal(self) -> Path:  # which steps are done, recorded only after verify() passed
        return self.state / "journal.json"

    @property
    def status(self) -> Path:  # what the last run did, read by `arkbox-installer status`
        return self.state / "status.json"

    @property
    def seed_record(self) -> Path:  # which seed source gave the secrets, when; no value
        return self.state / "seed.json"

    @property
    def done_marker(self) -> Path:  # arkbox-firstboot.service does not start once it exists
        return self.state / "firstboot.done"

    @property
    def data(self) -> Path:  # everything a backup carries
        return self.at("/srv/arkbox")

    @property
    def secrets(self) -> Path:
        return self.data / "secrets"

    @property
    def tls(self) -> Path:  # live/ holds what the proxy serves (fallback or ACME)
        return self.data / "tls"

    @property
    def volumes(self) -> Path:
        return self.data / "volumes"

    @property
    def manifest(self) -> Path:  # the resolved environment (services, images, networks)
        return self.data / "manifest.json"

    @property
    def baked_images(self) -> Path:
        return self.at("/usr/share/arkbox/images")

    @property
    def build_manifest(self) -> Path:
        return self.at("/usr/share/arkbox/build-manifest.json")

    @property
    def rendered(self) -> Path:  # generated configs (nftables, nginx, ...)
        return self.at("/etc/arkbox/rendered")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class FirstbootContext:
    config: Appliance
    paths: Paths = field(default_factory=Paths)
    mode: Mode = Mode.FRESH
    mode_reason: str = "fresh install"
    # `apply --force`: a backup repository this box used and that is gone may be made anew.
    force_new_repository: bool = False
    # Every external command of a step goes through ctx.run (execute.run on a real box).
    run: CommandRunner = execute.run
    # The clock, so tests can age certificates without waiting.
    now: Callable[[], datetime] = utc_now
    # Set by the runner: what ctx.checkpoint() calls.
    on_checkpoint: Callable[[str, str], None] | None = None
    _docker: docker.DockerClient | None = None
    # Steps of one group run in threads at once (steps/__init__.py): each thread has its
    # own current step, and one engine client is made for all of them.
    _thread: threading.local = field(default_factory=threading.local, repr=False)
    _docker_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def current_step(self) -> str:
        """The step this thread runs now (set by the runner)."""
        return getattr(self._thread, "step", "")

    @current_step.setter
    def current_step(self, name: str) -> None:
        self._thread.step = name

    @property
    def docker(self) -> docker.DockerClient:
        """The engine client, made on first use so steps that need no engine start fast."""
        with self._docker_lock:
            if self._docker is None:
                import docker as docker_sdk

                self._docker = docker_sdk.from_env(timeout=120)
            return self._docker

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose lines carry the step's name, so the journal tells the story."""
        # One logger for all steps; the step's name starts each message, which reads
        # the same on a terminal and in the journal.
        return StepLog(logging.getLogger("arkbox.step"), {"step": self.current_step})

    def checkpoint(self, point: str) -> None:
        """A named point inside a step where a power cut is simulated in tests.

        Call it between two actions that must both happen (e.g. after writing a
        file and before loading it); it does nothing unless the runner's test
        hook names `<step>:<point>`.
        """
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.current_step, point)


class StepLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each message with the step name ("firewall: ruleset unchanged")."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        step = (self.extra or {}).get("step")
        return (f"{step}: {msg}" if step else msg), kwargs
