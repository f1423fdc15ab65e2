"""How build stages show up on the terminal: one line each, with time and cache verdict."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    """Prints stage lines like `✓ base root fs (trixie)   cached (inputs unchanged)`."""

    console: Console
    results: list[StageResult] = field(default_factory=list)
    _note: str = ""

    def note(self, text: str) -> None:
        """What the running stage wants said on its line (cache verdict, sizes)."""
        self._note = text
        log.debug("  %s", text)

    def detail(self, line: str) -> None:
        """A line of a tool's output, shown only with --verbose."""
        log.debug("    %s", line)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._note = ""
        start = time.monotonic()
        try:
            with self.console.status(f"{name} …", spinner="dots"):
                yield
        except BaseException:
            elapsed = time.monotonic() - start
            self.results.append(StageResult(name, elapsed, self._note, ok=False))
            failed = Text(f"  ✗ {name}", style="red") + Text(f"   failed after {elapsed:.1f} s")
            self.console.print(failed)
            raise
        elapsed = time.monotonic() - start
        self.results.append(StageResult(name, elapsed, self._note))
        line = Text("  ✓ ", style="green") + Text(f"{name:<28}") + Text(f"{elapsed:6.1f} s")
        if self._note:
            line += Text(f"   {self._note}")
        self.console.print(line)
