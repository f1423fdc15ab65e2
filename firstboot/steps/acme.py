"""Step `acme`: the renewal timer, and the first request for a real certificate started
in the background, so first boot never waits on DNS or the CA.

The request itself is `arkbox-installer renew --scheduled` (firstboot/certs/renew.py),
run by arkbox-tls-renew.service: started here with --no-block, it waits for this
first-boot (or apply) run to finish, then asks the CA; the timer retries a failure
with backoff and renews when a third of the lifetime is left.
"""

from __future__ import annotations

from firstboot.certs import certificate as cert
from firstboot.certs import timer
from firstboot.certs.renew import renewal_due
from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.step import Outcome
from firstboot.systemd_units import install_timer, installed

NAME = "acme"


def applies(config: Appliance) -> bool:
    return True


def run(ctx: FirstbootContext) -> Outcome:
    changed = install_timer(ctx, timer.units())
    current = cert.read_current(cert.live_files(ctx))
    due = renewal_due(current, cert.wanted_names(ctx.config), ctx.now())
    details = {"directory": str(ctx.config.tls.acme_directory), "timer": timer.TIMER}
    if due is None:
        assert current.certificate is not None
        summary = (f"certificate from the CA valid until "
                   f"{current.certificate.not_valid_after_utc:%Y-%m-%d}; {timer.TIMER} renews it")
        return (Outcome.changed_ if changed else Outcome.unchanged)(summary, details)
    if ctx.paths.is_live:
        ctx.run(("systemctl", "start", "--no-block", timer.SERVICE))
    ctx.log.info("requesting a certificate in the background (%s), because %s",
                 timer.SERVICE, due)
    summary = f"certificate requested in the background from {ctx.config.tls.acme_directory}: {due}"
    return (Outcome.changed_ if changed else Outcome.unchanged)(summary, details)


def verify(ctx: FirstbootContext) -> str | None:
    if not installed(ctx, timer.units()):
        return f"{timer.TIMER} is missing"
    return None
