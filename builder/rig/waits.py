"""How the rig waits for its containers: readiness as testcontainers `WaitStrategy`
subclasses that poll with `firstboot.core.wait`. Giving up says what was awaited (and in
which container), the last reason and the time limit; a state that waiting cannot mend
(a failed first boot, a zone nsd refuses) ends the wait at once with what went wrong."""

from __future__ import annotations

import functools
import socket
from abc import abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

from firstboot.core import wait
from firstboot.core.context import Paths
from firstboot.core.errors import ArkboxError

if TYPE_CHECKING:
    from builder.rig.parts import RigContainer

# Where the installer keeps its files inside the appliance: absolute paths in the container.
BOX = Paths(root=Path("/"))
FIRSTBOOT_UNIT = "arkbox-firstboot"


class RigError(ArkboxError):
    pass


class FirstBootFailed(RigError):
    """First boot ended with a failed run: the message names the failing steps and why."""


def wait_until(what: str, check: Callable[[], str | None], timeout: float,
               interval: float = 1.0) -> None:
    """Poll `check` (None = ready, else the reason it is not) with `wait.until`; a RigError
    saying what was awaited and the last reason when the time runs out. An exception from
    `check` ends the wait at once."""

    def ready() -> wait.NotYet | None:
        reason = check()
        return None if reason is None else wait.NotYet(reason)

    try:
        wait.until(what, ready, timeout, interval_s=interval)
    except wait.WaitTimedOut as timed_out:
        raise RigError(timed_out.message, hint=timed_out.hint) from None


class RigWait(WaitStrategy):
    """A readiness check of a rig container, polled with `firstboot.core.wait`: when the
    time runs out, a RigError names what was awaited, the last reason and the limit; an
    exception from the check (a state that waiting cannot mend) ends the wait at once."""

    what = "the container"

    def __init__(self, timeout: float, interval: float = 1.0) -> None:
        super().__init__()
        self._startup_timeout, self._poll_interval = timeout, interval

    @abstractmethod
    def check(self, container: RigContainer) -> str | None:
        """None when ready, else why not yet."""

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        rig_container = cast("RigContainer", container)  # set only on rig containers
        wait_until(f"{self.what} ({rig_container.name})",
                   functools.partial(self.check, rig_container),
                   self._startup_timeout, self._poll_interval)


class ContainerRunning(RigWait):
    what = "the container to run"

    def check(self, container: RigContainer) -> str | None:
        return container.not_running()


class SystemdState(RigWait):
    """systemd (PID 1) in one of `states` (`systemctl is-system-running`)."""

    def __init__(self, timeout: float, interval: float = 2.0,
                 states: frozenset[str] = frozenset({"running", "degraded"})) -> None:
        super().__init__(timeout, interval)
        self.states = states
        self.what = f"systemd {'/'.join(sorted(states))}"

    def check(self, container: RigContainer) -> str | None:
        if (reason := container.not_running()) is not None:
            return reason
        state = container.exec("systemctl", "is-system-running")[1].strip()
        return None if state in self.states else f"systemd is {state or 'not answering'}"


class UnitActive(RigWait):
    """One systemd unit active (the backup server's sshd, its forced `borg serve`)."""

    def __init__(self, unit: str, timeout: float, interval: float = 1.0) -> None:
        super().__init__(timeout, interval)
        self.unit = unit
        self.what = f"{unit}.service active"

    def check(self, container: RigContainer) -> str | None:
        if (reason := container.not_running()) is not None:
            return reason
        state = container.exec("systemctl", "is-active", self.unit)[1].strip()
        return None if state == "active" else f"{self.unit}.service is {state}"


class PortsAccept(RigWait):
    """Each of `ports` accepts a TCP connection at the container's rig address."""

    def __init__(self, ports: Sequence[int], timeout: float, interval: float = 0.5) -> None:
        super().__init__(timeout, interval)
        self.ports = tuple(ports)
        self.what = f"ports {', '.join(map(str, self.ports))} to accept connections"

    def check(self, container: RigContainer) -> str | None:
        if (reason := container.not_running()) is not None:
            return reason
        for port in self.ports:
            try:
                with socket.create_connection((container.ip(), port), timeout=2):
                    pass
            except OSError as err:
                return f"port {port}: {err}"
        return None


class FirstBootDone(RigWait):
    """First boot's done marker. A failed run raises FirstBootFailed at once, naming the
    failing steps and their messages, unless `retry_failures`: then the unit's retries are
    waited out, and a time-out names the last failing steps."""

    what = "first boot"

    def __init__(self, timeout: float, interval: float = 1.0,
                 retry_failures: bool = False) -> None:
        super().__init__(timeout, interval)
        self.retry_failures = retry_failures

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        rig_container = cast("RigContainer", container)
        wait_until(f"first boot ({rig_container.name})",
                   functools.partial(self.check, rig_container),
                   self._startup_timeout, self._poll_interval)

    def check(self, container: RigContainer) -> str | None:
        reason = first_boot_not_done(container, container.name, self.retry_failures,
                                     f"docker exec {container.name} journalctl -u "
                                     f"{FIRSTBOOT_UNIT}")
        if reason is not None and (stopped := container.not_running()) is not None:
            raise RigError(f"{container.name} stopped during first boot ({stopped})")
        return reason


class BootingBox(Protocol):
    """What the first-boot check needs of a box: a container of the rig, or a VM."""

    def exec(self, *argv: str) -> tuple[int, str]: ...

    def read_json(self, path: str) -> Any: ...


def first_boot_not_done(box: BootingBox, name: str, retry_failures: bool,
                        look: str) -> str | None:
    """None once first boot's done marker is there, else why not (its result and failing
    steps). A failed run raises FirstBootFailed unless `retry_failures`; `look` is the
    hint when the failures carry none."""
    code, _ = box.exec("test", "-e", str(BOX.done_marker))
    if code == 0:
        return None
    status = box.read_json(str(BOX.status)) or {}
    result = status.get("result", "not started")
    failures = failures_text(status)
    if result == "failed" and not retry_failures:
        raise FirstBootFailed(f"first boot of {name} failed: "
                              f"{failures or 'no failing step recorded'}",
                              hint=first_hint(status) or look)
    return f"first boot result: {result}" + (f" ({failures[-600:]})" if failures else "")


def failures_text(status: dict[str, Any]) -> str:
    """status.json's failures as `step: message; …`."""
    return "; ".join(f"{f.get('step')}: {f.get('message')}"
                     for f in status.get("failures") or [])


def first_hint(status: dict[str, Any]) -> str | None:
    hints = [str(f["hint"]) for f in status.get("failures") or [] if f.get("hint")]
    return hints[0] if hints else None


class CompositeWait(RigWait):
    """Each wait in turn, each with its own time limit (testcontainers' composite wait
    would give them all one, and turn our messages into a bare TimeoutError)."""

    def __init__(self, *waits: RigWait) -> None:
        super().__init__(sum(w._startup_timeout for w in waits))
        self.waits = waits

    def check(self, container: RigContainer) -> str | None:  # pragma: no cover - unused
        return None

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        for one in self.waits:
            one.wait_until_ready(container)
