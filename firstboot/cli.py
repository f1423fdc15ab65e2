"""`arkbox-installer`: the program baked into the image, run by systemd at first boot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firstboot.cli_support import EXIT_CODES_HELP, add_common_options, run_tool, tool_parser
from firstboot.core import locations

if TYPE_CHECKING:
    from firstboot.core.config import Appliance
    from firstboot.core.context import Paths
    from firstboot.status import Status

INSTALLED_CONFIG = Path(locations.INSTALLED_CONFIG)


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

    return converge(args.command, Path(args.config), Paths(),
                    force_new_repository=args.force)


def _cmd_load_images(args: argparse.Namespace) -> int:
    from firstboot.containers import image_load
    from firstboot.core.config import load_config
    from firstboot.core.context import FirstbootContext, Paths

    # Runs beside first boot, maybe before the seed step installed the secrets; it needs none.
    config = load_config(Path(args.config), secrets_from_seed=True)
    ctx = FirstbootContext(config=config, paths=Paths())
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
    from firstboot.core.context import Paths
    from firstboot.status import NOT_RUN_TEXT, RunResult, status_json

    paths = Paths(Path(args.root))
    status, certificate, backup, seed, extra = _status_parts(paths)
    if args.json:
        print(status_json(status, certificate, backup=backup, seed=seed, extra=extra))
    elif status is None:
        print(NOT_RUN_TEXT)  # two plain lines: rich is loaded only to draw a run's screen
    else:
        from rich.console import Console

        from firstboot.status_view import print_status

        print_status(status, Console(highlight=False), certificate, backup=backup, seed=seed,
                     alerts=extra.get("alerts"), update=extra.get("update"),
                     update_fetch=extra.get("update_fetch"), spam=extra.get("spam"),
                     mail_bans=extra.get("mail_bans"))
    return 0 if status is not None and status.result in (RunResult.OK, RunResult.RUNNING) else 1


def _status_parts(paths: Paths) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    """Everything status shows: the last run, certificate, backup, seed, and the live box
    (containers, host, the last mail check); also what the status page serves."""
    from firstboot.certs.renew_state import status_facts
    from firstboot.core.context import utc_now
    from firstboot.seed_record import load_record
    from firstboot.status import Status

    status = Status.load(paths.status)
    certificate = status_facts(paths, utc_now())
    if status is None:
        # A box that has not run has no containers, bans or alerts to show: the modules
        # that read them (the Docker SDK, the config model) are not loaded (issue 19).
        return status, certificate, None, load_record(paths.seed_record), {}
    backup, extra = _ran_box_parts(paths, status)
    return status, certificate, backup, load_record(paths.seed_record), extra


def _ran_box_parts(paths: Paths, status: Status) -> tuple[dict[str, Any], dict[str, Any]]:
    """status's parts once a run has started: the backup, then the live box in `extra`
    (alerts with the config's destinations, when it loads)."""
    from firstboot.alerts.status import alert_status
    from firstboot.mail.cli import last_mail_check
    from firstboot.mail.guard_service import status_facts as mail_bans
    from firstboot.runner import runner_active
    from firstboot.status import RunResult
    from firstboot.statuspage.facts import host_facts, services_facts
    from firstboot.updates.record import fetch_record, update_status

    if status.result is RunResult.RUNNING and not runner_active(paths.state):
        status.result = RunResult.INTERRUPTED
    backup = _backup_status(paths)
    config = _installed_config(paths)
    extra: dict[str, Any] = {
        "alerts": alert_status(paths, config), "services": services_facts(paths),
        "host": host_facts(paths), "mail_check": last_mail_check(paths.root),
        "mail_bans": mail_bans(paths), "update": update_status(paths),
        "update_fetch": fetch_record(paths), "spam": _spam_status(paths, config)}
    return backup, extra


def _status_document(root: Path) -> str:
    """status --json's text (the status page's data)."""
    from firstboot.core.context import Paths
    from firstboot.status import status_json

    status, certificate, backup, seed, extra = _status_parts(Paths(root))
    return status_json(status, certificate, backup=backup, seed=seed, extra=extra)


def _installed_config(paths: Paths) -> Appliance | None:
    """The box's config, loaded once for status's parts that need it; None when it does
    not load (status still shows the rest; `validate` says what is wrong)."""
    from firstboot.core.config import load_config
    from firstboot.core.errors import ArkboxError

    try:
        return load_config(paths.at(str(INSTALLED_CONFIG)))
    except ArkboxError:
        return None


def _spam_status(paths: Paths, config: Appliance | None) -> dict[str, Any] | None:
    """rspamd's health and what it learned; None on a box without a mail server (or whose
    config does not load: the alerts part shows that)."""
    from firstboot.containers.naming import Naming
    from firstboot.mail.spam import spam_health

    health = spam_health(config, Naming.for_root(paths.root))
    return None if health is None else health.to_json()


def _backup_status(paths: Paths) -> dict[str, Any]:
    """Backups as status shows them: from backups.json, and the timer's next run from systemd."""
    from firstboot.backup import timer
    from firstboot.backup.client import BackupPaths, backup_status, next_run_argv
    from firstboot.backup.drill_record import drill_history, last_drill
    from firstboot.core.context import utc_now
    from firstboot.core.execute import CommandError, run
    from firstboot.systemd_units import parse_systemd_time

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
            next_run = parse_systemd_time(shown.stdout)
    result = backup_status(paths, utc_now(), next_run)
    drill = last_drill(paths)
    history = drill_history(paths)
    if history:
        result["drills"] = history
    if drill is not None:
        result["last_drill"] = {k: drill.get(k) for k in ("result", "archive", "started_at",
                                                          "failure")}
        if drill.get("result") != "pass":
            result["warnings"].append(f"the last drill ({drill.get('started_at')}) failed: "
                                      f"{drill.get('failure')}; run: arkbox-installer drill")
    return result


def _cmd_status_page_serve(args: argparse.Namespace) -> int:
    from firstboot.core.context import Paths
    from firstboot.core.errors import ArkboxError
    from firstboot.statuspage.app import StatusPageApp
    from firstboot.statuspage.install import password_file, socket_path
    from firstboot.statuspage.server import serve

    paths = Paths(Path(args.root))
    try:
        password_hash = password_file(paths).read_text().strip()
    except FileNotFoundError:
        raise ArkboxError(f"{password_file(paths)} is missing",
                          hint="the status_page step writes it: arkbox-installer apply") from None
    app = StatusPageApp(args.hostname, password_hash, lambda: _status_document(paths.root))
    serve(Path(args.socket) if args.socket else socket_path(paths), app, args.socket_group)
    return 0


def _cmd_status_page_hash(args: argparse.Namespace) -> int:
    from firstboot.statuspage.auth import hash_password

    password = sys.stdin.readline().rstrip("\n")
    if not password:
        from firstboot.core.errors import BadInputError

        raise BadInputError("no password on standard input",
                            hint="printf '%s' 'the password' | arkbox-installer status-page hash")
    print(hash_password(password))
    return 0


def _add_status_page_commands(sub: Any) -> None:
    text = "the status page: its server (run by arkbox-status-page.service), a password hash"
    page = sub.add_parser("status-page", help=text, description=text, epilog=EXIT_CODES_HELP)
    commands = page.add_subparsers(dest="status_page_command", required=True)
    text = "serve the status page on its unix socket, for the proxy"
    serve = commands.add_parser("serve", help=text, description=text, epilog=EXIT_CODES_HELP)
    serve.add_argument("--hostname", required=True, help="the host name the page is served at")
    serve.add_argument("--socket-group", type=int, default=None,
                       help="the group that may connect to the socket (nginx's)")
    serve.add_argument("--socket", help=argparse.SUPPRESS)  # tests: another socket path
    _add_root_option(serve)
    add_common_options(serve)
    serve.set_defaults(func=_cmd_status_page_serve)
    text = ("print the Argon2id hash of the password read from standard input, for "
            "status_page.password (keeps the password itself off the box)")
    hashed = commands.add_parser("hash", help=text, description=text, epilog=EXIT_CODES_HELP)
    add_common_options(hashed)
    hashed.set_defaults(func=_cmd_status_page_hash)


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
        if func is _cmd_converge:
            p.add_argument("--force", action="store_true",
                           help="when the backup repository this box backed up to or "
                           "restored from answers 'does not exist', create a new, empty one "
                           "(refused otherwise: see docs/backup.md)")
    from firstboot.backup.cli import add_commands as add_backup_commands

    add_backup_commands(sub, INSTALLED_CONFIG)
    from firstboot.certs.cli import add_commands as add_certificate_commands

    add_certificate_commands(sub, INSTALLED_CONFIG)
    from firstboot.mail.cli import add_dns_command, add_mail_commands, extend_check_command

    extend_check_command(sub)  # `check mail` beside the backup's `check`
    add_mail_commands(sub)  # `mail unban`, `mail bans`, `mail guard`
    from firstboot.alerts.cli import add_commands as add_alert_commands

    add_alert_commands(sub, INSTALLED_CONFIG)
    add_dns_command(sub, INSTALLED_CONFIG)
    _add_status_page_commands(sub)
    from firstboot.updates.cli import add_commands as add_update_commands

    add_update_commands(sub)
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
