"""`arkbox-installer alert check | test`: the alert commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from firstboot.cli_support import add_common_options
from firstboot.core.errors import EXIT_FAILURE, EXIT_OK

CHECK_HELP = ("judge every condition now, send what started or cleared, retry what is "
              "queued (run every few minutes by arkbox-alerts.timer)")
# A refused delivery is not the check failing: it is queued and status shows it. Exit 1
# for it would leave arkbox-alerts.service "failed" over a destination's bad minute.
CHECK_EXIT = ("exit codes: 0 the check ran (a delivery that failed is queued for retry, "
              "and status shows it), 1 the check could not run, 2 invalid config")
TEST_HELP = "send one test alert to every destination now and report each result"
TEST_EXIT = ("exit codes: 0 every destination took the test alert, 1 one or more did not "
             "(or none is configured), 2 invalid config")


def _context(args: argparse.Namespace) -> Any:
    from firstboot.core.config import load_config
    from firstboot.core.context import FirstbootContext, Paths

    return FirstbootContext(config=load_config(Path(args.config)), paths=Paths(Path(args.root)))


def _cmd_check(args: argparse.Namespace) -> int:
    from firstboot.alerts.check import run_check

    report = run_check(_context(args))
    if args.json:
        print(json.dumps({"events": [e.__dict__ for e in report.events],
                          "results": report.results, "firing": report.firing,
                          "queued": report.queued}, indent=2))
    else:
        print("\n".join(report.lines()))
    return EXIT_OK


def _cmd_test(args: argparse.Namespace) -> int:
    from firstboot.alerts.check import send_test
    from firstboot.alerts.destinations import email_unavailable_reason

    ctx = _context(args)
    results = send_test(ctx)
    for destination, error in results:
        print(f"{'✓' if error is None else '✗'} {destination.name}: {destination.shown}"
              + ("" if error is None else f"\n  {error}"))
    email = email_unavailable_reason(ctx.config)
    if email is not None:
        print(f"- email: {email}")
    if not results:
        print("no destination is configured: alerts are only in arkbox-installer status "
              "(see docs/alerts.md)")
        return EXIT_FAILURE
    return EXIT_OK if all(error is None for _, error in results) else EXIT_FAILURE


def add_commands(sub: Any, installed_config: Path) -> None:
    """Register `alert check` and `alert test` on arkbox-installer's parser."""
    text = "alerts: check the box now, or send a test alert"
    alert = sub.add_parser("alert", help=text, description=text)
    commands = alert.add_subparsers(dest="alert_command", required=True, metavar="ACTION")
    for name, func, help_text, epilog in (("check", _cmd_check, CHECK_HELP, CHECK_EXIT),
                                          ("test", _cmd_test, TEST_HELP, TEST_EXIT)):
        p = commands.add_parser(name, help=help_text.split(" (")[0], description=help_text,
                                epilog=epilog)
        p.add_argument("--config", default=str(installed_config),
                       help=f"the appliance config (default: {installed_config})")
        p.add_argument("--root", default="/", help=argparse.SUPPRESS)
        if name == "check":
            p.add_argument("--json", action="store_true", help="the round's events and results")
        add_common_options(p)
        p.set_defaults(func=func)
