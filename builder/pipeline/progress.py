"""How build stages show up on the terminal: one line each, with time and cache verdict."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

from rich.console import Console
from rich.text import Text

log = logging.getLogger("arkbox.build")


@dataclass
class StageResult:
    name: str
    seconds: float
    note: str = ""
    ok: bool = True


@dataclass
class Progress:
    """Prints stage lines like `✓ base root fs (trixie)   cached (inputs unchanged)`.

    Stages may run in several threads at once (build.py's `AtOnce`): each thread's stage
    keeps its own note, and only one spinner runs, the caller's."""

    console: Console
    results: list[StageResult] = field(default_factory=list)
    _local: threading.local = field(default_factory=threading.local)

    def note(self, text: str) -> None:
        """What the running stage wants said on its line (cache verdict, sizes)."""
        self._local.note = text
        log.debug("  %s", text)

    def detail(self, line: str) -> None:
        """A line of a tool's output, shown only with --verbose."""
        log.debug("    %s", line)

    @contextmanager
    def stage(self, name: str, *, spinner: bool = True) -> Iterator[None]:
        self._local.note = ""
        start = time.monotonic()
        try:
            with self.spinning(name) if spinner else nullcontext():
                yield
        except BaseException:
            elapsed = time.monotonic() - start
            self.results.append(StageResult(name, elapsed, self._local.note, ok=False))
            failed = Text(f"  ✗ {name}", style="red") + Text(f"   failed after {elapsed:.1f} s")
            self.console.print(failed)
            raise
        elapsed = time.monotonic() - start
        self.results.append(StageResult(name, elapsed, self._local.note))
        line = Text("  ✓ ", style="green") + Text(f"{name:<28}") + Text(f"{elapsed:6.1f} s")
        if self._local.note:
            line += Text(f"   {self._local.note}")
        self.console.print(line)

    def spinning(self, what: str) -> AbstractContextManager[object]:
        """The one spinner: `what …` while the body runs."""
        return self.console.status(f"{what} …", spinner="dots")
