"""`arkbox-installer`: the program baked into the image, run by systemd at first boot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firstboot.cli_support import EXIT_CODES_HELP, add_common_options, run_tool, tool_parser

if TYPE_CHECKING:
    from firstboot.core.context import Paths

INSTALLED_CONFIG = Path("/etc/arkbox/appliance.yaml")


def _cmd_validate(args: argparse.Namespace) -> int:
    from firstboot.core.config import ConfigInvalid, format_problems, load_config

    try:
        appliance = load_config(Path(args.config))
    except ConfigInvalid as e:
        print(format_problems(e), file=sys.stderr)
        return e.exit_code
    print(f"{args.config}: valid (appliance {appliance.appliance.name!r})")
    return 0


def _cmd_converge(args: argparse.Namespace) -> int:
    from firstboot.converge import converge
    from firstboot.core.context import Paths

    return converge(args.command, Path(args.config), Paths())


def _cmd_load_images(args: argparse.Namespace) -> int:
    from firstboot.containers import image_load
    from firstboot.core.config import load_config
    from firstboot.core.context import FirstbootContext, Paths

    ctx = FirstbootContext(config=load_config(Path(args.config)), paths=Paths())
    client = image_load.wait_for_engine(ctx, image_load.WAIT_FOR_ENGINE_S)
    loaded = image_load.load_missing(ctx, client)
    print(f"loaded {', '.join(i.recipe for i in loaded)}" if loaded else
          "every baked image is in the engine")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    """The dry run: what `apply` would do to the containers of services, mail and the proxy."""
    from firstboot.containers.proxy import plan_proxy
    from firstboot.containers.services import plan_services
    from firstboot.core.config import load_config
    from firstboot.core.context import FirstbootContext, Paths
    from firstboot.mail.container import plan_mail

    ctx = FirstbootContext(config=load_config(Path(args.config)), paths=Paths())
    pending = 0
    for part, planned in (("services", plan_services), ("mail", plan_mail),
                          ("proxy", plan_proxy)):
        lines = planned(ctx).describe()
        pending += len(lines)
        print(f"{part}: " + ("nothing to do" if not lines else f"{len(lines)} to do"))
        for line in lines:
            print(f"  {line}")
    return 1 if pending else 0


def _cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    from firstboot.certs.renew import status_facts
    from firstboot.core.context import Paths, utc_now
    from firstboot.runner import runner_active
    from firstboot.status import RunResult, Status
    from firstboot.status_view import print_status, status_json

    paths = Paths(Path(args.root))
    status = Status.load(paths.status)
    if status is not None and status.result is RunResult.RUNNING and not runner_active(
            paths.state):
        status.result = RunResult.INTERRUPTED
    certificate = status_facts(paths, utc_now())
    backup = _backup_status(paths) if status is not None else None
    if args.json:
        print(status_json(status, certificate, backup=backup))
    else:
        print_status(status, Console(highlight=False), certificate, backup=backup)
    return 0 if status is not None and status.result in (RunResult.OK, RunResult.RUNNING) else 1


def _backup_status(paths: Paths) -> dict[str, Any]:
    """Backups as status shows them: from backups.json, and the timer's next run from systemd."""
    from firstboot.backup import timer
    from firstboot.backup.client import BackupPaths, backup_status, next_run_argv, parse_next_run
    from firstboot.backup.drill import last_drill
    from firstboot.core.context import utc_now
    from firstboot.core.execute import CommandError, run

    installed = paths.at(timer.UNIT_DIR).joinpath(timer.TIMER).exists()
    if not installed and not BackupPaths(paths).stats.exists():
        return backup_status(paths, utc_now(), enabled=False)
    next_run = None
    if paths.is_live:
        try:
            shown = run(next_run_argv(timer.TIMER), check=False)
        except (CommandError, OSError):
            shown = None
        if shown is not None and shown.returncode == 0:
            next_run = parse_next_run(shown.stdout)
    result = backup_status(paths, utc_now(), next_run)
    drill = last_drill(paths)
    if drill is not None:
        result["last_drill"] = {k: drill.get(k) for k in ("result", "archive", "started_at",
                                                          "failure")}
        if drill.get("result") != "pass":
            result["warnings"].append(f"the last drill ({drill.get('started_at')}) failed: "
                                      f"{drill.get('failure')}; run: arkbox-installer drill")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser, sub = tool_parser(
        "arkbox-installer",
        "Sets up an arkbox appliance at first boot and runs its day-2 commands.")
    for name, func, text in (
        ("firstboot", _cmd_converge, "set this machine up from its config (run by systemd)"),
        ("apply", _cmd_converge, "bring this machine in line with its config again, after "
                                 "a change; reports what changed"),
        ("validate", _cmd_validate, "check the installed config"),
        ("plan", _cmd_plan, "the dry run: what apply would do to the containers now "
                            "(exit 1 when it would change something)"),
        ("load-images", _cmd_load_images, "load the baked service images into the engine "
                                          "(run at boot by arkbox-images.service, beside "
                                          "first boot)"),
    ):
        p = sub.add_parser(name, help=text, description=text, epilog=EXIT_CODES_HELP)
        p.add_argument("config", nargs="?", default=str(INSTALLED_CONFIG),
                       help=f"the appliance config (default: {INSTALLED_CONFIG})")
        add_common_options(p)
        p.set_defaults(func=func)
    from firstboot.backup.cli import add_commands as add_backup_commands

    add_backup_commands(sub, INSTALLED_CONFIG)
    from firstboot.certs.cli import add_commands as add_certificate_commands

    add_certificate_commands(sub, INSTALLED_CONFIG)
    from firstboot.mail.cli import add_dns_command, extend_check_command

    extend_check_command(sub)  # `check mail` beside the backup's `check`
    add_dns_command(sub, INSTALLED_CONFIG)
    text = "what first boot (or the last apply) did: steps, certificate, failures with fixes"
    p = sub.add_parser("status", help=text, description=text,
                       epilog="exit codes: 0 the last run succeeded (or is running), "
                       "1 it failed, was interrupted, or none ran yet")
    p.add_argument("--json", action="store_true", help="print the same as JSON")
    _add_root_option(p)
    add_common_options(p)
    p.set_defaults(func=_cmd_status)
    return parser


def _add_root_option(parser: argparse.ArgumentParser) -> None:
    # For tests: read the state below DIR instead of the running system's.
    parser.add_argument("--root", default="/", help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> None:
    run_tool(build_parser(), argv)
