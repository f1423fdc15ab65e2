"""The appliance's side of borg: its key, the server's host key, and running borg.

Where things live:

    /var/lib/arkbox/backup/ssh-key{,.pub}   the client key (copied from backup.ssh_key,
                                            or generated once when the config has none)
    /var/lib/arkbox/backup/known_hosts      the server's host key (pinned from
                                            backup.host_key, or recorded at first contact)
    /var/lib/arkbox/backup/borg/            BORG_BASE_DIR: borg's cache and security dir
    /var/lib/arkbox/backups.json            the last backups' --json stats, for status
    /srv/arkbox/secrets/backup/             the repository key export (+ paper copy) and
                                            the client's public key, for the operator

None of /var/lib/arkbox is in the archive: it is what opens the archive, or a cache.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from firstboot.backup import borg
from firstboot.core.config import Appliance, SecretUnavailable
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.errors import ArkboxError
from firstboot.core.execute import CommandError, Completed
from firstboot.core.files import atomic_write, ensure_dir

SECRET_DIR_MODE = 0o700
KEYGEN_TIMEOUT_S = 30  # an ed25519 key takes milliseconds


class BackupError(ArkboxError):
    """A backup or restore could not be done; the message says why, the hint what to do."""


class BackupPaths:
    """Where backups keep their files below the box's `Paths` (the layout above)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.state = paths.state / "backup"
        self.ssh_key = self.state / "ssh-key"
        self.known_hosts = self.state / "known_hosts"
        self.borg_base = self.state / "borg"
        self.stats = paths.state / "backups.json"
        # The last backup's failure, removed by the next success.
        self.failure = paths.state / "backup-failure.json"
        # The last `check --verify-data`: ok or the failure, for status and alerts.
        self.verify = paths.state / "backup-verify.json"
        # Every failed run (the last FAILED_RUNS_KEPT), kept for the status page's plot.
        self.failed_runs = paths.state / "backup-failures.json"
        # For the operator: copy these off the box.
        self.exported = paths.secrets / "backup"
        # The repository this box backed up to or restored from: it never starts it anew.
        self.known_repository = self.state / "repository.json"
        # When the last backup started reading: what changed since decides a pre-read.
        self.read_since = self.state / "read-since.json"
        # Present while a pre-read archive may be in the repository (firstboot.backup.preread).
        self.preread_pending = self.state / "preread-pending"


def enabled(config: Appliance) -> bool:
    return config.backup.repository is not None


def passphrase(config: Appliance) -> str:
    ref = config.backup.passphrase
    if ref is None:
        raise BackupError("backup.repository is set but backup.passphrase is not",
                          hint="add backup.passphrase: {file: secrets/borg-passphrase}")
    try:
        return ref.resolve(config.base_dir)
    except SecretUnavailable as err:
        raise BackupError(f"the backup passphrase is unavailable: {err.message}",
                          hint=err.hint) from err


def config_ssh_key(config: Appliance) -> bytes | None:
    ref = config.backup.ssh_key
    if ref is None:
        return None
    try:
        return (ref.resolve(config.base_dir).strip() + "\n").encode()
    except SecretUnavailable as err:
        raise BackupError(f"the backup SSH key is unavailable: {err.message}",
                          hint=err.hint) from err


