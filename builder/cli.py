"""`arkbox`: validate a config, generate its schema and docs, build the images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from firstboot.cli_support import EXIT_CODES_HELP, add_common_options, run_tool, tool_parser
from firstboot.core.config import (
    DEFAULT_CONFIG_PATH,
    ConfigInvalid,
    format_problems,
    format_warnings,
    load_config,
)
from firstboot.core.errors import EXIT_FAILURE, EXIT_OK
from firstboot.core.generated import PAGES, SCHEMAS

SOURCE_DIR = Path(__file__).resolve().parents[1]
BACKUP_SERVER_EXAMPLE = SOURCE_DIR / "config" / "examples" / "backup-server.yaml"
GENERATED = {"schema": SCHEMAS, "docs": PAGES}


def _cmd_validate(args: argparse.Namespace) -> int:
    path = Path(args.config)
    try:
        appliance = load_config(path)
    except ConfigInvalid as e:
        if args.json:
            problems = [
                {"path": p.path, "line": p.line, "message": p.message, "hint": p.hint}
                for p in e.problems
            ]
            print(json.dumps({"file": str(path), "valid": False, "problems": problems}, indent=2))
        else:
            print(format_problems(e), file=sys.stderr)
            if e.warnings:
                print(format_warnings(str(path), e.warnings), file=sys.stderr)
        return e.exit_code
    if args.json:
        print(json.dumps({"file": str(path), "valid": True, "problems": []}, indent=2))
    else:
        if appliance.warnings:
            print(format_warnings(str(path), appliance.warnings), file=sys.stderr)
        services = ", ".join(appliance.services) or "none"
        print(f"{path}: valid · appliance {appliance.appliance.name} · services: {services}")
    return EXIT_OK


def _cmd_generate(args: argparse.Namespace) -> int:
    """Write (or with --check, compare) the files generated from the models."""
    status = EXIT_OK
    for relative, render in GENERATED[args.command].items():
        target, text = SOURCE_DIR / relative, render()
        if args.check:
            if target.exists() and target.read_text() == text:
                print(f"{target}: up to date")
            else:
                print(f"{target} is out of date: run `arkbox {args.command}`", file=sys.stderr)
                status = EXIT_FAILURE
        elif args.stdout:
            sys.stdout.write(text)
        else:
            target.write_text(text)
            print(f"wrote {target}")
    return status


def _cmd_build(args: argparse.Namespace) -> int:
    from builder.pipeline.build import build

    build(Path(args.config), Path(args.out), args.role,
          cache_dir=Path(args.cache) if args.cache else None)
    return EXIT_OK


def _cmd_try(args: argparse.Namespace) -> int:
    from builder.rig.try_cmd import run_try

    return run_try(args)


def build_parser() -> argparse.ArgumentParser:
    parser, sub = tool_parser(
        "arkbox", "Turn one appliance.yaml into a hardened server image that sets itself up.")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, epilog=EXIT_CODES_HELP)
        add_common_options(p)
        return p

    p = command("validate", "check a config and report every problem at once")
    p.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG_PATH),
                   help="appliance config (default: the embedded config/default.yaml)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_validate)

    for name, text in (("schema", "write the JSON Schemas of appliance.yaml and recipe.yaml "
                                  "(config/*.schema.json) from the models"),
                       ("docs", "write docs/config.md and docs/recipes.md from the models")):
        p = command(name, text)
        p.add_argument("--check", action="store_true",
                       help="only compare with the committed files (exit 1 if one drifted)")
        p.add_argument("--stdout", action="store_true",
                       help="print instead of writing (the appliance's, then the recipe's)")
        p.set_defaults(func=_cmd_generate)

    p = command("build", "build the disk images, root fs tarball and installer")
    p.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG_PATH),
                   help="appliance config (default: the embedded config/default.yaml)")
    p.add_argument("--out", default="out", help="output directory (default: out/)")
    p.add_argument("--role", choices=("appliance", "backup-server"), default="appliance")
    p.add_argument("--cache", default=None,
                   help="cache directory (default: $ARKBOX_CACHE or /var/cache/arkbox)")
    p.set_defaults(func=_cmd_build)

    _add_backup_server_command(
        command("backup-server", "manage the clients of a backup server"))
    _add_try_command(command("try", "boot the built appliance here, follow its first boot, "
                             "show how to reach it (`try down` removes it, `try ssh` opens a "
                             "shell, `try status`; `try disaster` backs up, destroys the "
                             "appliance and watches a blank one restore itself)"))
    return parser


def _add_backup_server_command(server: argparse.ArgumentParser) -> None:
    server_sub = server.add_subparsers(dest="server_command", required=True, metavar="COMMAND")
    p = server_sub.add_parser("add-client", help="authorize an appliance's backup key: one "
                              "forced, append-only `borg serve` line")
    p.add_argument("name", help="the client's name (its appliance.name)")
    p.add_argument("public_key", help="its backup public key ('ssh-ed25519 AAAA...')")
    p.add_argument("--path", default=None, help="its repository path (default: ./NAME)")
    p.add_argument("--quota", default=None, help="storage quota, e.g. 100G")
    p.add_argument("--authorized-keys", default=None, metavar="FILE",
                   help="add (or replace) the line in FILE, e.g. on the server "
                   "/etc/ssh/borg_authorized_keys; default: print it only")
    add_common_options(p)
    p.set_defaults(func=_cmd_add_client)


def _add_try_command(p: argparse.ArgumentParser) -> None:
    p.epilog = (EXIT_CODES_HELP + "; try disaster: 0 restored and healthy, 1 the backup "
                "failed (nothing destroyed) or the restore failed (the blank appliance is "
                "left up), 2 no try rig with a finished appliance and a backup server "
                "(nothing changed), 130 interrupted (`arkbox try down` removes the rest)")
    p.add_argument("target", nargs="?", metavar="CONFIG|down|ssh|status|disaster",
                   help="appliance config (default: the embedded config/default.yaml), "
                        "or an action on the running rig")
    p.add_argument("--out", default="out", help="build output directory (default: out/)")
    p.add_argument("--rebuild", action="store_true", help="build even if out/ is up to date")
    p.add_argument("--no-build", action="store_true",
                   help="use out/ as it is, even if it is stale")
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds to wait for first boot (and, with disaster, the restoring "
                        "one) (default: 900)")
    p.add_argument("--backup-server-config", default=str(BACKUP_SERVER_EXAMPLE),
                   help="the backup server's config, when the appliance backs up over ssh:// "
                        "(default: config/examples/backup-server.yaml)")
    p.add_argument("--backup-server-out", default=None,
                   help="its build output directory (default: OUT/backup-server)")
    p.add_argument("--rig", default="arkbox-try", help=argparse.SUPPRESS)  # tests: their own rig
    p.add_argument("--json", action="store_true", help="with status: print it as JSON")
    p.set_defaults(func=_cmd_try)


def _cmd_add_client(args: argparse.Namespace) -> int:
    from builder.pipeline.backup_server import cmd_add_client

    target = Path(args.authorized_keys) if args.authorized_keys else None
    line, changed = cmd_add_client(args.name, args.public_key, args.path, args.quota, target)
    print(line)
    if target is not None:
        print(f"{target}: {'updated' if changed else 'unchanged'}", file=sys.stderr)
    return EXIT_OK


def main(argv: list[str] | None = None) -> None:
    run_tool(build_parser(), argv)
