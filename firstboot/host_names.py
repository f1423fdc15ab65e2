"""The machine's own names: /etc/hostname holds the first label, /etc/hosts the FQDN and
that label on 127.0.1.1, as Debian's installer writes them. Step `system` lays them at
first boot on an appliance; the build lays them on a backup server, which has no first
boot (builder/pipeline/backup_server_host.py). Without the line, the name resolves nowhere
(no DNS knows it): sudo says "unable to resolve host" on every call."""

from __future__ import annotations

from pathlib import Path

from firstboot.core.files import read_text, write_if_changed

HOSTS_ALIAS_ADDRESS = "127.0.1.1"  # Debian's address for the machine's own name


def short_hostname(fqdn: str) -> str:
    """The static host name: the first label (Debian keeps the FQDN in /etc/hosts)."""
    return fqdn.split(".", 1)[0]


def hosts_content(existing: str | None, fqdn: str, short: str) -> str:
    """/etc/hosts with the machine's own names on 127.0.1.1 and every other line kept."""
    lines = (existing or "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
             ).splitlines()
    own = f"{HOSTS_ALIAS_ADDRESS}\t{fqdn} {short}" if fqdn != short else (
        f"{HOSTS_ALIAS_ADDRESS}\t{fqdn}")
    kept = [line for line in lines if line.split()[:1] != [HOSTS_ALIAS_ADDRESS]]
    # Right after the IPv4 localhost line, where Debian's installer puts it.
    at = next((i + 1 for i, line in enumerate(kept) if line.split()[:1] == ["127.0.0.1"]), 0)
    kept.insert(at, own)
    return "\n".join(kept) + "\n"


def write_host_names(etc: Path, fqdn: str) -> bool:
    """`etc`/hostname and `etc`/hosts for `fqdn`; True when either file changed."""
    short = short_hostname(fqdn)
    hosts = etc / "hosts"
    changed = write_if_changed(etc / "hostname", short + "\n")
    changed |= write_if_changed(hosts, hosts_content(read_text(hosts), fqdn, short))
    return changed
