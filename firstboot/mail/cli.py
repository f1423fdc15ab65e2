"""`arkbox-installer dns` and `arkbox-installer check mail`.

`check` alone (or `check backup`) stays the backup repository check; `check mail`
is the deliverability doctor. Both run on the box (they read its DKIM key).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firstboot.cli_support import EXIT_CODES_HELP, add_common_options
from firstboot.core.errors import EXIT_FAILURE, EXIT_OK, ArkboxError, BadInputError

if TYPE_CHECKING:
    from firstboot.core.config import Appliance
    from firstboot.mail.doctor import Finding

CERTIFICATE_INFO = "tls/live/certificate.json"
# The last `check mail`'s findings (no secret in them), for status --json and the status page.
LAST_CHECK = "mail-check.json"  # below /var/lib/arkbox


def add_dns_command(sub: Any, installed_config: Path) -> None:
    text = "the DNS records to publish for this box (zone-file snippet, or --json)"
    p = sub.add_parser("dns", help=text, description=text, epilog=EXIT_CODES_HELP)
    p.add_argument("--config", default=str(installed_config),
                   help=f"the appliance config (default: {installed_config})")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    _address_options(p)
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)
    add_common_options(p)
    p.set_defaults(func=_cmd_dns)


def extend_check_command(sub: Any) -> None:
    """Give the backup's `check` a subject: `check [backup]` or `check mail`."""
    check = sub.choices["check"]
    backup_check = check.get_default("func")
    check.description = ("check backup (the default): verify the backup repository; "
                         "check mail: is this box's mail deliverable (DNS, DKIM, SPF, "
                         "DMARC, MTA-STS, client autoconfiguration, PTR, DNSBL, port 25)")
    check.add_argument("subject", nargs="?", choices=("backup", "mail"), default="backup",
                       help="what to check (default: backup)")
    mail = check.add_argument_group("check mail")
    mail.add_argument("--resolver", metavar="IP[:PORT]", default=None,
                      help="ask this DNS server (default: the system's resolvers)")
    mail.add_argument("--json", action="store_true", help="print the findings as JSON")
    mail.add_argument("--dnsbl", action="append", metavar="ZONE", default=None,
                      help="DNS blocklist to look the address up in (repeatable; default: "
                      "zen.spamhaus.org, bl.spamcop.net)")
    mail.add_argument("--port25-probe", metavar="HOST", default=None,
                      help="a mail server to reach on port 25 (default: "
                      "gmail-smtp-in.l.google.com)")
    mail.add_argument("--ca-file", default=None,
                      help="CA certificates for the HTTPS of the MTA-STS policy and the "
                      "mail client settings (default: the system's)")
    _address_options(check)

    def dispatch(args: argparse.Namespace) -> int:
        if args.subject == "mail":
            return _cmd_check_mail(args)
        return int(backup_check(args))

    check.set_defaults(func=dispatch)


def _address_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ipv4", default=None,
                        help="the box's public IPv4 address (default: detected)")
    parser.add_argument("--ipv6", default=None,
                        help="the box's public IPv6 address (default: detected; "
                        "'none' for no IPv6)")


def _load(args: argparse.Namespace) -> tuple[Any, Any, bytes]:
    from firstboot.core.config import load_config
    from firstboot.core.context import Paths
    from firstboot.mail import dkim
    from firstboot.mail.records import BoxAddresses, detect_addresses
    from firstboot.secret_store import generated_path

    config = load_config(Path(args.config))
    if not config.mail.enabled or not config.mail.hostname:
        raise BadInputError("mail is off in this config: there are no mail records",
                            hint="turn mail on (mail.enabled, mail.hostname, mail.domains)")
    key_path = generated_path(Paths(Path(args.root)), dkim.KEY_FILE)
    try:
        key = key_path.read_bytes()
    except FileNotFoundError:
        raise ArkboxError(f"the DKIM key {key_path} does not exist yet",
                          hint="first boot makes it: wait for it to finish "
                          "(arkbox-installer status)") from None
    except PermissionError:
        raise ArkboxError(f"cannot read {key_path}", hint="run as root (sudo)") from None
    detected = detect_addresses()
    ipv4 = args.ipv4 or detected.ipv4
    ipv6 = None if args.ipv6 == "none" else (args.ipv6 or detected.ipv6)
    return config, BoxAddresses(ipv4, ipv6), key


