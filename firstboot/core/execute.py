"""The one place where arkbox runs external commands.

Commands are built as data (tuples) by pure functions elsewhere and handed to
`run`. Every run is logged at debug level with secrets masked, and every
failure raises `CommandError` carrying the masked argv, the exit code and the
tail of stderr.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from firstboot.core.errors import ArkboxError

log = logging.getLogger("arkbox.exec")

MASK = "*****"
STDERR_TAIL_LINES = 15
# Environment variables whose values are secret by name, whatever their content.
_SECRET_ENV_NAME = re.compile(r"PASS|SECRET|TOKEN|PASSWORD|PRIVATE|_KEY$|CREDENTIAL", re.I)


@dataclass(frozen=True)
class Secret:
    """An argv element that must never be shown: logged and reported as `*****`."""

    value: str

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"


Arg = str | Path | Secret
Argv = Sequence[Arg]


class CommandError(ArkboxError):
    """An external command failed, timed out or could not be started."""

    def __init__(
        self,
        argv: Sequence[str],
        exit_code: int | None,
        stderr_tail: str,
        hint: str | None = None,
        timed_out: bool = False,
    ) -> None:
        shown = " ".join(argv)
        if timed_out:
            what = f"`{shown}` timed out"
        elif exit_code == 127:
            what = f"`{shown}` could not be started: {argv[0]} is not installed"
        else:
            what = f"`{shown}` failed (exit {exit_code})"
        message = what + (f"\n  last lines: {stderr_tail}" if stderr_tail else "")
        super().__init__(message, hint)
        self.argv = tuple(argv)
        self.exit_code_of_command = exit_code
        self.stderr_tail = stderr_tail
        self.timed_out = timed_out


@dataclass
class Completed:
    """A finished command: its masked argv, exit code and (when captured) output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""
    stdout_bytes: bytes = field(default=b"", repr=False)


