"""Benchmark the nightly backup with no change against a raw `borg create` with no change,
each paused service's pause at night, and its pause when ~1 GiB is new, in one process.

Boots the built backup-server role in a rig (tests/built.py builds it once, or reuses it with
ARKBOX_TEST_REUSE_BUILD=1), generates a data set over the volumes of an appliance with two
paused services (calendar, wiki) and a dumped database (stand-in containers named as the
installer names them: `sleep` for the services, a `printf` dump), makes a first backup, then
times, `--runs` times each (median):

  arkbox     run_backup(prune=False) with nothing changed: one archive with the dump, the
             two paused services (each paused while borg reads it) and the rest
  raw        one `borg create` of the whole tree with nothing changed (the floor)
  dump       the dump command alone (`docker exec`), which arkbox adds by design
  prune      the nightly prune after it (shown apart: the raw floor has none)
  nightly    run_backup(prune=False) after a small change (--nightly-mib new in each paused
             service's volume): below the pre-read's threshold, so read paused
  moderate   run_backup(prune=False) after --moderate-mib new in each: just above it
  large      run_backup(prune=False) after --large-mib new in each paused service's volume
             (as in a first backup: borg has never read it), with the pre-read (the live
             read first, then the delete of its throwaway) and, with --compare, without it

Targets (issue 19): arkbox with no change ≤ 1.2x raw + dump time; each nightly pause (no
change, or a small one) ≤ 0.2 s; each pause with ~1 GiB new ≤ 2 s.

Run as root on a machine prepared by scripts/setup:
    .venv/bin/python bench/backup.py [--mib 256] [--files 4000] [--runs 3] [--large-mib 1024]
                                     [--compare]
"""

from __future__ import annotations

import argparse
import base64
import functools
import os
import shutil
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import docker  # noqa: E402
from backup_rig import BENCH_SERVICES, box_with_data, timed  # noqa: E402

from firstboot.backup import borg, preread  # noqa: E402
from firstboot.backup.backup import BackupReport, prune_archives, run_backup  # noqa: E402
from firstboot.backup.client import Borg  # noqa: E402
from firstboot.containers.naming import Naming  # noqa: E402
from firstboot.core.context import FirstbootContext  # noqa: E402

PAUSED = ("calendar", "wiki")
DUMP = ["sh", "-c", "printf 'CREATE TABLE t (v int);\\nINSERT INTO t VALUES (42);\\n'"]


def bench_config(directory: Path, ip: str) -> Path:
    from integration.test_backup_server import write_config  # the integration test's box

    write_config(directory, ip)  # calendar (pause) and db (dump)
    text = (directory / "appliance.yaml").read_text()
    text = text.replace("  calendar:\n", "  wiki:\n    image: \"registry.example/dokuwiki:1\"\n"
                        "    volumes: {data: /var/lib/dokuwiki/data}\n    backup: "
                        "{consistency: pause}\n  calendar:\n", 1)
    (directory / "appliance.yaml").write_text(text)
    return directory / "appliance.yaml"


def base_image(client: docker.DockerClient) -> str:
    for image in client.images.list(name="arkbox/base"):
        if image.tags:
            return str(image.tags[0])
    raise SystemExit("no arkbox/base image: run `arkbox build` once (service images stage)")


@contextmanager
def standins(ctx: FirstbootContext) -> Iterator[None]:
    client = ctx.docker
    naming = Naming.for_root(ctx.paths.root)
    made = [client.containers.run(base_image(client), ["sleep", "infinity"], detach=True,
                                  name=naming.container(s), labels={"arkbox.bench": "backup"})
            for s in (*PAUSED, "db")]
    try:
        yield
    finally:
        for container in made:
            container.remove(force=True)


@dataclass
class Measure:
    arkbox: float
    raw: float
    dump: float
    prune: float
    pauses: dict[str, float]
    pause_max: float


def measure(source: FirstbootContext, runs: int, tag: str) -> Measure:
    data = source.paths.data
    runner = Borg(source)
    reports: list[BackupReport] = []
    arkbox, raw, dump, prune = [], [], [], []
    for index in range(runs):
        report, seconds = timed(lambda: run_backup(source, prune=False))
        reports.append(report)
        arkbox.append(seconds)
        argv = borg.create_argv(f"raw-{tag}-{index}", ["."], compression="lz4")
        raw.append(timed(functools.partial(runner.run, argv, cwd=data, what="raw create"))[1])
        dump_argv = borg.docker_exec_argv(Naming.for_root(source.paths.root).container("db"),
                                          DUMP)
        dump.append(timed(functools.partial(source.run, dump_argv))[1])
        prune.append(timed(functools.partial(prune_archives, source))[1])
    pauses = {s: statistics.median(r.pauses[s] for r in reports) for s in PAUSED}
    return Measure(statistics.median(arkbox), statistics.median(raw), statistics.median(dump),
                   statistics.median(prune), pauses,
                   max(max(r.pauses.values()) for r in reports))


