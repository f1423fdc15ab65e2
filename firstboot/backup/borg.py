"""borg commands as data: every argv and environment the backup code runs, built by pure functions.

Nothing here runs anything; firstboot.core.execute.run does (with BORG_PASSPHRASE masked).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from firstboot.core.config.backup import Retention

BORG = "borg"
# How long one SSH connection attempt may take before borg gives up.
CONNECT_TIMEOUT_S = 20
# One backup is one archive "<host>-<UTC stamp>"; borg commits it only when complete (a
# run cut short leaves nothing, or a "<name>.checkpoint" that is not a backup).
STAMP_FORMAT = "%Y-%m-%dT%H%M%SZ"
_STAMP_RE = re.compile(r"^(?P<host>.+)-(?P<ts>\d{4}-\d\d-\d\dT\d{6}Z)$")


@dataclass(frozen=True)
class Remote:
    """Where the repository is and how to reach it."""

    repository: str  # ssh://borg@host:port/./path
    ssh_key: Path
    known_hosts: Path
    pinned: bool  # True: host key from the config (StrictHostKeyChecking yes); else TOFU

    @property
    def host(self) -> str:
        return urlsplit(self.repository).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.repository).port or 22

    @property
    def known_hosts_name(self) -> str:
        """The host as ssh writes it in known_hosts ([host]:port unless port 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


# How long a shared connection outlives its last borg (the backup closes it explicitly).
CONTROL_PERSIST_S = 30


def ssh_command(remote: Remote, control_path: Path | None = None) -> str:
    """BORG_RSH: our key only, our known_hosts only, never a prompt, dead links noticed.

    With `control_path` (a socket path), the borg processes of one backup share one SSH
    connection (ControlMaster): one TCP and SSH handshake per backup, not one per part,
    which also shortens each service's pause.
    """
    checking = "yes" if remote.pinned else "accept-new"
    shared: tuple[str, ...] = () if control_path is None else (
        "-o", "ControlMaster=auto", "-o", f"ControlPath={control_path}",
        "-o", f"ControlPersist={CONTROL_PERSIST_S}")
    return " ".join((
        "ssh", "-i", str(remote.ssh_key), "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={remote.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", f"StrictHostKeyChecking={checking}", "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
        "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=4", *shared,
    ))


def close_shared_connection_argv(remote: Remote, control_path: Path) -> tuple[str, ...]:
    """Ask the ControlMaster at `control_path` to exit (borg's last use of it is over)."""
    return ("ssh", "-o", f"ControlPath={control_path}", "-O", "exit",
            "-p", str(remote.port), remote.host)


def borg_env(remote: Remote, passphrase: str, base_dir: Path,
             control_path: Path | None = None) -> dict[str, str]:
    """The environment of every borg run (BORG_PASSPHRASE is masked by execute.run)."""
    return {
        "BORG_REPO": remote.repository,
        "BORG_PASSPHRASE": passphrase,
        "BORG_RSH": ssh_command(remote, control_path),
        "BORG_BASE_DIR": str(base_dir),
        # Never answer a question on the operator's behalf: fail instead.
        "BORG_RELOCATED_REPO_ACCESS_IS_OK": "no",
        "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
        "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING": "NO",
        "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING": "NO",
        # A restored box is the same client: its archives continue the same history.
        "BORG_HOSTNAME_IS_UNIQUE": "yes",
        "LANG": "C.UTF-8",
    }


def known_hosts_line(remote: Remote, host_key: str) -> str:
    """The pinned host key as a known_hosts line ("ssh-ed25519 AAAA... comment" -> host key)."""
    key_type, blob, *_ = host_key.split()
    return f"{remote.known_hosts_name} {key_type} {blob}\n"


def archive_stamp(host: str, when: datetime) -> str:
    return f"{host}-{when.strftime(STAMP_FORMAT)}"


@dataclass(frozen=True)
class ArchiveName:
    host: str
    timestamp: str


def parse_archive_name(name: str) -> ArchiveName | None:
    """A backup's archive name; None for anything else (a checkpoint, a hand-made one)."""
    match = _STAMP_RE.match(name)
    return None if match is None else ArchiveName(match["host"], match["ts"])


def archive_glob(host: str) -> str:
    """The backups of `host` (for prune): never its checkpoints."""
    return f"{host}-*Z"


# ----------------------------------------------------------------------- commands


def init_argv() -> tuple[str, ...]:
    # A repository one level down on the server (./clients/NAME) needs its parent made.
    return (BORG, "init", "--encryption=repokey-blake2", "--append-only", "--make-parent-dirs")


def info_repo_argv() -> tuple[str, ...]:
    """Answers 0 when the repository exists and the passphrase opens it."""
    return (BORG, "info", "--json")


def list_argv() -> tuple[str, ...]:
    return (BORG, "list", "--json")


def list_items_argv(archive: str) -> tuple[str, ...]:
    """Every item of `archive`, one JSON object a line (path, type, symlink/link source)."""
    return (BORG, "list", "--json-lines", f"::{archive}")


def info_archives_argv(glob: str) -> tuple[str, ...]:
    """Every archive `glob` names, each with its stats (sizes, files, duration)."""
    return (BORG, "info", "--json", "--glob-archives", glob)


def info_archive_argv(archive: str) -> tuple[str, ...]:
    return (BORG, "info", "--json", f"::{archive}")


def key_export_argv(target: Path, paper: bool = False) -> tuple[str, ...]:
    return (BORG, "key", "export", *(("--paper",) if paper else ()), "::", str(target))


def create_argv(archive: str, paths: Sequence[str], *, compression: str,
                excludes: Sequence[str] = (), comment: str | None = None) -> tuple[str, ...]:
    """Files below the working directory (paths relative to /srv/arkbox), with --json stats."""
    argv: tuple[str, ...] = (BORG, "create", "--json", "--compression", compression,
                             "--one-file-system", "--numeric-ids")
    for pattern in excludes:
        argv += ("--exclude", pattern)
    if comment is not None:
        argv += ("--comment", _literal(comment))
    return (*argv, f"::{archive}", *paths)


def create_from_stdin_argv(archive: str, *, compression: str, comment: str
                           ) -> tuple[str, ...]:
    """The backup: exactly the NUL-separated paths on stdin (relative to /srv/arkbox, no
    recursion), FIFOs read as files (the gates and dumps of firstboot.backup.feed)."""
    return (BORG, "create", "--json", "--compression", compression, "--numeric-ids",
            "--paths-from-stdin", "--paths-delimiter", "\\0", "--read-special",
            "--comment", _literal(comment), f"::{archive}")


# With --read-special borg reads a device node as a file and follows a symlink to one. The
# walk hands borg neither, but a live volume's owner can swap a path for one after the walk
# (or a directory for a symlink to anywhere). So borg reads /srv/arkbox through a bind mount
# of its own, in a mount namespace of its own: `nodev` (a device node cannot be opened) and
# `nosymfollow` (no symlink on it is followed, as a path's last component or on its way;
# borg stores it as a symlink). FIFOs still open: the gates and dumps are FIFOs.
_PRIVATE_VIEW = ('mount --bind "$1" "$1" && '
                 'mount -o remount,bind,nodev,nosymfollow "$1" && cd "$1" && shift && exec "$@"')


def in_private_view(data: Path, argv: Sequence[str]) -> tuple[str, ...]:
    """`argv` run in `data` as seen through a nodev,nosymfollow bind mount no one else sees."""
    return ("unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", _PRIVATE_VIEW, "sh", str(data), *argv)


def _literal(comment: str) -> str:
    # borg expands {placeholders} in comments: braces are doubled to stay literal.
    return comment.replace("{", "{{").replace("}", "}}")


def extract_argv(archive: str, paths: Sequence[str] = (), *,
                 patterns: Sequence[str] = ()) -> tuple[str, ...]:
    """Extract into the working directory, which must be empty (borg overwrites).
    `paths` are path prefixes to extract; `patterns` borg patterns ("+pp:x", "-pp:y"),
    the first that matches deciding."""
    argv: tuple[str, ...] = (BORG, "extract", "--numeric-ids")
    for pattern in patterns:
        argv += (f"--pattern={pattern}",)  # joined: "-pp:x" is not an option
    return (*argv, f"::{archive}", *paths)


def prune_argv(glob: str, retention: Retention) -> tuple[str, ...]:
    """Prune the backups `glob` names by the retention."""
    argv: tuple[str, ...] = (BORG, "prune", "--glob-archives", glob)
    for period in ("daily", "weekly", "monthly", "yearly"):
        count = int(getattr(retention, period))
        if count:
            argv += (f"--keep-{period}", str(count))
    return argv


def delete_glob_argv(glob: str) -> tuple[str, ...]:
    """Delete the archives `glob` names (checkpoints too); none matching is not an error.
    Never without a glob: a bare `borg delete` means the whole repository."""
    if not glob:
        raise ValueError("deleting archives needs a glob")
    return (BORG, "delete", "--glob-archives", glob)


# How long a backup, prune or check waits for the repository lock: the monthly
# `check --verify-data` and a nightly backup may meet, and the server's end of a killed
# run may hold the lock for a moment. borg's own default is 1 s.
LOCK_WAIT_S = 600


def with_lock_wait(argv: Sequence[str], seconds: int = LOCK_WAIT_S) -> tuple[str, ...]:
    """`borg SUBCOMMAND ...` -> `borg SUBCOMMAND --lock-wait SECONDS ...`."""
    return (argv[0], argv[1], "--lock-wait", str(seconds), *argv[2:])


def check_argv(verify_data: bool = False) -> tuple[str, ...]:
    return (BORG, "check", *(("--verify-data",) if verify_data else ()))


def docker_exec_argv(container: str, command: Sequence[str], *, stdin: bool = False
                     ) -> tuple[str, ...]:
    return ("docker", "exec", *(("-i",) if stdin else ()), container, *command)


# ------------------------------------------------------------------------ errors

# What borg's stderr says, and what an operator should do about it.
_DIAGNOSES: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"passphrase supplied in BORG_PASSPHRASE.* incorrect|PassphraseWrong", re.I),
     "wrong passphrase: the repository's key does not open with backup.passphrase",
     "put the passphrase the repository was made with in the config's backup.passphrase "
     "(the operator copied it at the first install)"),
    (re.compile(r"Repository .* does not exist|RepositoryDoesNotExist", re.I),
     "the repository does not exist on the backup server",
     "check backup.repository and that the server is the pinned one; a box that never used "
     "it creates it at first boot, one that did only with arkbox-installer apply --force"),
    (re.compile(r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED", re.I),
     "the backup server's SSH host key does not match",
     "check backup.host_key against the server's /etc/ssh/ssh_host_ed25519_key.pub"),
    (re.compile(r"Permission denied \(publickey", re.I),
     "the backup server refused this box's SSH key",
     "authorize the key on the server: arkbox backup-server add-client NAME 'PUBKEY'"),
    (re.compile(r"PathNotAllowed|not allowed", re.I),
     "the backup server refuses this repository path for this key",
     "backup.repository's path must be the one the server's add-client line names"),
    (re.compile(r"Connection (?:refused|timed out)|Could not resolve|No route to host|"
                r"Connection closed by remote host|Remote: ssh: |ConnectionClosed", re.I),
     "the backup server cannot be reached",
     "check that it is up and that backup.repository's host and port are right"),
    (re.compile(r"^mount: |^unshare: ", re.M),
     "borg's private view of the data (a nodev,nosymfollow bind mount) could not be made",
     "run it as root on Linux 5.10 or later (nosymfollow), where mounts are allowed"),
    # borg suggests deleting archives; in append-only mode that frees nothing by itself.
    (re.compile(r"storage quota .* has been exceeded|StorageQuotaExceeded", re.I),
     "the repository is full: it reached its storage quota on the backup server",
     "ask the server's operator to review and compact it (arkbox-borg-compact: pruned "
     "archives take space until then) or to raise its quota (backup_server.default_quota, "
     "or the client's quota)"),
    (re.compile(r"Failed to create/acquire the lock|LockTimeout|lock.*timeout", re.I),
     "the repository is locked by another borg run",
     "wait for it; a stale lock from a dead client is released by the server within minutes"),
    (re.compile(r"Data integrity error|IntegrityError|segment.*(?:crc|checksum)|corrupt|"
                r"problems found|errors found|Archive .* does not exist|object.*missing|"
                # a damaged segment's entries no longer match the committed index
                r"rebuilt index: .* committed index:|Index object count mismatch", re.I),
     "the archive is damaged or incomplete",
     "run arkbox-installer check; restore an older archive with --archive NAME"),
)


def diagnose(stderr: str) -> tuple[str, str] | None:
    """(what happened, what to do) for a borg failure whose cause borg names."""
    for pattern, what, hint in _DIAGNOSES:
        if pattern.search(stderr):
            return what, hint
    return None
