"""`arkbox-installer verify-update BUNDLE` (check an update bundle against this box) and
`arkbox-installer update BUNDLE` (become its build: backup first, rollback on failure)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firstboot.cli_support import add_common_options

if TYPE_CHECKING:
    from firstboot.core.context import Paths

EXIT_CODES = ("exit codes: 0 the bundle fits this box, 1 failure, 2 refused: damaged or "
              "truncated, another appliance, or a downgrade")
UPDATE_EXIT_CODES = ("exit codes: 0 updated (or already that build; with --rollback or "
                     "--recover: the box is one build again, or nothing was cut off), "
                     "1 the update failed: before changing anything (the backup), or "
                     "after, and was rolled back (status says which); with --rollback or "
                     "--recover: the previous build's apply failed, "
                     "2 refused, nothing changed: a damaged or truncated bundle, another "
                     "appliance, or a downgrade")


def add_commands(sub: Any) -> None:
    text = ("check an update bundle (NAME-update.tar from `arkbox build`) against this box: "
            "every file's sha256, the appliance, the version; says what it would change")
    p = sub.add_parser("verify-update", help=text, description=text, epilog=EXIT_CODES)
    p.add_argument("bundle", help="the NAME-update.tar")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="accept an older arkbox version or an older Debian archive")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)  # tests: another box
    add_common_options(p)
    p.set_defaults(func=_cmd_verify_update)
    text = ("become the build of an update bundle: a backup first, the new files in place, "
            "apply, every health check; on a failure the previous build back")
    p = sub.add_parser("update", help=text, description=text, epilog=UPDATE_EXIT_CODES)
    p.add_argument("bundle", nargs="?", help="the NAME-update.tar (not with --rollback)")
    p.add_argument("--allow-downgrade", action="store_true",
                   help="accept an older arkbox version or an older Debian archive")
    p.add_argument("--rollback", action="store_true",
                   help="undo an update that was cut off (a power loss) and apply again")
    p.add_argument("--fetch", action="store_true",
                   help="what arkbox-update.timer runs: download the bundle the config's "
                        "updates.url publishes, check its signature, then update")
    p.add_argument("--recover", action="store_true",
                   help="what boot runs (arkbox-update-recover.service): --rollback when "
                        "an update was cut off, else nothing (exit 0)")
    add_common_options(p)
    p.set_defaults(func=_cmd_update)


def _cmd_verify_update(args: argparse.Namespace) -> int:
    """Read the bundle whole (digests, owned paths, index), then compare it with this box."""
    from firstboot.updates.bundle import verify_bundle
    from firstboot.updates.check import check_update

    result = check_update(verify_bundle(Path(args.bundle)), Path(args.root),
                          allow_downgrade=args.allow_downgrade)
    if args.json:
        print(json.dumps(dataclasses.asdict(result), indent=2, sort_keys=True))
        return 0
    print(f"{result.bundle}: every file matches its sha256; for {result.appliance}")
    print(f"  arkbox {result.version[0]} → {result.version[1]}; Debian archive "
          f"{result.archive[0] or '?'} → {result.archive[1] or '?'}"
          + (f" (a downgrade, allowed: {result.downgrade})" if result.downgrade else ""))
    print(f"  service images changed: {', '.join(result.images_changed) or 'none'}"
          f"; unchanged: {', '.join(result.images_unchanged) or 'none'}")
    print(f"  installer {'changed' if result.installer_changed else 'unchanged'}, "
          f"config {'changed' if result.config_changed else 'unchanged'}")
    return 0


def _cmd_update(args: argparse.Namespace) -> int:
    from firstboot.core.context import Paths
    from firstboot.core.errors import BadInputError
    from firstboot.updates.apply import rollback_interrupted, update

    if os.geteuid() != 0:
        raise BadInputError("arkbox-installer update changes the system: run it as root",
                            hint="sudo arkbox-installer update NAME-update.tar")
    paths = Paths()  # it runs `apply`, which acts on the running system
    if args.fetch:
        if args.bundle or args.rollback or args.recover:
            raise BadInputError("--fetch takes no bundle and no other option",
                                hint="arkbox-installer update --fetch")
        return _fetch(paths, allow_downgrade=args.allow_downgrade)
    if args.rollback or args.recover:
        option = "--rollback" if args.rollback else "--recover"
        if args.bundle or (args.rollback and args.recover):
            raise BadInputError(f"{option} takes no bundle and no other option",
                                hint=f"arkbox-installer update {option}")
        return rollback_interrupted(paths, at_boot=args.recover)
    if not args.bundle:
        raise BadInputError("which bundle? arkbox-installer update NAME-update.tar",
                            hint="copy the NAME-update.tar from the build's out/ to the box")
    return update(Path(args.bundle), paths, allow_downgrade=args.allow_downgrade)


def _fetch(paths: Paths, *, allow_downgrade: bool) -> int:
    from firstboot.core.config import load_config
    from firstboot.core.locations import INSTALLED_CONFIG
    from firstboot.updates.apply import update
    from firstboot.updates.fetch import fetch_and_update

    settings = load_config(paths.at(INSTALLED_CONFIG)).updates
    return fetch_and_update(settings, paths, lambda bundle: update(
        bundle, paths, allow_downgrade=allow_downgrade))