def add_new_data(data: Path, mib: int, tag: str) -> None:
    """`mib` MiB of data no backup has seen in each paused service's volume, in files of
    256 KiB (half random bytes, half their base64: new to borg's chunks and files cache)."""
    per_file = 256 << 10
    for service, volume in BENCH_SERVICES:
        folder = data / "volumes" / service / volume / f"new-{tag}"
        folder.mkdir(parents=True)
        for index in range(max(1, (mib << 20) // per_file)):
            raw = os.urandom(per_file if index % 2 else per_file * 3 // 4)
            content = raw if index % 2 else base64.b64encode(raw)
            (folder / f"n{index}.bin").write_bytes(content)


@dataclass
class Large:
    seconds: float
    pauses: dict[str, float]
    preread: float
    cleanup: float
    files: int  # in each paused volume: borg handles each while paused, changed or not


def measure_large(source: FirstbootContext, mib: int, tag: str, min_bytes: int) -> Large:
    """One backup after `mib` MiB new per paused volume; that data is removed after it, so
    the next measure's volumes hold as many files as this one's."""
    data = source.paths.data
    add_new_data(data, mib, tag)
    report, seconds = timed(lambda: run_backup(source, prune=False,
                                               preread_min_bytes=min_bytes))
    service, volume = BENCH_SERVICES[0]
    files = sum(len(f) for _, _, f in os.walk(data / "volumes" / service / volume))
    for service, volume in BENCH_SERVICES:
        shutil.rmtree(data / "volumes" / service / volume / f"new-{tag}")
    return Large(seconds, dict(report.pauses),
                 report.preread.seconds if report.preread else 0.0, report.cleanup_seconds,
                 files)


def measure_nightly(source: FirstbootContext, runs: int, mib: float) -> tuple[list[float], bool]:
    """Each run's worst pause after `mib` MiB new per paused service; whether any pre-read."""
    worst, preread_ran = [], False
    for index in range(runs):
        for service, volume in BENCH_SERVICES:
            folder = source.paths.data / "volumes" / service / volume / "nightly"
            folder.mkdir(exist_ok=True)
            (folder / f"n{index}.bin").write_bytes(os.urandom(int(mib * (1 << 20))))
        report = run_backup(source, prune=False)
        worst.append(max(report.pauses[s] for s in PAUSED))
        preread_ran = preread_ran or report.preread is not None
    return worst, preread_ran


def load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def show(label: str, m: Measure) -> None:
    arkbox, raw, dump, pauses = m.arkbox, m.raw, m.dump, m.pauses
    ratio = arkbox / raw
    budget = 1.2 * raw + dump
    print(f"{label}")
    print(f"  backup, no change  arkbox {arkbox:6.2f} s   raw borg create {raw:6.2f} s   "
          f"ratio {ratio:.2f}x   (target ≤ 1.2x + dump {dump:.2f} s = {budget:.2f} s: "
          f"{'met' if arkbox <= budget else 'NOT met'}, {arkbox / budget:.2f} of it)")
    print("  pause per service  " + "   ".join(f"{s} {p:.2f} s" for s, p in pauses.items())
          + f"   (worst run {m.pause_max:.2f} s; nightly target ≤ 0.2 s: "
          f"{verdict(m.pause_max <= 0.2)})")
    print(f"  prune after it     {m.prune:6.2f} s")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def show_large(label: str, large: Large, target: float | None) -> None:
    pauses = "   ".join(f"{s} {p:.2f} s" for s, p in large.pauses.items())
    worst = max(large.pauses.values())
    goal = "" if target is None else f"   (target ≤ {target:.0f} s: {verdict(worst <= target)})"
    print(f"  {label:28} pauses {pauses}{goal}; {large.files} files in each volume")
    print(f"  {'':28} whole backup {large.seconds:.1f} s; pre-read (live, nothing paused) "
          f"{large.preread:.1f} s, deleting its throwaway {large.cleanup:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nightly-mib", type=float, default=0.25)
    parser.add_argument("--moderate-mib", type=int, default=16)
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--compare", action="store_true",
                        help="also the large change without the pre-read (as before it)")
    args = parser.parse_args()
    loads = [load()]
    with box_with_data("arkbox-benchbk", "172.30.182.0/24", "fd42:a7b0:182::/64",
                       bench_config, args.mib, args.files) as (source, _), standins(source):
        _, first = timed(lambda: run_backup(source, prune=False))
        shipped = measure(source, args.runs, "shipped")
        loads.append(load())
        nightly, nightly_preread = measure_nightly(source, args.runs, args.nightly_mib)
        moderate = [measure_large(source, args.moderate_mib, f"moderate{index}",
                                  preread.MIN_CHANGED_BYTES) for index in range(3)]
        loads.append(load())
        before = (measure_large(source, args.large_mib, "before", 1 << 62)
                  if args.compare else None)
        large = measure_large(source, args.large_mib, "after", preread.MIN_CHANGED_BYTES)
        loads.append(load())
    print(f"data set: {args.files} files, {args.mib} MiB; first backup {first:.1f} s; "
          f"median of {args.runs} runs; {' → '.join(loads)}")
    show("one archive per backup (borg --paths-from-stdin, pauses at gates)", shipped)
    print(f"  nightly pauses     {args.nightly_mib:g} MiB new per service, worst per run "
          + ", ".join(f"{w:.2f}" for w in nightly) + f" (median {statistics.median(nightly):.2f})"
          + f" s   (target ≤ 0.2 s: {verdict(max(nightly) <= 0.2)}; pre-read: "
          + ("RAN" if nightly_preread else "none, as meant") + ")")
    worst = max(max(m.pauses.values()) for m in moderate)
    print(f"  moderate change    {args.moderate_mib} MiB new per service, pre-read: worst pause "
          f"per run " + ", ".join(f"{max(m.pauses.values()):.2f}" for m in moderate)
          + f" s (target ≤ 0.2 s: {verdict(worst <= 0.2)}); whole backup "
          + ", ".join(f"{m.seconds:.1f}" for m in moderate) + " s, of which pre-read "
          + ", ".join(f"{m.preread:.1f}" for m in moderate) + " s and delete "
          + ", ".join(f"{m.cleanup:.2f}" for m in moderate) + " s")
    print(f"{args.large_mib} MiB new per paused service (a first backup of it; pre-read from "
          f"{preread.MIN_CHANGED_BYTES >> 20} MiB changed)")
    if before is not None:
        show_large("without the pre-read", before, None)
    show_large("with the pre-read", large, 2.0)


if __name__ == "__main__":
    main()
