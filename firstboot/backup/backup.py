"""`arkbox-installer backup`: one consistent backup, made of a few archives sharing one stamp.

    <host>-<UTC>.dump-<svc>  a database's dump, streamed from `docker exec <dump_command>`
                             into `borg create --content-from-command` (no copy on disk)
    <host>-<UTC>.svc-<svc>   a paused service's volumes: the service is paused only
                             while borg reads them (the pause time is reported)
    <host>-<UTC>.svc-mail    the mail store (queue and mailboxes), the same way: the
                             mail container is paused only while borg reads it
    <host>-<UTC>             everything else under /srv/arkbox: config, manifest,
                             secrets (the DKIM key), TLS, live-read volumes. Written last, so its
                             presence says the whole backup is there; its comment lists
                             the parts, which the restore checks.

Nothing of the operating system is in it. Each series is pruned on its own (borg
prune's --keep-daily keeps one archive per day of the series it is given).
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firstboot.backup import borg
from firstboot.backup.client import BackupError, BackupPaths, Borg, record_stats
from firstboot.config import Appliance
from firstboot.containers.naming import Naming
from firstboot.context import FirstbootContext
from firstboot.execute import CommandError
from firstboot.files import atomic_write, ensure_dir
from firstboot.steps.mail import MAIL_SERVICE
from firstboot.steps.mail import VOLUMES as MAIL_VOLUMES

CONFIG_DIR = "config"  # /srv/arkbox/config: the validated config, as the box runs it


@dataclass(frozen=True)
class Part:
    """One archive of a backup."""

    suffix: str  # "" for the base, ".svc-NAME", ".dump-NAME"
    service: str | None = None
    paths: tuple[str, ...] = ()  # relative to /srv/arkbox
    excludes: tuple[str, ...] = ()
    pause: bool = False
    dump_command: tuple[str, ...] = ()
    dump_file: str = ""


def plan_parts(config: Appliance, existing_volumes: Callable[[str, str], bool]) -> list[Part]:
    """The archives of one backup, base last. `existing_volumes(service, volume)` filters."""
    parts: list[Part] = []
    own_parts: list[str] = []  # volume dirs the base archive leaves to a part
    excluded: list[str] = []
    for name, service in sorted(config.services.items()):
        policy = service.backup
        volumes = [v for v in sorted(service.volumes) if existing_volumes(name, v)]
        kept = [v for v in volumes if v not in policy.exclude_volumes]
        excluded += [f"volumes/{name}/{v}" for v in volumes if v in policy.exclude_volumes]
        if policy.consistency == "dump" and policy.dump_command:
            parts.append(Part(f"{borg.DUMP_PART}{name}", service=name,
                              dump_command=tuple(policy.dump_command),
                              dump_file=f"dumps/{name}/{policy.dump_file}"))
        if policy.consistency == "pause" and kept:
            paths = tuple(f"volumes/{name}/{v}" for v in kept)
            parts.append(Part(f"{borg.SERVICE_PART}{name}", service=name, paths=paths,
                              pause=True))
            own_parts += paths
    # The mail store: Postfix's queue and the Maildirs change under a live read (a
    # message moved from new/ to cur/ is in neither, or in both); the container is
    # paused while borg reads them, like a `pause` service. Kept while mail is off too.
    mail_volumes = [v for v in sorted(MAIL_VOLUMES) if existing_volumes(MAIL_SERVICE, v)]
    if mail_volumes:
        paths = tuple(f"volumes/{MAIL_SERVICE}/{v}" for v in mail_volumes)
        parts.append(Part(f"{borg.SERVICE_PART}{MAIL_SERVICE}", service=MAIL_SERVICE,
                          paths=paths, pause=True))
        own_parts += paths
    base = Part("", paths=(".",), excludes=tuple(f"./{p}" for p in [*own_parts, *excluded]))
    return [*parts, base]


@dataclass
class BackupReport:
    archive: str
    seconds: float = 0.0
    pauses: dict[str, float] = field(default_factory=dict)  # service -> seconds paused
    parts: list[dict[str, Any]] = field(default_factory=list)  # borg --json per archive
    pruned: bool = False

    def totals(self) -> dict[str, int]:
        total = {"original_size": 0, "compressed_size": 0, "deduplicated_size": 0, "nfiles": 0}
        for part in self.parts:
            stats = part.get("archive", {}).get("stats", {})
            for key in total:
                total[key] += int(stats.get(key, 0))
        return total

    def as_json(self, finished_at: str) -> dict[str, Any]:
        return {"archive": self.archive, "finished_at": finished_at,
                "seconds": round(self.seconds, 2),
                "pauses": {k: round(v, 3) for k, v in self.pauses.items()},
                "parts": [p.get("archive", {}).get("name") for p in self.parts],
                "pruned": self.pruned, **self.totals()}

    def summary(self) -> str:
        t = self.totals()
        ratio = t["original_size"] / t["deduplicated_size"] if t["deduplicated_size"] else 0.0
        pauses = ", ".join(f"{k} paused {v:.2f} s" for k, v in self.pauses.items()) or "no pause"
        return (f"{self.archive}: {t['nfiles']} files, {t['original_size'] >> 20} MiB, "
                f"{t['deduplicated_size'] >> 10} KiB new (dedup {ratio:.1f}x), "
                f"{self.seconds:.1f} s; {pauses}")


def snapshot_config(ctx: FirstbootContext) -> None:
    """The validated config the box runs, into /srv/arkbox/config (carried by the archive)."""
    source = ctx.config.source_path
    if source is None:
        return
    target = ctx.paths.data / CONFIG_DIR / "appliance.yaml"
    ensure_dir(target.parent, 0o700)
    content = Path(source).read_bytes()
    if not target.exists() or target.read_bytes() != content:
        atomic_write(target, content, mode=0o600)


def run_backup(ctx: FirstbootContext, *, prune: bool = True) -> BackupReport:
    """One backup now; each part's stats and each service's pause time in the report."""
    started = time.monotonic()
    data = ctx.paths.data
    if not (data / "manifest.json").exists() and not any(data.glob("*")):
        raise BackupError(f"nothing to back up: {data} is empty",
                          hint="run arkbox-installer firstboot first")
    snapshot_config(ctx)
    with Borg.shared(ctx) as runner:  # one SSH connection for every part and the prune
        report = _backup_parts(ctx, runner, prune)
    report.seconds = time.monotonic() - started
    record_stats(ctx.paths, report.as_json(ctx.now().isoformat(timespec="seconds")))
    return report


def _backup_parts(ctx: FirstbootContext, runner: Borg, prune: bool) -> BackupReport:
    data = ctx.paths.data
    config = ctx.config
    naming = Naming.for_root(ctx.paths.root)
    stamp = borg.archive_stamp(config.appliance.name, ctx.now())
    report = BackupReport(stamp)
    parts = plan_parts(config, lambda s, v: (data / "volumes" / s / v).is_dir())
    done: list[str] = []
    for part in parts:
        archive = stamp + part.suffix
        if part.dump_command:
            assert part.service is not None
            argv = borg.create_from_command_argv(
                archive, part.dump_file,
                borg.docker_exec_argv(naming.container(part.service), part.dump_command),
                compression=config.backup.compression)
            result = runner.json(borg.with_lock_wait(argv), what=f"dump of {part.service}")
        elif part.pause:
            assert part.service is not None
            comment = json.dumps({"arkbox": "part", "service": part.service})
            argv = borg.with_lock_wait(borg.create_argv(
                archive, part.paths, compression=config.backup.compression, comment=comment))
            result, paused = _while_paused(ctx, naming.container(part.service),
                                           functools.partial(runner.json, argv, cwd=data,
                                                             what=f"backup of {archive}"))
            report.pauses[part.service] = paused
        else:
            comment = json.dumps({"arkbox": "backup", "parts": done,
                                  "appliance": config.appliance.name})
            argv = borg.create_argv(archive, part.paths, compression=config.backup.compression,
                                    excludes=part.excludes, comment=comment)
            result = runner.json(borg.with_lock_wait(argv), what="backup", cwd=data)
        report.parts.append(result)
        done.append(part.suffix)
    if prune:
        prune_archives(ctx, [p.suffix for p in parts if p.suffix], runner)
        report.pruned = True
    return report


def _while_paused(ctx: FirstbootContext, container: str,
                  read: Callable[[], Any]) -> tuple[Any, float]:
    """Run `read` with the container paused; a container that is not running is read as is."""
    try:
        ctx.run(borg.docker_pause_argv(container, True))
    except CommandError as err:
        if "already paused" not in err.stderr_tail:
            ctx.log.warning("could not pause %s (%s); reading its volumes live", container,
                            err.stderr_tail or err.message)
            return read(), 0.0
        # Left paused by a backup that was killed: read it so, and unpause it after.
        ctx.log.warning("%s was left paused by an interrupted backup; unpausing it after "
                        "this read", container)
    paused_at = time.monotonic()
    try:
        return read(), time.monotonic() - paused_at
    finally:
        ctx.run(borg.docker_pause_argv(container, False))


def prune_archives(ctx: FirstbootContext, suffixes: list[str],
                   runner: Borg | None = None) -> None:
    """Prune each series by the retention. On an append-only server this only marks:
    the space comes back when the server's operator compacts (docs/backup.md)."""
    runner = runner or Borg(ctx)
    for glob in borg.prune_globs(ctx.config.appliance.name, suffixes):
        runner.run(borg.with_lock_wait(borg.prune_argv(glob, ctx.config.backup.retention)),
                   what="prune")


def list_archives(ctx: FirstbootContext) -> list[dict[str, Any]]:
    raw = Borg(ctx).json(borg.list_argv(), what="listing the archives")
    archives = raw.get("archives", []) if isinstance(raw, dict) else []
    return [a for a in archives if isinstance(a, dict)]


def check_repository(ctx: FirstbootContext, verify_data: bool = False) -> str:
    result = Borg(ctx).run(borg.with_lock_wait(borg.check_argv(verify_data)),
                           what="borg check")
    return (result.stderr or result.stdout).strip() or "repository and archives consistent"


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


__all__ = ["BackupError", "BackupPaths", "BackupReport", "Part", "check_repository",
           "list_archives", "plan_parts", "prune_archives", "run_backup"]
