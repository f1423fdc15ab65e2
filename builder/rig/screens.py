"""What `arkbox try` prints: the screens after first boot and after a disaster, the lines
that name the rig again, and `say`, which prints them live. Pure, apart from `say`: the
unit tests read these screens."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.rig.parts import FIRSTBOOT_UNIT
from firstboot.core.config import Appliance

DEFAULT_RIG = "arkbox-try"

Say = Callable[[str], None]


def say(line: str = "") -> None:
    """One line to stdout, flushed: the output is followed live, also through a pipe."""
    print(line, flush=True)


def rig_option(rig_name: str, out_dir: str = "out") -> str:
    """The options that name this rig (and, for down, its files) again."""
    rig = "" if rig_name == DEFAULT_RIG else f" --rig {rig_name}"
    out = "" if Path(out_dir) == Path("out") else f" --out {shlex.quote(out_dir)}"
    return rig + out


def describe_removed(removed: dict[str, int]) -> str:
    if not any(removed.values()):
        return "nothing to remove"
    parts = [f"{n} {kind[:-1] if n == 1 else kind}" for kind, n in removed.items()]
    return "removed " + ", ".join(parts)


def published_line(ports: dict[str, int], note: str = "") -> str:
    """Which container port went to which port on 127.0.0.1."""
    return "published on 127.0.0.1: " + " · ".join(
        f"{port.split('/')[0]} → {host}" for port, host in ports.items()) + note


def look_command(rig_name: str) -> str:
    """How to look at an appliance whose first boot did not finish."""
    return (f"arkbox try ssh{rig_option(rig_name)}   then: journalctl -u {FIRSTBOOT_UNIT}; "
            "arkbox-installer status")


# ---------------------------------------------------------------- the web


@dataclass(frozen=True)
class Route:
    service: str
    hostname: str
    path: str


def routes_of(config: Appliance) -> list[Route]:
    routes = []
    for name, service in config.services.items():
        if service.route is not None:
            routes.append(Route(name, service.route.hostname, service.route.path or "/"))
    return sorted(routes, key=lambda r: (r.hostname, r.path))


def curl_example(route: Route, port: int, certificate: Path) -> str:
    url = f"https://{route.hostname}:{port}{route.path}"
    return shlex.join(["curl", "--resolve", f"{route.hostname}:{port}:127.0.0.1",
                       "--cacert", str(certificate), url])


def web_lines(routes: list[Route], ports: dict[str, int], certificate: Path | None,
              from_ca: bool) -> list[str]:
    """The routes on the published HTTPS port, the certificate to trust, curl examples."""
    https, http = ports.get("443/tcp"), ports.get("80/tcp")
    if https is None or not routes:
        return []
    lines = ["  Web (HTTPS, published on this machine's 127.0.0.1):"]
    width = max(len(r.service) for r in routes)
    lines += [f"    {r.service:<{width}}  https://{r.hostname}:{https}{r.path}" for r in routes]
    if certificate is not None and from_ca:
        lines.append("  It serves a certificate from the rig's test ACME CA (Pebble); "
                     f"its root, to trust: {certificate}.")
    elif certificate is not None:
        lines.append("  It serves its self-signed fallback certificate (the test CA did "
                     f"not issue one in time), copied to {certificate}.")
    if certificate is not None:
        lines.append("  The names do not resolve on this machine; curl maps them and "
                     "trusts that file:")
        lines += [f"    {curl_example(route, https, certificate)}" for route in routes]
    if http is not None:
        lines.append(f"  HTTP: 127.0.0.1:{http} (redirects to HTTPS)")
    lines.append("  In a browser: add \"127.0.0.1 " + " ".join(r.hostname for r in routes)
                 + "\" to /etc/hosts and open the URL above"
                 + (" (import the test CA's root above as an authority, or accept the "
                    "warning)." if from_ca else ", accepting the certificate."))
    return [*lines, ""]


# ---------------------------------------------------------------- mail


@dataclass(frozen=True)
class MailLogin:
    address: str
    password: str  # where the password is (a file, a variable): never the password


def mail_login(config: Appliance, config_path: Path) -> MailLogin | None:
    """The first mailbox of the config, its password named by where it comes from (pure)."""
    if not config.mail.enabled or not config.mail.mailboxes:
        return None
    box = config.mail.mailboxes[0]
    ref = box.password
    if ref is not None and ref.file:
        path = Path(ref.file)
        where = str(path if path.is_absolute() else config_path.parent / path)
    elif ref is not None and ref.env:
        where = f"${ref.env}"
    else:
        where = "(only its hash is in the config: the password you hashed)"
    return MailLogin(str(box.address), where)


def imaps_example(login: MailLogin, hostname: str, port: int, certificate: Path) -> str:
    """Log in over IMAPS with openssl, the certificate verified for the mail host name; the
    password is read from its file by the shell, never shown."""
    password = (f'"$(cat {shlex.quote(login.password)})"' if not login.password.startswith("$")
                else f'"{login.password}"')
    commands = r'a LOGIN %s "%s"\r\na SELECT INBOX\r\na LOGOUT\r\n'
    return (f"printf '{commands}' {shlex.quote(login.address)} {password} | "
            + shlex.join(["openssl", "s_client", "-quiet", "-connect", f"127.0.0.1:{port}",
                          "-servername", hostname, "-verify_hostname", hostname,
                          "-verify_return_error", "-CAfile", str(certificate)]))


def mail_lines(config: Appliance, ports: dict[str, int], login: MailLogin | None,
               certificate: Path | None) -> list[str]:
    """The mail ports and the test mailbox's login (pure)."""
    hostname = config.mail.hostname
    wanted = [("SMTP", "25/tcp", "inbound, STARTTLS"), ("SMTPS", "465/tcp", "submission, TLS"),
              ("Submission", "587/tcp", "STARTTLS"), ("IMAPS", "993/tcp", "TLS")]
    shown = [(kind, ports[port], note) for kind, port, note in wanted if port in ports]
    if not config.mail.enabled or not hostname or not shown:
        return []
    lines = [f"  Mail ({hostname}, published on this machine's 127.0.0.1):"]
    for kind, port, note in shown:
        lines.append(f"    {kind:<10}  127.0.0.1:{port}   ({note})")
    imaps = ports.get("993/tcp")
    if login is not None:
        lines.append(f"  Test mailbox: user {login.address}, password in {login.password}")
        if imaps is not None and certificate is not None:
            lines.append(f"  Read its INBOX over IMAPS (openssl checks the certificate against "
                         f"{certificate}):")
            lines.append(f"    {imaps_example(login, hostname, imaps, certificate)}")
    lines.append("")
    return lines


