"""What both command-line tools share: logging set-up and turning errors into exit codes.

rich is imported only when something is drawn with it (a terminal's log lines, an error):
the installer starts often (status, timers, the status page), and --version or a plain
status should not pay for it (issue 19).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, NoReturn

from firstboot import __version__
from firstboot.core.errors import EXIT_FAILURE, ArkboxError

if TYPE_CHECKING:
    from rich.console import Console

EXIT_CODES_HELP = "exit codes: 0 ok, 1 failure, 2 bad input or invalid config"


@cache
def stderr_console() -> Console:
    """The one console on standard error (log lines and errors share its width)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="show each command run")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


# argparse names no public type for what add_subparsers returns.
SubParsers = argparse._SubParsersAction


def tool_parser(prog: str, description: str
                ) -> tuple[argparse.ArgumentParser, SubParsers[argparse.ArgumentParser]]:
    """The top of both tools' parsers: --version, -v/--debug, the exit codes, one COMMAND."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     epilog=EXIT_CODES_HELP)
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    add_common_options(parser)
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def run_tool(parser: argparse.ArgumentParser, argv: list[str] | None) -> NoReturn:
    """Parse argv, set up logging, run the chosen command and exit with its code."""
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.debug)
    sys.exit(run_cli(args.func, args))


def setup_logging(verbose: bool, debug: bool) -> None:
    level = logging.DEBUG if (verbose or debug) else logging.INFO
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(console=stderr_console(), show_path=False, show_time=False,
                              markup=False, rich_tracebacks=debug)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        # Logs and the journal: one unwrapped line per record.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def run_cli(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one sub-command; an error becomes a short message and its exit code.

    A traceback is shown only with --debug: an operator needs what failed and
    what to do, not our call stack.
    """
    debug = bool(getattr(args, "debug", False))
    try:
        return command(args)
    except ArkboxError as e:
        if debug:
            stderr_console().print_exception()
        from firstboot.core.config import ConfigInvalid, format_problems  # only on this path

        if isinstance(e, ConfigInvalid):  # every problem, with lines and hints
            print(format_problems(e), file=sys.stderr)
            return e.exit_code
        from rich.text import Text

        stderr_console().print(Text("✗ ", style="red") + Text(e.message))
        if e.hint:
            stderr_console().print(f"  hint: {e.hint}", markup=False)
        return e.exit_code
    except KeyboardInterrupt:
        stderr_console().print("interrupted", markup=False)
        return 130
    except Exception as e:
        if debug:
            stderr_console().print_exception()
        else:
            stderr_console().print(
                f"✗ internal error: {type(e).__name__}: {e}\n"
                "  hint: run again with --debug for the traceback, and report it",
                markup=False,
            )
        return EXIT_FAILURE
