"""`arkbox-installer renew`: get or renew the TLS certificate from the ACME CA now."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from firstboot.certs.timer import EXIT_RETRY_LATER
from firstboot.cli_support import add_common_options
from firstboot.core.errors import EXIT_FAILURE, EXIT_OK

RENEW_EXIT_CODES = (
    "exit codes: 0 a certificate from the CA is served (renewed now, or not due yet; with "
    "--scheduled also: waiting for the next attempt), 1 the CA did not issue (the current "
    f"certificate stays) or another failure, 2 bad input or invalid config, {EXIT_RETRY_LATER} "
    "with --scheduled: the CA did not issue, retried later with backoff"
)


def _cmd_renew(args: argparse.Namespace) -> int:
    from firstboot.certs.renew import Result, renew
    from firstboot.core.config import load_config
    from firstboot.core.context import FirstbootContext, Paths

    ctx = FirstbootContext(config=load_config(Path(args.config)), paths=Paths(Path(args.root)))
    report = renew(ctx, force=args.force, scheduled=args.scheduled)
    mark = {Result.RENEWED: "✓", Result.NOT_DUE: "✓", Result.WAITING: "…",
            Result.FAILED: "✗"}[report.result]
    print(f"{mark} {report.result}: {report.summary}")
    for what in report.reloaded:
        print(f"  reloaded {what}")
    if report.result is not Result.FAILED:
        return EXIT_OK
    if args.scheduled:
        return EXIT_RETRY_LATER
    print("  hint: fix what the CA reported, then run again: arkbox-installer renew")
    return EXIT_FAILURE


def add_commands(sub: Any, installed_config: Path) -> None:
    text = "get or renew the TLS certificate from the ACME CA (when due), reload nginx"
    p = sub.add_parser("renew", help=text, description=text, epilog=RENEW_EXIT_CODES)
    p.add_argument("--config", default=str(installed_config),
                   help=f"the appliance config (default: {installed_config})")
    p.add_argument("--force", action="store_true",
                   help="request a new certificate even if the current one is not due")
    p.add_argument("--scheduled", action="store_true",
                   help="as the timer runs it: wait out the backoff after a failed attempt")
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)
    add_common_options(p)
    p.set_defaults(func=_cmd_renew)
