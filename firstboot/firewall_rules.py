"""arkbox's nftables ruleset as data and text: what the firewall lets in, for each role.

The appliance's step `firewall` renders it at first boot and loads it; the build renders
a backup server's once into its root fs (builder/pipeline/backup_server_host.py), where
nftables.service loads it at boot. One template, templates/nftables.conf.j2, serves both.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Literal

from firstboot.core.config import Appliance
from firstboot.core.render import render

TABLE = ("inet", "arkbox")
HTTP_PORTS = (80, 443)
MAIL_PORTS = (25, 465, 587, 993)
# Docker names the default bridge docker0 and user-defined networks' bridges br-<id>.
DOCKER_BRIDGES = ("docker0", "br-*")
ANY_V4, ANY_V6 = "0.0.0.0/0", "::/0"
SSH_RATE, SSH_BURST, SSH_FORGET = "10/minute", 20, "2m"
PING_RATE = "20/second burst 50 packets"
# The roles a ruleset is rendered for (builder.pipeline.context.Role names the same two).
Role = Literal["appliance", "backup-server"]

RENDERED = "/etc/arkbox/rendered/nftables.conf"
BOOT_CONFIG = "/etc/nftables.conf"
UNIT = "nftables.service"
UNIT_FILE = "/usr/lib/systemd/system/nftables.service"
ENABLED_LINK = f"/etc/systemd/system/sysinit.target.wants/{UNIT}"
DROP_IN = f"/etc/systemd/system/{UNIT}.d/arkbox.conf"

BOOT_CONFIG_CONTENT = f"""\
#!/usr/sbin/nft -f
# Written by arkbox, loaded at boot by {UNIT}. No "flush ruleset" here: it would
# also wipe the container engine's rules. arkbox's table replaces itself atomically.
include "{RENDERED}"
"""
DROP_IN_CONTENT = f"""\
# Written by arkbox: stopping {UNIT} removes arkbox's table only. The stock
# ExecStop ("nft flush ruleset") would also remove the container engine's rules.
[Service]
ExecStop=
ExecStop=/usr/sbin/nft delete table {TABLE[0]} {TABLE[1]}
"""


# ---------------------------------------------------------------- the ruleset, as data


def split_families(networks: list[str]) -> tuple[list[str], list[str]]:
    """IPv4 and IPv6 networks of a list of CIDRs, each in nft's notation."""
    v4: list[str] = []
    v6: list[str] = []
    for text in networks:
        net = ipaddress.ip_network(text)
        (v4 if net.version == 4 else v6).append(str(net))
    return v4, v6


def source_matches(networks: list[str]) -> list[str]:
    """The nft matches that let exactly `networks` through: one rule per family,
    one rule without any match when both families are allowed from anywhere."""
    v4, v6 = split_families(networks)
    any4, any6 = ANY_V4 in v4, ANY_V6 in v6
    if any4 and any6:
        return [""]
    matches = []
    if any4:
        matches.append("meta nfproto ipv4")
    elif v4:
        matches.append(f"ip saddr {{ {', '.join(v4)} }}")
    if any6:
        matches.append("meta nfproto ipv6")
    elif v6:
        matches.append(f"ip6 saddr {{ {', '.join(v6)} }}")
    return matches


@dataclass(frozen=True)
class ExtraRule:
    port: int
    proto: str
    sources: list[str]
    comment: str


@dataclass(frozen=True)
class Plan:
    """What the firewall lets in, derived from the config."""

    admin_port: int
    admin_v4: list[str]
    admin_v6: list[str]
    public_tcp: list[int]
    published_tcp: list[int]
    extra: list[ExtraRule]
    mail: bool
    role: Role = "appliance"

    @classmethod
    def of(cls, config: Appliance) -> Plan:
        admin = config.appliance.admin
        v4, v6 = split_families(list(admin.allow_from))
        mail = config.mail.enabled
        ports = [*HTTP_PORTS, *(MAIL_PORTS if mail else ())]
        return cls(admin.ssh_port, v4, v6, ports, list(ports), _extra(config), mail)

    @classmethod
    def for_backup_server(cls, config: Appliance) -> Plan:
        """One SSH port, from anywhere: the clients' addresses are not in the config, so the
        admin's `allow_from` is enforced by sshd (AllowUsers USER@NET), not here. Nothing is
        published or forwarded: a backup server runs no containers."""
        server = config.backup_server
        port = server.port if server is not None else config.appliance.admin.ssh_port
        return cls(port, [ANY_V4], [ANY_V6], [], [], _extra(config), False, "backup-server")

    def summary(self) -> str:
        """"open: 22(admin) 80 443 25 465 587 993 51820/udp(WireGuard)"."""
        everywhere = ANY_V4 in self.admin_v4 and ANY_V6 in self.admin_v6
        if self.role == "backup-server":
            ssh = f"{self.admin_port}(ssh)"
        elif everywhere:
            ssh = f"{self.admin_port}(admin)"
        else:
            ssh = f"{self.admin_port}(admin from {len(self.admin_v4) + len(self.admin_v6)} nets)"
        opened = [ssh, *(str(p) for p in self.public_tcp)]
        for rule in self.extra:
            suffix = "" if rule.proto == "tcp" else f"/{rule.proto}"
            opened.append(f"{rule.port}{suffix}({rule.comment})")
        return "open: " + " ".join(opened)


def _extra(config: Appliance) -> list[ExtraRule]:
    return [ExtraRule(rule.port, rule.proto, source_matches(list(rule.allow_from)), rule.comment)
            for rule in config.firewall.allow]


def plan_for(config: Appliance, role: Role = "appliance") -> Plan:
    return Plan.for_backup_server(config) if role == "backup-server" else Plan.of(config)


def render_ruleset(config: Appliance, role: Role = "appliance") -> str:
    """The complete `nft -f` file. Its table comment names a digest of everything else."""
    plan = plan_for(config, role)

    def body(ruleset_id: str) -> str:
        return render(
            "nftables.conf.j2",
            ruleset_id=ruleset_id,
            role=plan.role,
            admin={"port": plan.admin_port, "v4": plan.admin_v4, "v6": plan.admin_v6},
            ssh={"rate": SSH_RATE, "burst": SSH_BURST, "forget": SSH_FORGET},
            ping_rate=PING_RATE,
            public_tcp=plan.public_tcp,
            mail_ports=plan.mail,
            extra=plan.extra,
            bridges=DOCKER_BRIDGES if plan.role == "appliance" else (),
            published_tcp=plan.published_tcp,
        )

    return body(ruleset_digest(body("")))


def ruleset_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ruleset_id_of(text: str) -> str | None:
    """The digest in a rendered file's (or `nft list table`'s) table comment."""
    for line in text.splitlines():
        words = line.strip().split()
        if words[:1] == ["comment"] and len(words) == 3 and words[1] == '"arkbox':
            return words[2].rstrip('"')
    return None
