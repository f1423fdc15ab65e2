"""The backup-server role: lay the borg account, its forced commands and checks into a root fs.

A backup server runs sshd and nothing else. Each client (an appliance) gets one
line in a root-owned authorized_keys file:

    command="borg serve --append-only --restrict-to-repository /srv/borg/arkbox
    --storage-quota 100G",restrict KEY

so the key can reach exactly one repository, append-only, within its quota, and
never a shell, a forwarding or a PTY. The file is outside the borg account's home: a borg
process that was somehow subverted cannot add keys. A weekly timer runs
`borg check --repository-only` over every repository (the server has no keys,
so it checks segments and index, not contents). Space is reclaimed only here,
by an operator running `arkbox-borg-compact` after reviewing the history (see
docs/backup.md, "append-only"). Why each line: docs/backup.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from builder.pipeline.backup_server_host import install_host
from firstboot.core.config.backup import DEFAULT_CLIENT_QUOTA
from firstboot.core.config.base import is_one_line
from firstboot.core.config.network import NotAnSshKey, split_ssh_public_key
from firstboot.core.config.scalars import (
    BORG_HOME,
    SMALLEST_QUOTA,
    borg_quota_bytes,
    repository_dir,
    repository_overlap,
)
from firstboot.core.errors import BadInputError

if TYPE_CHECKING:
    from firstboot.core.config import Appliance

BORG_USER = "borg"
SYSTEM_IDS = range(999, 99, -1)  # Debian's dynamic system ids, taken from the top like adduser
# Root-owned, readable by borg (sshd reads it with the user's rights), outside its home.
AUTHORIZED_KEYS = PurePosixPath("/etc/ssh/borg_authorized_keys")
SSHD_DROPIN = PurePosixPath("/etc/ssh/sshd_config.d/20-arkbox-borg.conf")
CHECK_SCRIPT = PurePosixPath("/usr/local/sbin/arkbox-borg-check")
COMPACT_SCRIPT = PurePosixPath("/usr/local/sbin/arkbox-borg-compact")
UNIT_DIR = PurePosixPath("/etc/systemd/system")
CHECK_SERVICE = "arkbox-borg-check.service"
CHECK_TIMER = "arkbox-borg-check.timer"
FIRSTBOOT_UNIT = "arkbox-firstboot.service"
# The comment that ends each client's line; add-client replaces the line carrying it.
CLIENT_TAG = "arkbox-client:"

# Matched whole (fullmatch): a trailing line break must not pass.
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_PATH = re.compile(r"(?:\./|/)[A-Za-z0-9._/-]+")
_QUOTA = re.compile(r"[0-9]+[KMGT]?")
# What the forced command of an arkbox line restricts its client to.
_RESTRICTED_TO = re.compile(r"--restrict-to-repository ([^\s\"]+)")


@dataclass(frozen=True)
class Client:
    name: str
    public_key: str
    path: str  # as in the client's repository URL: "./arkbox", or absolute below the home
    quota: str = DEFAULT_CLIENT_QUOTA  # borg serve --storage-quota: every client has one

    def __post_init__(self) -> None:
        problems = []
        if not _NAME.fullmatch(self.name):
            problems.append(f"name {self.name!r}: lower-case letters, digits and -")
        try:
            if not is_one_line(self.public_key.strip()):
                raise NotAnSshKey("more than one line")
            split_ssh_public_key(self.public_key)
        except NotAnSshKey as err:
            problems.append(f"public key: {err} (one line: ssh-ed25519 AAAA... comment)")
        if not _PATH.fullmatch(self.path):
            problems.append(f"path {self.path!r}: like ./NAME, below {BORG_HOME}")
        else:
            try:
                repository_dir(self.path)
            except ValueError as err:
                problems.append(f"path {err.args[0]}")
        if not _QUOTA.fullmatch(self.quota) or borg_quota_bytes(self.quota) < SMALLEST_QUOTA:
            problems.append(f"quota {self.quota!r}: like 100G, at least 10M")
        if problems:
            raise BadInputError("invalid backup client: " + "; ".join(problems),
                                hint="arkbox backup-server add-client NAME 'ssh-ed25519 AAAA...'")

    @property
    def directory(self) -> PurePosixPath:
        """The repository's directory on the server, normalised."""
        return repository_dir(self.path)


def serve_argv(client: Client) -> tuple[str, ...]:
    """The forced command: append-only borg serve, restricted to the client's repository."""
    return ("borg", "serve", "--append-only",
            "--restrict-to-repository", str(client.directory), "--storage-quota", client.quota)


def authorized_keys_line(client: Client) -> str:
    """One client's line: forced command, every forwarding/PTY refused (`restrict`)."""
    key = split_ssh_public_key(client.public_key)  # checked in Client
    command = " ".join(serve_argv(client))
    return f'command="{command}",restrict {key.key_type} {key.blob} {CLIENT_TAG}{client.name}'


