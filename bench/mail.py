#!/usr/bin/env python3
"""What spam filtering costs: mail accepted on port 25 with rspamd on vs off, one run.

Boots the built appliance in the container rig with nsd serving its zone and sink.test's
(as tests/e2e/test_mail_server.py does). This process is the foreign MTA: it delivers
DKIM-signed messages from sink.test (SPF, DKIM and DMARC all pass, as for real mail) on
port 25. The box runs with `mail.spam.enabled: false`, then with it on, three times over
(the config changed and applied at each switch, which recreates the mail container); each
time a few warm-up messages, then

  latency     messages one after another on one connection: the time from MAIL FROM to
              the 250 after the data (median, p95);
  throughput  messages over 4 connections at once: messages accepted per second (all the
              rounds' messages over all their time).

Postfix allows one client 100 messages a minute (smtpd_client_message_rate_limit): each
mode stays under it, and the container recreated between modes starts a new count.
Goal (issue 18): filtering costs at most 30 % of the throughput (ratio on/off >= 0.70).

Usage: bench/mail.py [--json FILE]   (uses the test suite's build: tests/built.py)
"""

from __future__ import annotations

import argparse
import json
import smtplib
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from rig_fixtures import DEFAULT_CONFIG, admin_key, check, config_with, dump, installer
from test_mail_server import (
    FRIEND,
    SENDER_HOST,
    SINK_KEY,
    DnsServer,
    MailApplianceContainer,
    world_message,
    zones_from,
)

from builder.rig.dns import NSD_CONF
from builder.rig.parts import Rig, files_tar, image_from_rootfs_tar, rig_image, wait_until

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = "/etc/arkbox/appliance.yaml"
WARM_UP = 5
SEQUENTIAL = 30
CONNECTIONS, PER_CONNECTION = 4, 14
GOAL_RATIO = 0.70
# Modes alternate, ROUNDS times each (the container is recreated at each switch, which also
# gives Postfix's per-client counts a fresh start); a switch is followed by a pause, so a
# just-started rspamd has loaded its maps before it is timed.
ROUNDS = 3
SETTLE_S = 10


def apply_spam(app: MailApplianceContainer, enabled: bool) -> float:
    """Turn filtering on or off in the box's config, apply, wait for a healthy mail
    container. The seconds that took."""
    config = yaml.safe_load(check(app, f"cat {CONFIG_PATH}"))
    config["mail"].setdefault("spam", {})["enabled"] = enabled
    assert app.container is not None
    app.container.put_archive("/etc/arkbox", files_tar(
        {"appliance.yaml": (yaml.safe_dump(config, sort_keys=False).encode(), 0o600)}))
    started = time.monotonic()
    code, out = installer(app, "apply")
    if code != 0:
        raise SystemExit(f"apply with mail.spam.enabled={enabled} failed:\n{out}")
    wait_until("the mail container healthy", lambda: None if check(
        app, "docker inspect -f '{{.State.Health.Status}}' arkbox-mail").strip() == "healthy"
        else "not healthy yet", 300, interval=1)
    return time.monotonic() - started


def deliver(address: str, count: int, tag: str) -> list[float]:
    """`count` messages on one connection; each one's seconds from MAIL FROM to 250."""
    took = []
    with smtplib.SMTP(address, 25, timeout=120) as smtp:
        smtp.ehlo(SENDER_HOST)
        for _ in range(count):
            raw = world_message(FRIEND, f"bench {tag} {uuid.uuid4().hex[:8]}", key=SINK_KEY)
            started = time.perf_counter()
            smtp.sendmail(FRIEND, ["admin@arkbox.test"], raw)
            took.append(time.perf_counter() - started)
    return took


