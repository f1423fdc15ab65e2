#!/usr/bin/env python3
"""An update that changes one service image, next to a plain restart of that service.

Boots the built appliance and a backup server in the container rig (as
tests/e2e/test_update.py does), then, while every route of the config is asked over
HTTPS every 0.1 s from this machine (TLS with the route's name, through the box's
nginx):

  baseline  `docker restart` of the wiki's container inside the box, until the engine
            calls it healthy again: the least a changed image can cost that service;
  update    `arkbox-installer update` with a bundle whose wiki image was rebuilt (FROM
            the built one, a label more): the backup first, the images loaded, apply,
            every health check; timed to the update's end (all healthy), with the
            backup's part shown.

Prints, for each route, the longest time without an answer (a 5xx, a refused or
timed-out connection, or a request left waiting count alike; less the 0.1 s between two
asks) during each, and the ratio of the update's to the baseline's. Goals (issue 15):
unchanged services 0 s (met below the probe's 0.1 s resolution); the changed one <= its
restart + health check + 2 s.

Usage: bench/update.py [--json FILE]   (uses the test suite's build: tests/built.py)
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from update_bundles import bundle_with_wiki, docker

from builder.rig.parts import (
    ApplianceContainer,
    BackupServerContainer,
    Rig,
    image_from_rootfs_tar,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]
INSTALLER = "/usr/local/sbin/arkbox-installer"
CONFIG = ROOT / "config" / "default.yaml"
PROBE_EVERY_S = 0.1
PROBE_TIMEOUT_S = 2.0
CHANGED_GOAL_MARGIN_S = 2.0


@dataclass
class Prober:
    """Asks one route over HTTPS again and again; notes when it answered and when not."""

    address: str
    hostname: str
    samples: list[tuple[float, bool]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def ask(self) -> bool:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the rig's certificate; only the answer counts
        try:
            with socket.create_connection((self.address, 443), PROBE_TIMEOUT_S) as raw, \
                    context.wrap_socket(raw, server_hostname=self.hostname) as tls:
                tls.sendall(f"GET / HTTP/1.1\r\nHost: {self.hostname}\r\n"
                            "Connection: close\r\n\r\n".encode())
                status = tls.recv(64).split(b" ")
            return len(status) > 1 and status[1][:1] in (b"1", b"2", b"3", b"4")
        except OSError:
            return False

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            ok = self.ask()
            # When the answer came: a request that hangs while the container is away
            # (nginx keeps trying its address) is unavailability as much as a 502.
            self.samples.append((time.monotonic(), ok))
            self.stop.wait(max(0.0, PROBE_EVERY_S - (time.monotonic() - started)))

    def longest_outage(self, since: float, until: float) -> float:
        """The longest time within [since, until] without an answer, less the time
        between two asks (a route that always answers scores about 0)."""
        answered = [at for at, ok in self.samples if ok and since <= at <= until]
        marks = [since, *answered, until]
        gap = max(later - earlier for earlier, later in itertools.pairwise(marks))
        return max(0.0, gap - PROBE_EVERY_S)


@contextmanager
def probing(address: str, hostnames: list[str]) -> Iterator[list[Prober]]:
    probers = [Prober(address, name) for name in hostnames]
    threads = [threading.Thread(target=p.run, daemon=True) for p in probers]
    for thread in threads:
        thread.start()
    try:
        yield probers
    finally:
        for prober in probers:
            prober.stop.set()
        for thread in threads:
            thread.join(timeout=10)


def routes(config: dict[str, Any]) -> dict[str, str]:
    """service name -> route host name, for the services the config routes."""
    return {name: spec["route"]["hostname"] for name, spec in config["services"].items()
            if spec.get("route")}


def check(app: ApplianceContainer, script: str) -> str:
    code, out = app.exec("sh", "-c", script)
    if code != 0:
        raise SystemExit(f"{script!r} exited {code}:\n{out}")
    return out


def restart_until_healthy(app: ApplianceContainer, container: str) -> float:
    started = time.monotonic()
    check(app, f"docker restart {container}")
    wait_until(f"{container} healthy after its restart", lambda: None if check(
        app, f"docker inspect --format '{{{{.State.Health.Status}}}}' {container}"
    ).strip() == "healthy" else "not healthy yet", 300, interval=0.2)
    return time.monotonic() - started


def run_update(app: ApplianceContainer, bundle_in_box: str) -> tuple[float, float | None, str]:
    """The update's time, when its backup had finished (from the start), and its output."""
    started = time.monotonic()
    backup_done: list[float] = []
    lines: list[str] = []

    def seen(line: str) -> None:
        lines.append(line)
        if line.startswith("backup before the update") and not backup_done:
            backup_done.append(time.monotonic() - started)

    code = app.exec_streaming(["sh", "-c", f"{INSTALLER} update {bundle_in_box} 2>&1"],
                          seen)
    took = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"the update failed (exit {code}):\n" + "\n".join(lines))
    return took, (backup_done or [None])[0], "\n".join(lines)