def authorized_keys(clients: Iterable[Client]) -> str:
    lines = ["# arkbox backup server: one line per client, written by the builder or",
             "# `arkbox backup-server add-client`. Forced append-only borg serve; no shell."]
    seen: dict[str, PurePosixPath] = {}
    for client in clients:
        if client.name in seen:
            raise BadInputError(f"backup client {client.name!r} is listed twice")
        _refuse_overlap(client, seen, "the other clients")
        seen[client.name] = client.directory
        lines.append(authorized_keys_line(client))
    return "\n".join(lines) + "\n"


def _refuse_overlap(client: Client, others: dict[str, PurePosixPath], where: str) -> None:
    """Each client's repository apart from every other's (scalars.repository_overlap)."""
    for name, directory in others.items():
        overlap = repository_overlap(client.directory, directory)
        if overlap is not None and name != client.name:
            raise BadInputError(
                f"repository {client.directory} of backup client {client.name!r} {overlap} "
                f"the repository of client {name!r} ({directory}) in {where}",
                hint="give each client a directory of its own, side by side: --path ./NAME")


def clients_in(authorized_keys_text: str) -> dict[str, PurePosixPath]:
    """The clients of an authorized_keys file arkbox wrote: name -> repository directory."""
    found: dict[str, PurePosixPath] = {}
    for line in authorized_keys_text.splitlines():
        restricted = _RESTRICTED_TO.search(line)
        if restricted and f" {CLIENT_TAG}" in line:
            found[line.rpartition(f" {CLIENT_TAG}")[2]] = PurePosixPath(restricted.group(1))
    return found


def add_client_line(existing: str, client: Client) -> tuple[str, bool]:
    """`existing` with the client's line added or replaced; True when the text changed."""
    tag = f"{CLIENT_TAG}{client.name}"
    line = authorized_keys_line(client)
    kept = [old for old in existing.splitlines() if not old.endswith(" " + tag)]
    if not existing.strip():
        kept = authorized_keys([]).splitlines()
    updated = "\n".join([*kept, line]) + "\n"
    return updated, updated != existing


def clients_from_config(config: Appliance) -> list[Client]:
    server = config.backup_server
    if server is None:
        return []
    return [Client(c.name, c.public_key, c.path, c.quota or server.default_quota)
            for c in server.clients]


def sshd_dropin() -> str:
    return f"""\
# arkbox backup server: the borg account (why: docs/backup.md).
Match User {BORG_USER}
    # Keys live in a root-owned file the borg account cannot write.
    AuthorizedKeysFile {AUTHORIZED_KEYS}
    # A dead client is dropped within ~2 minutes, so its repository lock is released.
    ClientAliveInterval 30
    ClientAliveCountMax 4
    PermitTTY no
    # The legal banner is for people; borg would relay it as noise on every run.
    Banner none
    AllowTcpForwarding no
    X11Forwarding no
"""


def check_script() -> str:
    return f"""\
#!/bin/sh
# arkbox: verify every borg repository on this server (segments and index; the server
# has no keys, so contents are verified by the clients' `arkbox-installer check`).
set -u
status=0
for config in {BORG_HOME}/*/config {BORG_HOME}/*/*/config; do
    [ -f "$config" ] || continue
    repo=$(dirname "$config")
    if borg check --repository-only "$repo"; then
        echo "ok: $repo"
    else
        echo "FAILED: $repo" >&2
        status=1
    fi
done
exit $status
"""


def compact_script() -> str:
    return f"""\
#!/bin/sh
# arkbox: reclaim space in one repository. Run by hand, as root, after reviewing the
# repository's history: compaction makes a client's deletions permanent, which is
# exactly what append-only mode protects against (docs/backup.md).
set -eu
[ $# -eq 1 ] || {{ echo "usage: $0 REPOSITORY_DIR (e.g. {BORG_HOME}/arkbox)" >&2; exit 2; }}
exec runuser -u {BORG_USER} -- borg compact --verbose "$1"
"""


def check_service() -> str:
    return f"""\
[Unit]
Description=arkbox: verify the borg repositories on this backup server
Documentation=file:/usr/share/doc/arkbox/backup.md

[Service]
Type=oneshot
User={BORG_USER}
ExecStart={CHECK_SCRIPT}
Nice=10
IOSchedulingClass=idle
ProtectSystem=strict
ReadWritePaths={BORG_HOME}
PrivateTmp=yes
NoNewPrivileges=yes
SyslogIdentifier=arkbox-borg-check
"""


def check_timer() -> str:
    return """\
[Unit]
Description=arkbox: weekly check of the borg repositories

[Timer]
OnCalendar=Sun *-*-* 05:00
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
"""


