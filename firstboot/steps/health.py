"""Step `health`: wait, bounded, until every container is healthy and every route answers.

Containers: the config's services, the proxy, and whatever else arkbox runs on
this box (mail). Routes: an HTTPS request through the proxy's published port with
the route's host name as SNI and Host, the certificate pinned to the one in
/srv/arkbox/tls/live. On time-out the step fails with one reason per service.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from firstboot.containers.engine import owned_containers
from firstboot.containers.naming import Naming
from firstboot.containers.probe import (
    container_problem,
    is_self_signed,
    leaf_fingerprint,
    published_port,
    route_problem,
)
from firstboot.core import wait
from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.step import Outcome, StepFailed
from firstboot.core.wait import NotYet

NAME = "health"
TIMEOUT_S = 300.0
# Polled from 0.25 s, slowing to 2 s: the last container often turns healthy within a
# second of the step's start, and a fixed 1 s poll added up to a second to every first boot.
POLL_S, POLL_MAX_S = 0.25, 2.0

log = logging.getLogger("arkbox.firstboot.health")


@dataclass(frozen=True)
class HealthReport:
    containers: dict[str, str | None]  # service -> problem (None: healthy)
    routes: dict[str, str | None]  # host+path -> problem
    certificate: str  # "self-signed fallback" | "CA-issued"

    @property
    def healthy(self) -> bool:
        return not any(self.containers.values()) and not any(self.routes.values())

    def summary(self) -> str:
        ok = sum(1 for p in self.containers.values() if p is None)
        text = f"{ok}/{len(self.containers)} services healthy"
        if self.routes:
            answering = sum(1 for p in self.routes.values() if p is None)
            text += f", {answering}/{len(self.routes)} routes answer ({self.certificate})"
        return text

    def problems(self) -> list[str]:
        return [f"{name}: {problem}" for name, problem in
                (*sorted(self.containers.items()), *sorted(self.routes.items())) if problem]


def applies(config: Appliance) -> bool:
    return True


def run(ctx: FirstbootContext) -> Outcome:
    report = wait_until_healthy(ctx)
    return Outcome.unchanged(report.summary(), {
        "services": dict.fromkeys(report.containers, "healthy"),
        "routes": dict.fromkeys(report.routes, "answers"),
        "certificate": report.certificate,
    })


def verify(ctx: FirstbootContext) -> str | None:
    report = check_once(ctx)
    return None if report.healthy else "; ".join(report.problems())


def wait_until_healthy(ctx: FirstbootContext, timeout_s: float = TIMEOUT_S) -> HealthReport:
    started = time.monotonic()
    shown: list[str] = []  # the last summary logged: log only changes

    def healthy() -> HealthReport | NotYet:
        report = check_once(ctx)
        if report.healthy:
            return report
        if shown[-1:] != [report.summary()]:
            shown[:] = [report.summary()]
            log.info("waiting: %s", report.summary())
        return NotYet(f"{report.summary()}:\n  " + "\n  ".join(report.problems()))

    try:
        report = wait.until("every container to be healthy and every route to answer",
                            healthy, timeout_s, interval_s=POLL_S, max_interval_s=POLL_MAX_S)
    except wait.WaitTimedOut as err:
        raise StepFailed(
            err.message,
            hint="docker logs <container> shows why a service does not come up; "
            "first boot retries, and `arkbox-installer status` shows the state",
        ) from err
    log.info("%s after %.1f s", report.summary(), time.monotonic() - started)
    return report


def check_once(ctx: FirstbootContext) -> HealthReport:
    naming = Naming.for_root(ctx.paths.root)
    client = ctx.docker
    expected = {name: naming.container(name) for name in ctx.config.services}
    expected["proxy"] = naming.proxy_container
    # Containers other steps run (mail, ...) count too; services that left the config
    # were removed by the services step and are no longer listed.
    for container in owned_containers(client, naming, role=None):
        if container.service and container.service not in expected:
            expected[container.service] = container.name
    containers = {name: container_problem(client, cname) for name, cname in expected.items()}
    routes = _route_problems(ctx, naming, proxy_ok=containers["proxy"] is None)
    fullchain = _fullchain(ctx)
    kind = "self-signed fallback" if fullchain and is_self_signed(fullchain) else "CA-issued"
    return HealthReport(containers, routes, kind)


def _route_problems(
    ctx: FirstbootContext, naming: Naming, proxy_ok: bool
) -> dict[str, str | None]:
    routed = {name: s.route for name, s in ctx.config.services.items() if s.route}
    if not routed:
        return {}
    names = {f"{r.hostname}{r.path}": r for r in routed.values()}
    if not proxy_ok:
        return dict.fromkeys(names, "waiting for the proxy")
    port = published_port(ctx.docker, naming.proxy_container, 443)
    fullchain = _fullchain(ctx)
    if port is None or fullchain is None:
        why = "the proxy publishes no port 443" if port is None else "no certificate"
        return dict.fromkeys(names, why)
    pin = leaf_fingerprint(fullchain)
    return {name: route_problem(port, r.hostname, r.path, pin) for name, r in names.items()}


def _fullchain(ctx: FirstbootContext) -> bytes | None:
    try:
        return (ctx.paths.data / "tls" / "live" / "fullchain.pem").read_bytes()
    except FileNotFoundError:
        return None