@dataclass
class Borg:
    """Runs borg for one appliance, through ctx.run, with its remote and passphrase."""

    ctx: FirstbootContext
    # A ControlMaster socket the borg runs share (one SSH connection): see shared().
    control_path: Path | None = None

    @property
    def where(self) -> BackupPaths:
        return BackupPaths(self.ctx.paths)

    @property
    def remote(self) -> borg.Remote:
        repository = self.ctx.config.backup.repository
        assert repository is not None
        return borg.Remote(repository, self.where.ssh_key, self.where.known_hosts,
                           pinned=self.ctx.config.backup.host_key is not None)

    def env(self) -> dict[str, str]:
        return borg.borg_env(self.remote, passphrase(self.ctx.config), self.where.borg_base,
                             self.control_path)

    @classmethod
    @contextmanager
    def shared(cls, ctx: FirstbootContext) -> Iterator[Borg]:
        """A Borg whose runs share one SSH connection, closed (and its socket removed) after.

        The socket lives in a fresh short directory in /tmp (a socket path must stay under
        108 bytes), so no other run and no other box ever joins the connection.
        """
        remove_stale_socket_dirs(SOCKET_PARENT, time.time())
        directory = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX, dir=SOCKET_PARENT))
        runner = cls(ctx, directory / "master")
        try:
            yield runner
        finally:
            if (directory / "master").exists():
                assert runner.control_path is not None
                ctx.run(borg.close_shared_connection_argv(runner.remote, runner.control_path),
                        check=False, timeout=30)
            shutil.rmtree(directory, ignore_errors=True)

    def run(self, argv: Sequence[str], *, cwd: Path | None = None, what: str,
            timeout: float | None = None, **kwargs: Any) -> Completed:
        """Run one borg command; a failure becomes a BackupError saying what to do."""
        try:
            return self.ctx.run(tuple(argv), env=self.env(), cwd=cwd, timeout=timeout, **kwargs)
        except CommandError as err:
            raise as_backup_error(err, what) from err

    def json(self, argv: Sequence[str], *, what: str, cwd: Path | None = None,
             timeout: float | None = None, **kwargs: Any) -> Any:
        out = self.run(argv, what=what, cwd=cwd, timeout=timeout, **kwargs).stdout
        return json.loads(out) if out.strip() else {}


# Short on purpose (a socket path must stay under 108 bytes); mkdtemp makes it 0700.
SOCKET_PARENT = Path("/tmp")  # noqa: S108
SOCKET_DIR_PREFIX = "arkbox-ssh-"
STALE_SOCKET_DIR_S = 600


def remove_stale_socket_dirs(tmp: Path, now: float) -> list[Path]:
    """Directories of runs killed too hard to remove theirs (SIGKILL): no socket left (the
    master removed it when it exited) and older than any run's connection set-up."""
    removed = []
    for directory in tmp.glob(f"{SOCKET_DIR_PREFIX}*"):
        try:
            info = directory.lstat()
            stale = (info.st_uid == os.getuid() and stat.S_ISDIR(info.st_mode)
                     and not (directory / "master").exists()
                     and now - info.st_mtime > STALE_SOCKET_DIR_S)
        except FileNotFoundError:
            continue
        if stale:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed


def as_backup_error(err: CommandError, what: str) -> BackupError:
    diagnosis = borg.diagnose(err.stderr_tail) if err.stderr_tail else None
    if diagnosis is None:
        return BackupError(f"{what} failed: {err.message}", hint=err.hint or
                           "run it again with -v to see each borg command")
    cause, hint = diagnosis
    return BackupError(f"{what}: {cause}\n  borg said: {err.stderr_tail}", hint=hint)


