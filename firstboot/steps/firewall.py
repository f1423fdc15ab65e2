"""Step `firewall`: arkbox's nftables table, default drop, replaced atomically.

The ruleset (firstboot/firewall_rules.py) is rendered from templates/nftables.conf.j2 into
/etc/arkbox/rendered/nftables.conf, checked with `nft -c -f`, then loaded with
`nft -f` (one transaction that deletes and re-creates only `table inet arkbox`).
The table's comment carries a digest of the rendered rules, so a re-run can
tell cheaply whether the kernel holds exactly this ruleset.

At boot, nftables.service loads it again from /etc/nftables.conf, which only
includes the rendered file: Debian's stock file (and the unit's ExecStop)
would `flush ruleset`, wiping the container engine's rules with ours.
"""

from __future__ import annotations

from pathlib import Path

from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.files import atomic_symlink, ensure_dir, read_text, write_if_changed
from firstboot.core.step import Outcome, StepFailed
from firstboot.firewall_rules import (
    BOOT_CONFIG,
    BOOT_CONFIG_CONTENT,
    DROP_IN,
    DROP_IN_CONTENT,
    ENABLED_LINK,
    RENDERED,
    TABLE,
    UNIT,
    UNIT_FILE,
    Plan,
    render_ruleset,
    ruleset_id_of,
)

NAME = "firewall"


def applies(config: Appliance) -> bool:
    return True


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