def _write(tree: Path, path: PurePosixPath, text: str, mode: int) -> Path:
    target = tree / str(path).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)
    return target


def _ids(path: Path) -> set[int]:
    ids = set()
    for line in path.read_text().splitlines() if path.exists() else []:
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit():
            ids.add(int(fields[2]))
    return ids


def borg_ids(tree: Path) -> tuple[int, int] | None:
    """The borg account's uid and gid in `tree`, None when it has none."""
    for line in (tree / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == BORG_USER and len(fields) > 3:
            return int(fields[2]), int(fields[3])
    return None


def _add_account(tree: Path) -> int | None:
    """The borg system account, written into passwd/shadow/group as data; its new id."""
    passwd = tree / "etc/passwd"
    if borg_ids(tree) is not None:
        return None
    taken = _ids(passwd) | _ids(tree / "etc/group")
    uid = next(i for i in SYSTEM_IDS if i not in taken)
    # A real shell: sshd runs the forced command through it. "*" (not "!"): no password,
    # yet not a locked account, which sshd would refuse even with a key.
    with passwd.open("a") as f:
        f.write(f"{BORG_USER}:x:{uid}:{uid}:borg repositories:{BORG_HOME}:/bin/sh\n")
    with (tree / "etc/group").open("a") as f:
        f.write(f"{BORG_USER}:x:{uid}:\n")
    shadow = tree / "etc/shadow"
    if shadow.exists():
        with shadow.open("a") as f:
            f.write(f"{BORG_USER}:*:19000:0:99999:7:::\n")
    return uid


def install_backup_server(tree: Path, config: Appliance, role: str) -> list[str]:
    """Lay the backup-server role's files into `tree`; does nothing for other roles."""
    if role != "backup-server":
        return []
    changes = []
    # The build manifest goes there; on the appliance the images stage makes it.
    (tree / "usr/share/arkbox").mkdir(parents=True, exist_ok=True)
    if (uid := _add_account(tree)) is not None:
        changes.append(f"account {BORG_USER} (uid {uid}, home {BORG_HOME})")
    ids = borg_ids(tree)
    assert ids is not None
    home = tree / str(BORG_HOME).lstrip("/")
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    os.chown(home, *ids)
    clients = clients_from_config(config)
    _write(tree, AUTHORIZED_KEYS, authorized_keys(clients), 0o644)
    changes.append(f"{AUTHORIZED_KEYS}: {len(clients)} client(s)")
    _write(tree, SSHD_DROPIN, sshd_dropin(), 0o600)
    _write(tree, CHECK_SCRIPT, check_script(), 0o755)
    _write(tree, COMPACT_SCRIPT, compact_script(), 0o750)
    _write(tree, UNIT_DIR / CHECK_SERVICE, check_service(), 0o644)
    _write(tree, UNIT_DIR / CHECK_TIMER, check_timer(), 0o644)
    wants = tree / "etc/systemd/system/timers.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / CHECK_TIMER
    if not link.is_symlink():
        link.symlink_to(f"{UNIT_DIR}/{CHECK_TIMER}")
    changes.append(f"{CHECK_TIMER} enabled")
    changes += install_host(tree, config)  # what first boot does elsewhere: firewall, admin
    # The appliance's first-boot installer has nothing to set up here (no engine, no
    # services): a backup server is ready when sshd is.
    firstboot = tree / "etc/systemd/system/multi-user.target.wants" / FIRSTBOOT_UNIT
    if firstboot.is_symlink() or firstboot.exists():
        firstboot.unlink()
        changes.append(f"{FIRSTBOOT_UNIT} not enabled on this role")
    return changes


def cmd_add_client(name: str, public_key: str, path: str | None, quota: str | None,
                   authorized_keys_file: Path | None) -> tuple[str, bool]:
    """`arkbox backup-server add-client`: the client's line, added to a file when one is given.

    Without a file the line is only printed (to paste on a server, or to compare);
    with one (on the server: /etc/ssh/borg_authorized_keys) the client's
    line is added or replaced, atomically. Returns the line and whether the file changed.
    """
    client = Client(name, public_key, path or f"./{name}", quota or DEFAULT_CLIENT_QUOTA)
    line = authorized_keys_line(client)
    if authorized_keys_file is None:
        return line, False
    existing = authorized_keys_file.read_text() if authorized_keys_file.exists() else ""
    _refuse_overlap(client, clients_in(existing), str(authorized_keys_file))
    updated, changed = add_client_line(existing, client)
    if changed:
        partial = authorized_keys_file.with_name(authorized_keys_file.name + ".new")
        partial.write_text(updated)
        partial.chmod(0o644)
        partial.replace(authorized_keys_file)
    return line, changed