# ---------------------------------------------------------------- the screens


def next_steps(config: Appliance, ports: dict[str, int], certificate: Path | None,
               dns: str | None, rig_name: str, out_dir: str = "out", *,
               from_ca: bool = False, login: MailLogin | None = None,
               doctor: str | None = None) -> list[str]:
    """The screen after a successful first boot (pure: the tests read it)."""
    lines = ["", "What you can do now:", ""]
    lines += web_lines(routes_of(config), ports, certificate, from_ca)
    lines += mail_lines(config, ports, login, certificate)
    lines.append(f"  Shell:   arkbox try ssh{rig_option(rig_name)}   (root, via docker exec)")
    if (ssh := ports.get("22/tcp")) is not None:
        lines.append(f"           ssh -p {ssh} {config.appliance.admin.user}@127.0.0.1   "
                     "(with the config's admin key)")
    lines.append(f"  Status:  arkbox try ssh{rig_option(rig_name)}, then: arkbox-installer "
                 "status")
    if dns:
        lines.append("  DNS records to publish (arkbox-installer dns):")
        lines += [f"    {line}" for line in dns.splitlines() if line.strip()]
    if doctor:
        lines.append("  Mail doctor, against the rig's DNS serving those records (DNS blocklists "
                     "and outbound port 25 cannot be checked in the rig: warnings):")
        lines.append(f"    {doctor}")
    lines.append(f"  Stop:    arkbox try down{rig_option(rig_name, out_dir)}   "
                 "(removes its containers, networks, volumes)")
    return lines


def after_disaster(routes: list[Route], ports: dict[str, int], same_ports: bool,
                   certificate: Path | None, rig_name: str, out_dir: str, *,
                   doctor: str | None = None) -> list[str]:
    """What to do with the restored appliance (pure)."""
    https = ports.get("443/tcp")
    lines = [""]
    if https is not None and routes:
        again = "the same as before" if same_ports else "a NEW port: the URLs changed"
        lines.append(f"  Web (127.0.0.1, {again}):")
        lines += [f"    https://{r.hostname}:{https}{r.path}" for r in routes]
        if certificate is not None:
            lines.append(f"    its certificate (restored with the data): {certificate}")
    lines.append(f"  Shell:   arkbox try ssh{rig_option(rig_name)}   then: "
                 "arkbox-installer status")
    if doctor:
        lines.append("  Mail doctor, against the rig's DNS (now serving the restored box's "
                     "zone):")
        lines.append(f"    {doctor}")
    lines.append(f"  Stop:    arkbox try down{rig_option(rig_name, out_dir)}")
    return lines