def _enforce_mta_sts(root: str) -> bool:
    """Enforce only with a CA's certificate: senders would refuse a self-signed one."""
    try:
        info = json.loads((Path(root) / "srv/arkbox" / CERTIFICATE_INFO).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("source") == "acme"


def _cmd_dns(args: argparse.Namespace) -> int:
    from firstboot.mail.records import mail_records, zone_snippet

    config, box, key = _load(args)
    records = mail_records(config, box, key, _enforce_mta_sts(args.root))
    if args.json:
        print(json.dumps({"ipv4": box.ipv4, "ipv6": box.ipv6,
                          "records": [r.as_json() for r in records]}, indent=2))
    else:
        sys.stdout.write(zone_snippet(records, config.appliance.name))
    return EXIT_OK


def _cmd_check_mail(args: argparse.Namespace) -> int:
    from firstboot.mail.doctor import (
        DEFAULT_DNSBLS,
        DEFAULT_PORT25_PROBE,
        FAIL,
        Expectations,
        Probes,
        Resolver,
        check_mail,
        findings_json,
        format_findings,
        summary_level,
    )

    config, box, key = _load(args)
    try:
        resolver = Resolver.parse(args.resolver)
    except ValueError as e:
        raise BadInputError(f"--resolver {args.resolver}: {e}",
                            hint="give an address: 192.0.2.53, 192.0.2.53:5353 or [2001:db8::53]:53"
                            ) from e
    probes = Probes(dnsbls=tuple(args.dnsbl or DEFAULT_DNSBLS),
                    port25_probe=args.port25_probe or DEFAULT_PORT25_PROBE,
                    ca_file=args.ca_file)
    expect = Expectations(config, box, key, _enforce_mta_sts(args.root))
    findings = check_mail(expect, resolver, probes) + _spam_findings(args, config)
    _keep_last_check(Path(args.root), {"result": summary_level(findings),
                                       "findings": findings_json(findings)})
    if args.json:
        print(json.dumps({"result": summary_level(findings),
                          "findings": findings_json(findings)}, indent=2))
    else:
        print(format_findings(findings))
    return EXIT_FAILURE if summary_level(findings) == FAIL else EXIT_OK


def _spam_findings(args: argparse.Namespace, config: Appliance) -> list[Finding]:
    """The spam filter's health, when this runs on the box (its engine answers for it)."""
    from firstboot.containers.naming import Naming
    from firstboot.core.context import Paths
    from firstboot.mail.doctor import FAIL, OK, WARN, Finding
    from firstboot.mail.spam import fix_hint, spam_health

    if not Paths(Path(args.root)).state.parent.is_dir():
        return []  # not a box (a check run from elsewhere against --root)
    naming = Naming.for_root(Path(args.root))
    health = spam_health(config, naming)
    if health is None:
        return []
    level = OK if health.answering else WARN if not health.enabled else FAIL
    return [Finding("spam filter", level, health.describe(), fix_hint(naming)
                    if health.enabled else "set mail.spam.enabled: true, then "
                    "arkbox-installer apply")]


def _keep_last_check(root: Path, body: dict[str, Any]) -> None:
    from firstboot.core.context import Paths, utc_now
    from firstboot.core.files import atomic_write, ensure_dir

    state = Paths(root).state
    if not state.parent.is_dir():
        return  # not a box (a check run from elsewhere against --root)
    ensure_dir(state, 0o755)
    body = {"checked_at": utc_now().isoformat(timespec="seconds"), **body}
    atomic_write(state / LAST_CHECK, json.dumps(body, indent=2) + "\n", mode=0o644)


def last_mail_check(root: Path) -> dict[str, Any] | None:
    """What the last `check mail` found, or None when it never ran here."""
    from firstboot.core.context import Paths

    try:
        raw = json.loads((Paths(root).state / LAST_CHECK).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def add_mail_commands(sub: Any) -> None:
    """`mail unban ADDRESS`, `mail bans`, and `mail guard` (what arkbox-mail-guard.service
    runs)."""
    text = "the mail server's login ban: list or lift bans"
    mail = sub.add_parser("mail", help=text, description=text, epilog=EXIT_CODES_HELP)
    commands = mail.add_subparsers(dest="mail_command", metavar="COMMAND", required=True)
    text = ("lift the ban of ADDRESS (banned for failed mail logins) at once; "
            "its failed logins are counted afresh")
    p = commands.add_parser("unban", help=text, description=text,
                            epilog="exit codes: 0 the ban was lifted, 1 ADDRESS was not "
                            "banned, 2 ADDRESS is not an IP address")
    p.add_argument("address", help="the banned IPv4 or IPv6 address (as status shows it)")
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)
    add_common_options(p)
    p.set_defaults(func=_cmd_unban)
    text = "the addresses banned now, until when (also in `status`)"
    p = commands.add_parser("bans", help=text, description=text, epilog=EXIT_CODES_HELP)
    p.add_argument("--json", action="store_true", help="print the bans as JSON")
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)
    add_common_options(p)
    p.set_defaults(func=_cmd_bans)
    text = ("follow the mail container's log and ban addresses with too many failed logins "
            "(run by arkbox-mail-guard.service; the mail step writes its options)")
    p = commands.add_parser("guard", help=text, description=text, epilog=EXIT_CODES_HELP)
    p.add_argument("--max-failures", type=int, required=True)
    p.add_argument("--window", type=int, required=True, help="seconds")
    p.add_argument("--ban-time", type=int, required=True, help="seconds")
    p.add_argument("--ports", required=True, help="comma-separated TCP ports to close")
    p.add_argument("--container", default="arkbox-mail")
    p.add_argument("--exempt", action="append", default=[], metavar="CIDR")
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)
    add_common_options(p)
    p.set_defaults(func=_cmd_guard)