def secret_values(env: Mapping[str, str] | None, extra: Iterable[str] = ()) -> list[str]:
    """The strings to mask: explicit secrets plus env values whose names say they are secret."""
    values = [s for s in extra if s]
    for name, value in (env or {}).items():
        if value and _SECRET_ENV_NAME.search(name):
            values.append(value)
    # Longest first, so a secret that contains another is masked whole.
    return sorted(set(values), key=len, reverse=True)


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of every secret in `text` with `*****`."""
    for value in secrets:
        if value:
            text = text.replace(value, MASK)
    return text


def shown_argv(argv: Argv, secrets: Iterable[str] = ()) -> tuple[str, ...]:
    """The argv as it may be logged or shown: Secret elements and known secrets masked."""
    values = list(secrets)
    return tuple(mask(str(a), values) if not isinstance(a, Secret) else MASK for a in argv)


def real_argv(argv: Argv) -> list[str]:
    return [a.value if isinstance(a, Secret) else str(a) for a in argv]


def child_environment(env: Mapping[str, str] | None) -> dict[str, str] | None:
    """The environment a command runs with: ours plus `env`.

    A PyInstaller-frozen program points LD_LIBRARY_PATH at its own bundled
    libraries; the system's programs (systemctl, nft, ...) must not load those,
    so the variable is put back as it was before the binary started.
    """
    if not getattr(sys, "frozen", False):
        return {**os.environ, **env} if env is not None else None
    base = dict(os.environ)
    original = base.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is not None:
        base["LD_LIBRARY_PATH"] = original
    else:
        base.pop("LD_LIBRARY_PATH", None)
    return {**base, **(env or {})}


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n  ".join(kept)


def _hint_for(argv0: str, exit_code: int | None) -> str | None:
    if exit_code == 127:
        return (
            f"install the program that provides `{argv0}` "
            "(on a development machine: run scripts/setup)"
        )
    return None


def run(
    argv: Argv,
    *,
    env: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    input_data: bytes | str | None = None,
    cwd: Path | str | None = None,
    timeout: float | None = None,
    check: bool = True,
    capture: bool = True,
    binary: bool = False,
    on_line: Callable[[str], None] | None = None,
    hint: str | None = None,
    feed: Feed | None = None,
    stdout_fd: int | None = None,
) -> Completed:
    """Run one external command.

    `env` is added to the inherited environment. Secrets are masked in the log
    and in the error: `Secret` argv elements, the values of `secrets`, and env
    values whose variable names say they are secret (BORG_PASSPHRASE, ...).
    With `on_line`, stdout and stderr are merged and each line is passed on as
    it arrives (for progress); otherwise they are captured separately.
    With `feed`, the child's stdin is written by `feed(stdin, alive)` in a thread while
    its output is read (see `Feed`). With `stdout_fd`, stdout goes to that descriptor.
    The command runs in its own process group: when the timeout passes, or anything
    else ends the run early (Ctrl-C, a failing feed), the whole group is ended and reaped.
    """
    if not argv:
        raise ValueError("empty argv")
    argv_secrets = [a.value for a in argv if isinstance(a, Secret)]
    masked_values = secret_values(env, [*secrets, *argv_secrets])
    shown = shown_argv(argv, masked_values)
    log.debug("run: %s", " ".join(shown))
    if env:
        log.debug("  env: %s", " ".join(f"{k}={mask(v, masked_values)}" for k, v in env.items()))
    data = input_data.encode() if isinstance(input_data, str) else input_data
    child = _Child(real_argv(argv), child_environment(env), cwd, timeout)
    try:
        if feed is not None:
            returncode, out_bytes, err = _run_fed(child, feed)
        elif on_line is not None:
            returncode, out_bytes, err = _run_streaming(child, data, on_line, masked_values)
        else:
            returncode, out_bytes, err = _run_captured(child, data, capture, stdout_fd)
    except FileNotFoundError as e:
        raise CommandError(shown, 127, "", hint or _hint_for(shown[0], 127)) from e
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else ""
        raise CommandError(shown, None, mask(_tail(stderr), masked_values),
                           hint or f"it ran longer than {timeout} s", timed_out=True) from e
    out = "" if binary else out_bytes.decode(errors="replace")
    result = Completed(shown, returncode, mask(out, masked_values), mask(err, masked_values),
                       out_bytes)
    log.debug("  exit %d", returncode)
    if check and returncode != 0:
        tail = mask(_tail(err or out), masked_values)
        raise CommandError(shown, returncode, tail, hint or _hint_for(shown[0], returncode))
    return result


# How long a command that is being ended gets to exit on SIGTERM (borg releases its
# repository lock, mmdebstrap unmounts its chroot) before its group is killed.
END_GRACE_S = 10.0


@dataclass(frozen=True)
class _Child:
    """What starts a child: its real argv, environment, folder and timeout."""

    argv: list[str]
    env: Mapping[str, str] | None
    cwd: Path | str | None
    timeout: float | None

    @contextlib.contextmanager
    def start(self, **pipes: Any) -> Iterator[subprocess.Popen[bytes]]:
        """Popen in a process group of its own; leaving early ends and reaps the group."""
        with subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, process_group=0,
                              preexec_fn=_die_with_parent(),
                              **pipes) as proc:
            try:
                yield proc
            except BaseException:
                _end_group(proc)
                raise


# In a process group of its own, a child is not reached by a signal sent to ours (a
# killed `arkbox-installer backup` must not leave its borg running, holding the
# repository's lock and half a path list): the kernel kills it when we die.
_PR_SET_PDEATHSIG = 1
try:  # resolved here, in the parent: the child only calls it
    _PRCTL: Any = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):  # not glibc: the child outlives a killed parent, as before
    _PRCTL = None


def _die_with_parent() -> Callable[[], None] | None:
    """For Popen's preexec_fn: SIGKILL the child when the thread that started it dies."""
    if _PRCTL is None:
        return None
    prctl, parent = _PRCTL, os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)

    return arm


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the child's group, SIGKILL to what is left after the grace, then reap.

    The group outlives its leader while any member runs (a forked `sleep`, an ssh
    ControlMaster), so the SIGKILL goes to the group even when the leader has exited.
    """
    try:
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=END_GRACE_S)
    finally:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _run_captured(child: _Child, data: bytes | None, capture: bool,
                  stdout_fd: int | None) -> tuple[int, bytes, str]:
    stdout = stdout_fd if stdout_fd is not None else subprocess.PIPE if capture else None
    # Never the terminal as stdin: in a process group of its own, a child reading it stops.
    stdin = subprocess.PIPE if data is not None else subprocess.DEVNULL
    with child.start(stdin=stdin, stdout=stdout,
                     stderr=subprocess.PIPE if capture else None) as proc:
        out, err = proc.communicate(data, timeout=child.timeout)
    return proc.returncode, out or b"", (err or b"").decode(errors="replace")


# Writes a child's stdin: `feed(stdin, alive)`, where alive() says whether the child still
# runs. If it raises, the child is terminated *before* its stdin is closed, so a child that
# acts on end-of-input (borg committing an archive) never sees a half-written input as whole.
Feed = Callable[[IO[bytes], Callable[[], bool]], None]


def from_file(path: Path) -> Feed:
    """A feed that streams a file into the child's stdin (never whole in memory)."""
    def copy(stdin: IO[bytes], alive: Callable[[], bool]) -> None:
        with path.open("rb") as source:
            shutil.copyfileobj(source, stdin, 1 << 20)
    return copy