def prepare_client(ctx: FirstbootContext) -> list[str]:
    """The client key and known_hosts in place; returns what changed (never logs a secret)."""
    where = BackupPaths(ctx.paths)
    ensure_dir(where.state, SECRET_DIR_MODE)
    ensure_dir(where.borg_base, SECRET_DIR_MODE)
    changed = []
    from_config = config_ssh_key(ctx.config)
    if from_config is not None:
        if not where.ssh_key.exists() or where.ssh_key.read_bytes() != from_config:
            atomic_write(where.ssh_key, from_config, mode=0o600)
            where.ssh_key.with_suffix(".pub").unlink(missing_ok=True)
            changed.append("client key from backup.ssh_key")
    elif not where.ssh_key.exists():
        comment = f"{ctx.config.appliance.name} backup"
        ctx.run(("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                 "-f", str(where.ssh_key)), timeout=KEYGEN_TIMEOUT_S)
        changed.append("client key generated (ed25519)")
    public = where.ssh_key.with_suffix(".pub")
    if not public.exists():
        out = ctx.run(("ssh-keygen", "-y", "-f", str(where.ssh_key)),
                      timeout=KEYGEN_TIMEOUT_S).stdout
        atomic_write(public, out.strip() + "\n", mode=0o644)
    host_key = ctx.config.backup.host_key
    if host_key is not None:
        remote = Borg(ctx).remote
        line = borg.known_hosts_line(remote, host_key)
        if not where.known_hosts.exists() or where.known_hosts.read_text() != line:
            atomic_write(where.known_hosts, line, mode=0o600)
            changed.append("server host key pinned from backup.host_key")
    return changed


def record_repository(paths: Paths, repository: str, when: datetime, how: str) -> None:
    """This box's history is in `repository` (`how`: "backup" or "restore"); kept until
    the config names another repository."""
    target = BackupPaths(paths).known_repository
    if known_repository(paths).get("repository") == repository:
        return
    ensure_dir(target.parent, SECRET_DIR_MODE)
    body = {"repository": repository, "since": when.isoformat(timespec="seconds"), "how": how}
    atomic_write(target, json.dumps(body, indent=2) + "\n", mode=0o600)


def known_repository(paths: Paths) -> dict[str, Any]:
    try:
        raw = json.loads(BackupPaths(paths).known_repository.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def refuse_new_repository(known: dict[str, Any], repository: str, force: bool) -> None:
    """A repository that answers "does not exist" may be started anew only if this box never
    used it: otherwise it was lost, or whoever answered at its address is not the server."""
    if force or known.get("repository") != repository:
        return
    raise BackupError(
        f"the backup repository {repository} does not exist, yet this box used it "
        f"({known.get('how', 'backup')} since {known.get('since', '?')}): not starting a new, "
        "empty one",
        hint="check the server and its host key (backup.host_key): an impostor at that "
        "address answers \"does not exist\"; if the repository is really lost, "
        "arkbox-installer apply --force creates a new one")


def client_public_key(paths: Paths) -> str:
    public = BackupPaths(paths).ssh_key.with_suffix(".pub")
    return public.read_text().strip() if public.exists() else ""


def record_stats(paths: Paths, entry: Mapping[str, Any], keep: int = 60) -> None:
    """Append one backup's facts to backups.json (newest last, the last `keep`)."""
    target = BackupPaths(paths).stats
    try:
        history = json.loads(target.read_text()).get("backups", [])
    except (FileNotFoundError, ValueError, AttributeError):
        history = []
    history = [*history, dict(entry)][-keep:]
    ensure_dir(target.parent, 0o755)
    atomic_write(target, json.dumps({"backups": history}, indent=2) + "\n", mode=0o644)


def read_stats(paths: Paths) -> list[dict[str, Any]]:
    try:
        raw = json.loads(BackupPaths(paths).stats.read_text())
    except (FileNotFoundError, ValueError):
        return []
    backups = raw.get("backups", []) if isinstance(raw, dict) else []
    return [b for b in backups if isinstance(b, dict)]


STALE_AFTER_HOURS = 26
FAILED_RUNS_KEPT = 60
HISTORY_FIELDS = ("archive", "finished_at", "seconds", "original_size", "deduplicated_size",
                  "pauses")


def record_failure(paths: Paths, when: datetime, message: str, hint: str | None) -> None:
    """The last backup failed: kept for status until a backup succeeds."""
    target = BackupPaths(paths).failure
    ensure_dir(target.parent, 0o755)
    body = {"at": when.isoformat(timespec="seconds"), "message": message, "hint": hint}
    atomic_write(target, json.dumps(body, indent=2) + "\n", mode=0o644)
    runs = [*read_failed_runs(paths), {"at": body["at"], "message": message}]
    atomic_write(BackupPaths(paths).failed_runs,
                 json.dumps(runs[-FAILED_RUNS_KEPT:], indent=1) + "\n", mode=0o644)


def read_failed_runs(paths: Paths) -> list[dict[str, Any]]:
    try:
        raw = json.loads(BackupPaths(paths).failed_runs.read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [r for r in raw if isinstance(r, dict)] if isinstance(raw, list) else []


def clear_failure(paths: Paths) -> None:
    BackupPaths(paths).failure.unlink(missing_ok=True)


def read_failure(paths: Paths) -> dict[str, Any] | None:
    try:
        raw = json.loads(BackupPaths(paths).failure.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def record_verify(paths: Paths, when: datetime, ok: bool, message: str) -> None:
    """The result of the last `check --verify-data` (the monthly timer or by hand)."""
    target = BackupPaths(paths).verify
    ensure_dir(target.parent, 0o755)
    body = {"at": when.isoformat(timespec="seconds"), "ok": ok, "message": message}
    atomic_write(target, json.dumps(body, indent=2) + "\n", mode=0o644)


def read_verify(paths: Paths) -> dict[str, Any] | None:
    try:
        raw = json.loads(BackupPaths(paths).verify.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def next_run_argv(unit: str) -> tuple[str, ...]:
    """When systemd fires `unit` next, as "@<unix seconds>" (empty or "n/a" when never)."""
    return ("systemctl", "show", "--timestamp=unix", "--property=NextElapseUSecRealtime",
            "--value", unit)


def backup_status(paths: Paths, now: datetime, next_run: datetime | None = None,
                  enabled: bool = True) -> dict[str, Any]:
    """What status shows about backups: the last one (when, size, dedup, duration, pauses),
    the next run, staleness (> 26 h) and the last failure, each warning with its fix.

    For `arkbox-installer status` and the status page (from backups.json; no borg run).
    """
    if not enabled:
        return {"enabled": False}
    history = read_stats(paths)
    failure = read_failure(paths)
    result: dict[str, Any] = {
        "enabled": True, "last": None, "stale": True,
        "next_run": next_run.isoformat(timespec="seconds") if next_run else None,
        "failure": failure, "warnings": [],
    }
    warnings: list[str] = result["warnings"]
    if failure is not None:
        warnings.append(f"the last backup failed ({failure.get('at')}): {failure.get('message')}"
                        + (f"; hint: {failure['hint']}" if failure.get("hint") else ""))
    if next_run is None:
        warnings.append("no backup is scheduled: systemctl enable --now arkbox-backup.timer")
    # The last backups and failed runs, for the status page's plot.
    result["history"] = [{k: b.get(k) for k in HISTORY_FIELDS} for b in history]
    result["failed_runs"] = read_failed_runs(paths)
    if not history:
        warnings.append("no backup has been made yet: arkbox-installer backup")
        result["warning"] = warnings[-1]
        return result
    last = history[-1]
    try:
        finished = datetime.fromisoformat(str(last.get("finished_at")))
    except ValueError:
        warnings.append(f"{BackupPaths(paths).stats} is unreadable")
        result.update(last=last.get("archive"), warning=warnings[-1])
        return result
    age_h = (now - finished).total_seconds() / 3600
    original, new = int(last.get("original_size", 0)), int(last.get("deduplicated_size", 0))
    result.update({
        "last": last.get("archive"), "finished_at": last.get("finished_at"),
        "age_hours": round(age_h, 1), "seconds": last.get("seconds"),
        "original_size": original, "deduplicated_size": new,
        "dedup_ratio": round(original / new, 2) if new else None,
        "pauses": last.get("pauses", {}), "stale": age_h > STALE_AFTER_HOURS,
    })
    if result["stale"]:
        result["warning"] = (f"the last backup is {age_h:.0f} h old (more than "
                             f"{STALE_AFTER_HOURS} h): see journalctl -u arkbox-backup")
        warnings.insert(0, result["warning"])
    return result
