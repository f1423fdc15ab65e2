"""Step `firewall`: arkbox's nftables table, default drop, replaced atomically.

The ruleset is rendered from templates/nftables.conf.j2 into
/etc/arkbox/rendered/nftables.conf, checked with `nft -c -f`, then loaded with
`nft -f` (one transaction that deletes and re-creates only `table inet arkbox`).
The table's comment carries a digest of the rendered rules, so a re-run can
tell cheaply whether the kernel holds exactly this ruleset.

At boot, nftables.service loads it again from /etc/nftables.conf, which only
includes the rendered file: Debian's stock file (and the unit's ExecStop)
would `flush ruleset`, wiping the container engine's rules with ours.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.files import atomic_symlink, ensure_dir, read_text, write_if_changed
from firstboot.core.render import render
from firstboot.core.step import Outcome, StepFailed

NAME = "firewall"

TABLE = ("inet", "arkbox")
HTTP_PORTS = (80, 443)
MAIL_PORTS = (25, 465, 587, 993)
# Docker names the default bridge docker0 and user-defined networks' bridges br-<id>.
DOCKER_BRIDGES = ("docker0", "br-*")
ANY_V4, ANY_V6 = "0.0.0.0/0", "::/0"
SSH_RATE, SSH_BURST, SSH_FORGET = "10/minute", 20, "2m"
PING_RATE = "20/second burst 50 packets"

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


def applies(config: Appliance) -> bool:
    return True


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

    @classmethod
    def of(cls, config: Appliance) -> Plan:
        admin = config.appliance.admin
        v4, v6 = split_families(list(admin.allow_from))
        mail = config.mail.enabled
        ports = [*HTTP_PORTS, *(MAIL_PORTS if mail else ())]
        extra = [ExtraRule(rule.port, rule.proto, source_matches(list(rule.allow_from)),
                           rule.comment) for rule in config.firewall.allow]
        return cls(admin.ssh_port, v4, v6, ports, list(ports), extra, mail)

    def summary(self) -> str:
        """"open: 22(admin) 80 443 25 465 587 993 51820/udp(WireGuard)"."""
        admin = f"{self.admin_port}(admin"
        everywhere = ANY_V4 in self.admin_v4 and ANY_V6 in self.admin_v6
        admin += ")" if everywhere else f" from {len(self.admin_v4) + len(self.admin_v6)} nets)"
        opened = [admin, *(str(p) for p in self.public_tcp)]
        for rule in self.extra:
            suffix = "" if rule.proto == "tcp" else f"/{rule.proto}"
            opened.append(f"{rule.port}{suffix}({rule.comment})")
        return "open: " + " ".join(opened)


def render_ruleset(config: Appliance) -> str:
    """The complete `nft -f` file. Its table comment names a digest of everything else."""
    plan = Plan.of(config)

    def body(ruleset_id: str) -> str:
        return render(
            "nftables.conf.j2",
            ruleset_id=ruleset_id,
            admin={"port": plan.admin_port, "v4": plan.admin_v4, "v6": plan.admin_v6},
            ssh={"rate": SSH_RATE, "burst": SSH_BURST, "forget": SSH_FORGET},
            ping_rate=PING_RATE,
            public_tcp=plan.public_tcp,
            mail_ports=plan.mail,
            extra=plan.extra,
            bridges=DOCKER_BRIDGES,
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


# ---------------------------------------------------------------- commands


def check_argv(path: Path) -> tuple[str, ...]:
    return ("nft", "-c", "-f", str(path))


def load_argv(path: Path) -> tuple[str, ...]:
    return ("nft", "-f", str(path))


def list_table_argv() -> tuple[str, ...]:
    return ("nft", "list", "table", *TABLE)


def daemon_reload_argv() -> tuple[str, ...]:
    return ("systemctl", "daemon-reload")


# ---------------------------------------------------------------- the step


def run(ctx: FirstbootContext) -> Outcome:
    plan = Plan.of(ctx.config)
    text = render_ruleset(ctx.config)
    wanted_id = ruleset_id_of(text)
    rendered = ctx.paths.at(RENDERED)
    changes = []
    if read_text(rendered) != text:
        _check_and_write(ctx, rendered, text)
        changes.append("ruleset rendered")
    ctx.checkpoint("rendered")
    if _live_ruleset_id(ctx) != wanted_id:
        ctx.run(load_argv(rendered), timeout=60,
                hint="the ruleset passed `nft -c`; see the kernel log (dmesg) for why it "
                "could not be loaded")
        ctx.log.info("loaded table inet arkbox (%s)", wanted_id)
        changes.append("loaded")
    ctx.checkpoint("loaded")
    if _persist(ctx):
        changes.append("enabled at boot")
    details = {"ruleset": wanted_id, "open_tcp": [plan.admin_port, *plan.public_tcp]}
    if changes:
        ctx.log.info("%s (%s)", plan.summary(), ", ".join(changes))
        return Outcome.changed_(plan.summary(), details)
    return Outcome.unchanged(plan.summary(), details)


def verify(ctx: FirstbootContext) -> str | None:
    text = render_ruleset(ctx.config)
    if read_text(ctx.paths.at(RENDERED)) != text:
        return f"{RENDERED} differs from the config's ruleset"
    if _live_ruleset_id(ctx) != ruleset_id_of(text):
        return "the kernel does not hold the config's ruleset (table inet arkbox)"
    if read_text(ctx.paths.at(BOOT_CONFIG)) != BOOT_CONFIG_CONTENT:
        return f"{BOOT_CONFIG} does not load arkbox's ruleset at boot"
    if not ctx.paths.at(ENABLED_LINK).is_symlink():
        return f"{UNIT} is not enabled"
    return None


def _check_and_write(ctx: FirstbootContext, rendered: Path, text: str) -> None:
    """Write the ruleset only once `nft -c` has accepted it (nothing is loaded by -c)."""
    ensure_dir(rendered.parent, 0o700)
    candidate = rendered.with_name(rendered.name + ".new")
    write_if_changed(candidate, text, 0o600)
    ctx.run(check_argv(candidate), timeout=60,
            hint="the rendered ruleset is invalid: a defect of arkbox; report it with "
            f"{candidate}")
    candidate.replace(rendered)


def _live_ruleset_id(ctx: FirstbootContext) -> str | None:
    listed = ctx.run(list_table_argv(), check=False, timeout=60)
    if listed.returncode != 0:
        return None  # no such table yet
    return ruleset_id_of(listed.stdout)


def _persist(ctx: FirstbootContext) -> bool:
    """Make nftables.service load the ruleset at every boot, before the network is up."""
    paths = ctx.paths
    if not paths.at(UNIT_FILE).is_file():
        raise StepFailed(f"{UNIT} is not installed ({UNIT_FILE} is missing)",
                         hint="the image lacks the nftables package: rebuild it")
    changed = write_if_changed(paths.at(BOOT_CONFIG), BOOT_CONFIG_CONTENT, 0o644)
    if write_if_changed(paths.at(DROP_IN), DROP_IN_CONTENT, 0o644):
        changed = True
        if paths.at("/run/systemd/system").is_dir():
            ctx.run(daemon_reload_argv(), timeout=120)
    # What `systemctl enable` does, as a file: no running systemd needed.
    changed |= atomic_symlink(paths.at(ENABLED_LINK), UNIT_FILE)
    return changed
