"""`arkbox`: validate a config, generate its schema and docs, build the images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from firstboot.cli_support import EXIT_CODES_HELP, add_common_options, run_tool, tool_parser
from firstboot.core.config import (
    DEFAULT_CONFIG_PATH,
    ConfigInvalid,
    format_problems,
    format_warnings,
    load_config,
)
from firstboot.core.config.backup import DEFAULT_CLIENT_QUOTA
from firstboot.core.errors import EXIT_FAILURE, EXIT_OK
from firstboot.core.generated import PAGES, SCHEMAS
from firstboot.core.seed import PARTITION_LABEL, needed_refs

SOURCE_DIR = Path(__file__).resolve().parents[1]
# The default appliance's backup server (development: authorizes the published test key).
DEFAULT_BACKUP_SERVER = SOURCE_DIR / "config" / "default-backup-server.yaml"
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
        warnings = [{"path": p.path, "line": p.line, "message": p.message, "hint": p.hint}
                    for p in appliance.warnings]
        print(json.dumps({"file": str(path), "valid": True, "problems": [],
                          "warnings": warnings}, indent=2))
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
          cache_dir=Path(args.cache) if args.cache else None,
          allow_published=args.allow_published_secrets, refresh=args.refresh)
    return EXIT_OK


def _cmd_seed(args: argparse.Namespace) -> int:
    from builder.host_key import host_key_note
    from builder.seed import make_seed, write_seed_file
    from builder.seed_disk import append_seed_partition

    config = load_config(Path(args.config))
    seed = make_seed(config, args.role, allow_published=args.allow_published_secrets)
    out = Path(args.out)
    if args.into:
        append_seed_partition(Path(args.into), seed, out)
        print(f"wrote {out}: a copy of {args.into} with the seed in its "
              f"{PARTITION_LABEL} partition (0600)")
    else:
        write_seed_file(seed, out)
        print(f"wrote {out} (0600)")
    count = len(needed_refs(config, args.role))
    print(f"  {count} secret(s) for {args.role} {config.appliance.name!r}; keep it as you "
          "keep the secrets themselves", file=sys.stderr)
    if args.role == "appliance" and (note := host_key_note(config)) is not None:
        print(f"⚠ {note}", file=sys.stderr)
    return EXIT_OK


def _cmd_update(args: argparse.Namespace) -> int:
    from builder.remote_update import update_host

    return update_host(Path(args.config), args.host, Path(args.out),
                       identity=Path(args.identity) if args.identity else None,
                       known_hosts=Path(args.known_hosts) if args.known_hosts else None,
                       accept_new_host_key=args.accept_new_host_key,
                       allow_downgrade=args.allow_downgrade)


def _cmd_sign_update(args: argparse.Namespace) -> int:
    from builder.sign_update import sign_bundle

    return sign_bundle(Path(args.bundle), Path(args.key),
                       Path(args.config) if args.config else None)


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
    p.add_argument("--refresh", action="store_true",
                   help="read the Debian archive's state from the mirror now: when it moved, "
                        "the base and the service images are rebuilt with its updates "
                        "(without it, the state the cache recorded is reused; docs/updates.md)")
    _add_allow_published(p)
    p.set_defaults(func=_cmd_build)

    _add_seed_command(command("seed", "write the secrets of one box (a seed) to a file, or "
                              "into a copy of the raw disk image (--into)"))

    _add_update_command(sub)

    _add_sign_update_command(command(
        "sign-update", "sign an update bundle (BUNDLE.sig beside it) for the boxes that "
        "fetch it on their own (updates.enabled; docs/updates.md)"))
    _add_backup_server_command(
        command("backup-server", "manage the clients of a backup server"))
    _add_try_command(command("try", "boot the built appliance here, follow its first boot, "
                             "show how to reach it (`try down` removes it, `try ssh` opens a "
                             "shell, `try status`; `try disaster` backs up, destroys the "
                             "appliance and watches a blank one restore itself)"))
    return parser


def _add_update_command(sub: Any) -> None:
    p = sub.add_parser(
        "update", description="copy the build's update bundle (OUT/NAME-update.tar) to a "
        "running box over the admin SSH and run `arkbox-installer update` there: a backup "
        "first, the new build, every health check, the previous build back on a failure",
        help="update a running box to this build over SSH",
        epilog="exit codes: the box's: 0 updated, 1 failed (rolled back, or nothing changed; "
               "the output says which), 2 bundle refused, nothing changed; 1 also when "
               "the box cannot be reached")
    add_common_options(p)
    p.add_argument("config", help="the appliance config the bundle was built from (its admin "
                                  "user and SSH port are used)")
    p.add_argument("--host", required=True, help="the box's address or name")
    p.add_argument("--out", default="out", help="the build's out/ folder (default: out)")
    p.add_argument("--identity", default=None, metavar="KEY",
                   help="the admin's SSH private key (default: ssh's own choice)")
    p.add_argument("--known-hosts", default=None, metavar="FILE",
                   help="the known_hosts file to check the box's host key against "
                        "(default: ssh's)")
    p.add_argument("--accept-new-host-key", action="store_true",
                   help="record the box's host key when it is not known yet (a changed "
                        "key is still refused)")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="accept an older arkbox version or an older Debian archive")
    p.set_defaults(func=_cmd_update)


def _add_sign_update_command(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="the NAME-update.tar of a build")
    p.add_argument("--key", required=True, metavar="KEY",
                   help="the signing key: its private half (OpenSSH), or KEY.pub with the "
                        "key in ssh-agent")
    p.add_argument("--config", default=None,
                   help="check the signature against this config's updates.signing_key")
    p.set_defaults(func=_cmd_sign_update)


def _add_allow_published(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-published-secrets", action="store_true",
                   help="accept the development secrets published in config/secrets/ for a "
                        "domain not under .test (a throw-away test box only)")


def _add_seed_command(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="the appliance config the box's image was built from")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="where to write the seed (or, with --into, the seeded disk image); "
                        "mode 0600")
    p.add_argument("--into", default=None, metavar="DISK.raw",
                   help="write a copy of this raw image with the seed in an extra GPT "
                        f"partition named {PARTITION_LABEL}; the image itself is not changed")
    p.add_argument("--role", choices=("appliance", "backup-server"), default="appliance")
    _add_allow_published(p)
    p.set_defaults(func=_cmd_seed)


def _add_backup_server_command(server: argparse.ArgumentParser) -> None:
    server_sub = server.add_subparsers(dest="server_command", required=True, metavar="COMMAND")
    p = server_sub.add_parser("add-client", help="authorize an appliance's backup key: one "
                              "forced, append-only `borg serve` line")
    p.add_argument("name", help="the client's name (its appliance.name)")
    p.add_argument("public_key", help="its backup public key ('ssh-ed25519 AAAA...')")
    p.add_argument("--path", default=None, help="its repository path (default: ./NAME)")
    p.add_argument("--quota", default=None,
                   help=f"storage quota, e.g. 250G (default: {DEFAULT_CLIENT_QUOTA})")
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
    p.add_argument("--backup-server-config", default=str(DEFAULT_BACKUP_SERVER),
                   help="the backup server's config, when the appliance backs up over ssh:// "
                        "(default: config/default-backup-server.yaml, the default appliance's)")
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