def _run_fed(child: _Child, feed: Feed) -> tuple[int, bytes, str]:
    with child.start(stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE) as proc:
        # communicate() must not touch stdin: the feeding thread owns it.
        stdin, proc.stdin = proc.stdin, None
        assert stdin is not None
        failures: list[BaseException] = []

        def feeding() -> None:
            try:
                feed(stdin, lambda: proc.poll() is None)
            except BrokenPipeError:
                pass  # the child exited early: its own exit code and stderr say why
            except BaseException as err:  # handed to the caller below
                if proc.poll() is None:  # not a consequence of the child dying first
                    failures.append(err)
                    proc.terminate()
            finally:
                with contextlib.suppress(BrokenPipeError):
                    stdin.close()

        thread = threading.Thread(target=feeding, name="feed", daemon=True)
        thread.start()
        try:
            out, err = proc.communicate(timeout=child.timeout)
        finally:
            thread.join(timeout=60)
    if failures:
        raise failures[0]
    return proc.returncode, out or b"", (err or b"").decode(errors="replace")


def _run_streaming(child: _Child, data: bytes | None, on_line: Callable[[str], None],
                   masked_values: list[str]) -> tuple[int, bytes, str]:
    lines: list[str] = []

    def emit(raw: bytes) -> None:
        line = mask(raw.decode(errors="replace"), masked_values)
        lines.append(line)
        on_line(line)

    deadline = None if child.timeout is None else time.monotonic() + child.timeout
    with child.start(stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        if data is not None:
            _write_in_background(proc, data)
        assert proc.stdout is not None
        try:
            _read_lines(proc.stdout.fileno(), deadline, emit)
            returncode = proc.wait(timeout=_left(deadline))
        except subprocess.TimeoutExpired:
            # Re-raised with what the command said so far, for the error's last lines.
            raise subprocess.TimeoutExpired(child.argv, child.timeout or 0,
                                            stderr="\n".join(lines).encode()) from None
    text = "\n".join(lines)
    return returncode, text.encode(), text


def _left(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise subprocess.TimeoutExpired("", 0)
    return left


def _read_lines(fd: int, deadline: float | None, emit: Callable[[bytes], None]) -> None:
    """Pass each line read from `fd` to `emit` until end of file; past `deadline`, stop.

    Waiting with a deadline, not reading until the writers close: a hung child that
    keeps its output open must still time out.
    """
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            if not selector.select(_left(deadline)):
                continue  # woke without data: _left raises once the deadline has passed
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            *complete, pending = (pending + chunk).split(b"\n")
            for raw in complete:
                emit(raw)
    if pending:
        emit(pending)


def _write_in_background(proc: subprocess.Popen[bytes], data: bytes) -> None:
    """Write the child's input while its output is read: a large input cannot block the read."""
    stdin, proc.stdin = proc.stdin, None
    assert stdin is not None

    def write() -> None:
        with contextlib.suppress(BrokenPipeError):
            try:
                stdin.write(data)
            finally:
                stdin.close()

    threading.Thread(target=write, name="stdin", daemon=True).start()
