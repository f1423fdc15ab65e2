"""`arkbox-installer backup | list | check | restore`: the day-2 backup commands."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from firstboot.cli_support import EXIT_CODES_HELP, add_common_options
from firstboot.core.errors import EXIT_FAILURE, EXIT_OK, BadInputError

log = logging.getLogger("arkbox.backup")


def _context(args: argparse.Namespace) -> Any:
    from firstboot.backup.client import enabled
    from firstboot.core.config import load_config
    from firstboot.core.context import FirstbootContext, Paths

    config = load_config(Path(args.config))
    if not enabled(config):
        raise BadInputError("backups are off: the config has no backup.repository",
                            hint="add a backup section to the config, then: "
                            "arkbox-installer apply")
    return FirstbootContext(config=config, paths=Paths(Path(args.root)))


def _cmd_backup(args: argparse.Namespace) -> int:
    from firstboot.alerts.hooks import after_backup
    from firstboot.backup.backup import run_backup
    from firstboot.backup.client import clear_failure, prepare_client, record_failure
    from firstboot.core.errors import ArkboxError
    from firstboot.core.interrupts import terminate_as_interrupt

    ctx = _context(args)
    try:
        # systemctl stop / shutdown unwind like Ctrl-C: borg is stopped before it commits
        # and a paused container is unpaused, not left frozen until the next night.
        with terminate_as_interrupt():
            prepare_client(ctx)
            report = run_backup(ctx, prune=not args.no_prune)
    except ArkboxError as err:
        # For status (until the next success) and, through stderr, the journal.
        record_failure(ctx.paths, ctx.now(), err.message, err.hint)
        log.error("backup failed: %s%s", err.message,
                  f" (hint: {err.hint})" if err.hint else "")
        after_backup(ctx, ok=False)  # the fail ping and the backup_failed alert; never raises
        raise
    except KeyboardInterrupt:
        record_failure(ctx.paths, ctx.now(), "the backup was interrupted before it finished",
                       "nothing partial is kept; the next run makes a whole backup")
        log.error("backup interrupted: no archive was made")
        raise
    clear_failure(ctx.paths)
    after_backup(ctx, ok=True)
    print(report.summary())
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    from firstboot.backup.backup import archives_with_sizes

    archives = archives_with_sizes(_context(args))
    if args.json:
        print(json.dumps(archives, indent=2))
    else:
        print("\n".join(archive_table(archives)))
    return EXIT_OK


def archive_table(archives: list[dict[str, Any]]) -> list[str]:
    """`list` for people: name, start (UTC), size, what it added, files, duration."""
    from firstboot.backup.preread import SUFFIX, is_preread
    from firstboot.status_view import human_size

    lines = [f"{'ARCHIVE':44} {'STARTED (UTC)':19} {'SIZE':>10} {'ADDED':>10} "
             f"{'FILES':>8} {'TOOK':>7}"]
    for archive in archives:
        stats = archive.get("stats") or {}
        started = str(archive.get("start", ""))[:19].replace("T", " ")
        lines.append(f"{archive.get('name', '?'):44} {started:19} "
                     f"{human_size(float(stats.get('original_size', 0))):>10} "
                     f"{human_size(float(stats.get('deduplicated_size', 0))):>10} "
                     f"{int(stats.get('nfiles', 0)):>8} "
                     f"{float(archive.get('duration', 0)):>6.0f}s")
    if len(lines) == 1:
        lines.append("(no archives yet: arkbox-installer backup makes one)")
    if any(is_preread(str(a.get("name", ""))) for a in archives):
        lines.append(f"*{SUFFIX}: a live pre-read left by an interrupted backup, not a backup "
                     "(never restored or pruned); the next backup deletes it")
    return lines


def _cmd_check(args: argparse.Namespace) -> int:
    from firstboot.alerts.hooks import after_job
    from firstboot.backup.backup import check_repository
    from firstboot.backup.client import record_verify
    from firstboot.core.errors import ArkboxError

    ctx = _context(args)
    try:
        result = check_repository(ctx, verify_data=args.verify_data)
    except ArkboxError as err:
        if args.verify_data:  # for status and the verify_failed alert
            record_verify(ctx.paths, ctx.now(), False, err.message)
            after_job(ctx)
        raise
    if args.verify_data:
        record_verify(ctx.paths, ctx.now(), True, result)
        after_job(ctx)
    print(result)
    return EXIT_OK


def _cmd_restore(args: argparse.Namespace) -> int:
    from firstboot.backup.client import BackupError, Borg, prepare_client, record_repository
    from firstboot.backup.restore import find_backup, restore

    ctx = _context(args)
    prepare_client(ctx)
    backup = find_backup(ctx, args.archive)
    if backup is None:
        raise BackupError("the repository holds no complete backup")
    print(restore(ctx, backup, force=args.force).summary())
    record_repository(ctx.paths, Borg(ctx).remote.repository, ctx.now(), "restore")
    print("now: arkbox-installer apply (recreates the services around the restored data)")
    return EXIT_OK


def _cmd_drill(args: argparse.Namespace) -> int:
    import sys

    from firstboot.backup.client import prepare_client
    from firstboot.backup.drill import run_drill

    ctx = _context(args)
    prepare_client(ctx)
    progress = (lambda line: None) if args.json else (
        lambda line: print(f"  … {line}", file=sys.stderr, flush=True))
    report = run_drill(ctx, args.archive, timeout_s=args.timeout, progress=progress)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print("\n".join(report.lines()))
    if not report.ok:
        log.error("drill failed: %s", report.failure or "see the report")
    return EXIT_OK if report.ok else EXIT_FAILURE


DRILL_HELP = ("restore the latest backup into a throwaway directory and isolated containers "
              "(own names and networks, no published port), run every service's health "
              "check, report pass/fail per service and the time, then remove it all; the "
              "live box is not touched")
DRILL_EXIT_CODES = ("exit codes: 0 the drill passed, 1 it failed (restore or a health check; "
                    "the report says which), 2 bad input or invalid config (e.g. backups "
                    "off), 130 interrupted (everything made was removed)")


def add_commands(sub: Any, installed_config: Path) -> None:
    """Register the backup commands on arkbox-installer's sub-command parser."""
    commands = (
        ("backup", _cmd_backup, "back up now: service volumes, dumps, secrets, TLS, config"),
        ("list", _cmd_list, "the archives in the backup repository"),
        ("check", _cmd_check, "verify the backup repository (borg check)"),
        ("restore", _cmd_restore, "restore the latest (or a named) backup onto this box"),
        ("drill", _cmd_drill, DRILL_HELP),
    )
    for name, func, text in commands:
        epilog = DRILL_EXIT_CODES if name == "drill" else EXIT_CODES_HELP
        p = sub.add_parser(name, help=text.split(" (")[0].split(", run")[0], description=text,
                           epilog=epilog)
        p.add_argument("--config", default=str(installed_config),
                       help=f"the appliance config (default: {installed_config})")
        p.add_argument("--root", default="/", help=argparse.SUPPRESS)
        add_common_options(p)
        p.set_defaults(func=func)
        if name == "backup":
            p.add_argument("--no-prune", action="store_true", help="do not prune afterwards")
        if name == "list":
            p.add_argument("--json", action="store_true", help="borg's JSON")
        if name == "check":
            p.add_argument("--verify-data", action="store_true",
                           help="also decrypt and verify every chunk (slow; monthly)")
        if name == "drill":
            p.add_argument("--archive", default=None, help="a named backup (default: latest)")
            p.add_argument("--json", action="store_true", help="the report as JSON")
            p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                           help="how long the services may take to become healthy "
                           "(default: 300)")
        if name == "restore":
            p.add_argument("--archive", default=None, help="a named backup (default: latest)")
            p.add_argument("--force", action="store_true",
                           help="replace live data (moved to /srv/arkbox.replaced)")