def _cmd_unban(args: argparse.Namespace) -> int:
    import ipaddress

    from firstboot.core.context import Paths
    from firstboot.mail.guard_service import lift_ban

    try:
        ipaddress.ip_address(args.address)
    except ValueError:
        raise BadInputError(f"{args.address!r} is not an IP address",
                            hint="give the address as `arkbox-installer status` or "
                            "`arkbox-installer mail bans` shows it") from None
    ban = lift_ban(Paths(Path(args.root)), args.address)
    if ban is None:
        print(f"{args.address} was not banned (nothing to lift)")
        return EXIT_FAILURE
    print(f"{ban.address}: ban lifted (banned since {ban.since.isoformat(timespec='seconds')} "
          f"after {ban.failures} failed logins)")
    return EXIT_OK


def _cmd_bans(args: argparse.Namespace) -> int:
    from firstboot.core.context import Paths
    from firstboot.mail.guard_service import status_facts

    facts = status_facts(Paths(Path(args.root)))
    if args.json:
        print(json.dumps(facts, indent=2))
    elif not facts["bans"]:
        print("no address is banned")
    else:
        for ban in facts["bans"]:
            print(f"{ban['address']}  until {ban['until']}  ({ban['failures']} failed "
                  f"{ban['service']} logins)")
    return EXIT_OK


def _cmd_guard(args: argparse.Namespace) -> int:
    from firstboot.core.context import Paths
    from firstboot.mail.guard_service import GuardSettings, follow

    try:
        ports = tuple(int(p) for p in args.ports.split(","))
    except ValueError:
        raise BadInputError(f"--ports {args.ports}: not a list of ports",
                            hint="e.g. --ports 25,465,587,993") from None
    follow(Paths(Path(args.root)), GuardSettings(
        args.max_failures, args.window, args.ban_time, list(args.exempt), ports,
        args.container))
    return EXIT_OK