def bench(work: Path) -> dict[str, Any]:
    from built import built_appliance, built_backup_server

    config = yaml.safe_load(CONFIG.read_text())
    hosts = routes(config)
    built = built_appliance()
    rig = Rig(name=f"arkbox-bench-update-{uuid.uuid4().hex[:6]}",
              ipv4_subnet="172.30.196.0/24", ipv6_subnet="fd42:a7b0:c4::/64")
    with rig.running():
        image = image_from_rootfs_tar(rig.client, built.rootfs_tar, "arkbox/appliance")
        server = image_from_rootfs_tar(rig.client, built_backup_server(),
                                       "arkbox/backup-server-role")
        rig.add(BackupServerContainer(rig, "backup", server, aliases=("backup.arkbox.test",)))
        app = ApplianceContainer(rig, "appliance", image, aliases=["arkbox.test"],
                            seed_config=CONFIG, boot_timeout=420)
        rig.add(app)
        status = app.wait_first_boot(timeout=900)
        if status["result"] != "ok":
            raise SystemExit(f"first boot failed: {status['failures']}")
        bundle = bundle_with_wiki(built.out / f"{config['appliance']['name']}-update.tar",
                                  work, "bench", {})
        docker("cp", str(bundle), f"{app.name}:/root/update.tar")
        wiki = next(line.split()[0] for line in check(
            app, "docker ps --format '{{.Names}}'").splitlines() if line.endswith("wiki"))
        with probing(app.ip(), list(hosts.values())) as probers:
            time.sleep(2)  # every route answers before anything starts
            base_from = time.monotonic()
            baseline_s = restart_until_healthy(app, wiki)
            base_to = time.monotonic() + 1
            time.sleep(3)
            update_from = time.monotonic()
            update_s, backup_s, out = run_update(app, "/root/update.tar")
            update_to = time.monotonic() + 1
            time.sleep(1)
    outages = {}
    for name, hostname in hosts.items():
        prober = next(p for p in probers if p.hostname == hostname)
        outages[name] = {
            "baseline_s": round(prober.longest_outage(base_from, base_to), 2),
            "update_s": round(prober.longest_outage(update_from, update_to), 2),
            "asks": sum(1 for at, _ in prober.samples if update_from <= at <= update_to)}
    return {"changed": "wiki", "baseline_restart_healthy_s": round(baseline_s, 2),
            "update_s": round(update_s, 2),
            "update_backup_s": round(backup_s, 2) if backup_s is not None else None,
            "outages": outages, "update_last_line": out.strip().splitlines()[-1]}


def report(r: dict[str, Any]) -> str:
    base = r["baseline_restart_healthy_s"]
    lines = ["arkbox update of one service image (wiki) in the container rig", "",
             f"  baseline: docker restart wiki -> healthy          {base:7.2f} s",
             f"  update: start -> all healthy                       {r['update_s']:7.2f} s"
             f"  {r['update_s'] / base:5.2f}x  (backup first: {r['update_backup_s']} s)",
             "", "  longest time a route did not answer   during restart   during update"]
    for name, o in r["outages"].items():
        goal = (base + CHANGED_GOAL_MARGIN_S) if name == r["changed"] else PROBE_EVERY_S
        verdict = "meets" if o["update_s"] <= goal else "MISSES"
        lines.append(f"  {name:<36} {o['baseline_s']:10.2f} s {o['update_s']:12.2f} s"
                     f"   goal <= {goal:.1f} s: {verdict} ({o['asks']} asks)")
    lines.append(f"  update said: {r['update_last_line']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="arkbox-bench-update-") as work:
        result = bench(Path(work))
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
