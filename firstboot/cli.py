"""`arkbox-installer`: the program baked into the image, run by systemd at first boot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from firstboot import __version__
from firstboot.cli_support import EXIT_CODES_HELP, add_common_options, run_cli, setup_logging

INSTALLED_CONFIG = Path("/etc/arkbox/appliance.yaml")


def _cmd_validate(args: argparse.Namespace) -> int:
    from firstboot.config import ConfigInvalid, format_problems, load_config

    try:
        appliance = load_config(Path(args.config))
    except ConfigInvalid as e:
        print(format_problems(e), file=sys.stderr)
        return e.exit_code
    print(f"{args.config}: valid (appliance {appliance.appliance.name!r})")
    return 0


def _cmd_firstboot(args: argparse.Namespace) -> int:
    # The step runner lands with the first-boot issue; until then first boot
    # only proves the installer runs and the config it carries is valid.
    print(f"arkbox first boot · installer {__version__} · config {args.config}", flush=True)
    return _cmd_validate(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arkbox-installer",
        description="Sets up an arkbox appliance at first boot and runs its day-2 commands.",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument("--version", action="version", version=f"arkbox-installer {__version__}")
    add_common_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, func, text in (
        ("firstboot", _cmd_firstboot, "set this machine up from its config (run by systemd)"),
        ("validate", _cmd_validate, "check the installed config"),
    ):
        p = sub.add_parser(name, help=text, description=text, epilog=EXIT_CODES_HELP)
        p.add_argument("config", nargs="?", default=str(INSTALLED_CONFIG),
                       help=f"the appliance config (default: {INSTALLED_CONFIG})")
        add_common_options(p)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.debug)
    sys.exit(run_cli(args.func, args))