def measure(address: str, mode: str) -> dict[str, Any]:
    deliver(address, WARM_UP, f"{mode} warm-up")
    latencies = deliver(address, SEQUENTIAL, f"{mode} sequential")
    failures: list[BaseException] = []

    def one_connection() -> None:
        try:
            deliver(address, PER_CONNECTION, f"{mode} parallel")
        except (OSError, smtplib.SMTPException) as e:
            failures.append(e)

    threads = [threading.Thread(target=one_connection) for _ in range(CONNECTIONS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    wall = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{mode}: a delivery failed: {failures[0]!r}")
    ordered = sorted(latencies)
    return {"latency_median_s": round(statistics.median(ordered), 4),
            "latency_p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 4),
            "messages_per_s": round(CONNECTIONS * PER_CONNECTION / wall, 2),
            "parallel_wall_s": round(wall, 2)}


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A mode's rounds as one: all messages over all the time, the middle latencies."""
    messages = CONNECTIONS * PER_CONNECTION * len(runs)
    return {"latency_median_s": round(statistics.median(r["latency_median_s"] for r in runs), 4),
            "latency_p95_s": round(max(r["latency_p95_s"] for r in runs), 4),
            "messages_per_s": round(messages / sum(r["parallel_wall_s"] for r in runs), 2),
            "rounds": runs}


def bench() -> dict[str, Any]:
    from built import built_appliance

    built = built_appliance()
    rig = Rig(name=f"arkbox-bench-mail-{uuid.uuid4().hex[:6]}",
              ipv4_subnet="172.30.197.0/24", ipv6_subnet="fd42:a7b0:c5::/64")
    with rig.running():
        image = image_from_rootfs_tar(rig.client, built.rootfs_tar, "arkbox/appliance")
        dns = DnsServer(rig, "dns", rig_image(ROOT, Path("/var/cache/arkbox"), "rig-internet"),
                      command=["dns"], files={"/etc/nsd/nsd.conf": (NSD_CONF.encode(), 0o644)})
        rig.add(dns)
        app = MailApplianceContainer(rig, "appliance", image, aliases=["arkbox-mail-box"],
                                config=dump(config_with(admin_key())),
                                seed_config=DEFAULT_CONFIG, boot_timeout=420,
                                dns=[dns.ip(4)])
        rig.add(app)
        status = app.wait_first_boot(timeout=900)
        if status["result"] != "ok":
            raise SystemExit(f"first boot failed: {status['failures']}")
        code, out = installer(app, "dns --json --ipv6 none")
        if code != 0:
            raise SystemExit(f"arkbox-installer dns failed:\n{out}")
        records = json.loads(out[out.index("{"):])["records"]
        dns.serve(zones_from(records, "192.0.2.25", app.ip(4)))
        rounds: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for round_ in range(ROUNDS):
            for mode, enabled in (("off", False), ("on", True)):
                apply_s = apply_spam(app, enabled)
                time.sleep(SETTLE_S)
                rounds[mode].append({**measure(app.ip(4), f"{mode}{round_}"),
                                     "apply_s": round(apply_s, 1)})
        result: dict[str, Any] = {mode: combined(runs) for mode, runs in rounds.items()}
        result["spam"] = json.loads(installer(app, "status --json")[1])["spam"]["summary"]
    result["throughput_ratio"] = round(result["on"]["messages_per_s"]
                                       / result["off"]["messages_per_s"], 3)
    result["added_latency_median_s"] = round(result["on"]["latency_median_s"]
                                             - result["off"]["latency_median_s"], 4)
    return result


def report(r: dict[str, Any]) -> str:
    verdict = "meets" if r["throughput_ratio"] >= GOAL_RATIO else "MISSES"
    off, on = r["off"], r["on"]
    lines = ["arkbox mail: port 25 from a foreign MTA, spam filtering off vs on (same box)", "",
             "                      off          on",
             f"  messages/s      {off['messages_per_s']:8.2f}    {on['messages_per_s']:8.2f}"
             f"   ({CONNECTIONS} connections x {PER_CONNECTION} messages)",
             f"  latency median  {r['off']['latency_median_s'] * 1000:7.1f} ms"
             f" {r['on']['latency_median_s'] * 1000:7.1f} ms   ({SEQUENTIAL} in a row)",
             f"  latency p95     {r['off']['latency_p95_s'] * 1000:7.1f} ms"
             f" {r['on']['latency_p95_s'] * 1000:7.1f} ms", "",
             f"  throughput on/off: {r['throughput_ratio']:.3f}  goal >= {GOAL_RATIO:.2f}: "
             f"{verdict}",
             f"  added latency (median): {r['added_latency_median_s'] * 1000:.1f} ms",
             f"  spam filter afterwards: {r['spam']}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = bench()
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
