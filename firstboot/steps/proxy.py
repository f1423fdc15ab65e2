"""Step `proxy`: nginx in front of every routed service, the only container with ports.

What it runs, renders and reloads: firstboot/containers/proxy.py; the sites it serves for
the mail server (MTA-STS, mail client autoconfiguration): firstboot/mail/proxy_sites.py.
"""

from __future__ import annotations

from firstboot.containers.proxy import PublishedPorts, converge_proxy, proxy_problem
from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.step import Outcome
from firstboot.mail.proxy_sites import served_mail_sites

NAME = "proxy"


def applies(config: Appliance) -> bool:
    # Always: even with no routes, port 80 answers ACME challenges and the status page
    # comes behind it.
    return True


def run(ctx: FirstbootContext) -> Outcome:
    report = converge_proxy(ctx, served_mail_sites(ctx))
    details = {"hostnames": report.hostnames, "container": report.container,
               "reloaded": report.reloaded}
    if report.changed:
        return Outcome.changed_(report.summary(), details)
    return Outcome.unchanged(report.summary(), details)


def verify(ctx: FirstbootContext, ports: PublishedPorts | None = None) -> str | None:
    """None when the proxy runs its current spec, config and certificate on all routes."""
    return proxy_problem(ctx, served_mail_sites(ctx), ports)
