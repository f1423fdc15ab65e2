"""Step `status_page`: the admin's status page (docs/status-page.md). After `proxy`, which
routes the appliance's host name to the page's socket; its verify() asks the server for
its login form on that socket.

The page's server runs as arkbox-status-page.service; this step writes the password's
hash and the unit, and (re)starts the server when either changed. With the config's
`status_page` section gone it stops and removes the service.
"""

from __future__ import annotations

from pathlib import Path

from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.step import Outcome
from firstboot.core.wait import NotYet, until
from firstboot.statuspage import install

# Under software emulation (TCG) beside the rest of first boot, the server's start took
# over 60 s once in CI; a real box starts it in about a second.
START_TIMEOUT_S = 300

NAME = "status_page"


def applies(config: Appliance) -> bool:
    return True  # also when off: a page turned off is taken down


def run(ctx: FirstbootContext) -> Outcome:
    if ctx.config.status_page is None:
        return _remove(ctx)
    changed = install.write_password_hash(ctx)
    changed |= install.write_unit(ctx)
    if ctx.paths.is_live:
        if changed:
            ctx.run(("systemctl", "daemon-reload"), timeout=60)
            ctx.run(("systemctl", "enable", install.SERVICE), timeout=60)
            ctx.run(("systemctl", "restart", install.SERVICE), timeout=60)
        elif not _active(ctx):
            ctx.run(("systemctl", "enable", "--now", install.SERVICE), timeout=60)
            changed = True
        socket_path = install.socket_path(ctx.paths)
        until(f"the status page's server on {socket_path}",
              lambda: _answers(socket_path), START_TIMEOUT_S,
              hint=f"journalctl -u {install.SERVICE}")
    where = f"https://{ctx.config.appliance.hostname}/"
    details = {"url": where, "service": install.SERVICE}
    summary = f"{where} (admin login)" + ("; server restarted" if changed else "")
    return (Outcome.changed_ if changed else Outcome.unchanged)(summary, details)


def verify(ctx: FirstbootContext) -> str | None:
    if ctx.config.status_page is None:
        return f"{install.SERVICE} is still installed" if install.unit_path(
            ctx.paths).exists() else None
    if not install.password_file(ctx.paths).is_file():
        return f"{install.password_file(ctx.paths)} is missing"
    if not install.unit_path(ctx.paths).is_file():
        return f"{install.SERVICE} is missing"
    if ctx.paths.is_live:
        if not _active(ctx):
            return f"{install.SERVICE} is not running: journalctl -u {install.SERVICE}"
        return install.probe(install.socket_path(ctx.paths))
    return None


def _answers(socket_path: Path) -> bool | NotYet:
    problem = install.probe(socket_path)
    return True if problem is None else NotYet(problem)


def _active(ctx: FirstbootContext) -> bool:
    return ctx.run(("systemctl", "is-active", "--quiet", install.SERVICE),
                   check=False, timeout=30).returncode == 0


def _remove(ctx: FirstbootContext) -> Outcome:
    unit = install.unit_path(ctx.paths)
    if not unit.exists():
        return Outcome.unchanged("off (no status_page in the config)")
    if ctx.paths.is_live:
        ctx.run(("systemctl", "disable", "--now", install.SERVICE), check=False, timeout=60)
    unit.unlink()
    install.password_file(ctx.paths).unlink(missing_ok=True)
    if ctx.paths.is_live:
        ctx.run(("systemctl", "daemon-reload"), timeout=60)
    return Outcome.changed_("turned off: the server is stopped and its unit removed")
