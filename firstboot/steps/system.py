"""Step `system`: host name, time zone, the admin account and its keys, SSH host keys.

The image ships no SSH host keys (every server must have its own): they are
made here when the boot-time unit has not made them already, of the two types
the hardened sshd accepts (Ed25519, RSA 4096 — `ssh-keygen -A` would add ECDSA
and a weaker RSA). sshd's own config is laid at build time; this step checks
that it still listens on the configured port for the configured admin, and
refuses otherwise: opening the firewall for a port sshd does not serve would
lock the admin out.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from firstboot.admin_account import (
    ADMIN_COMMENT,
    ADMIN_SHELL,
    authorized_keys_content,
    sudoers_content,
    sudoers_path,
)
from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.files import atomic_symlink, ensure_dir, read_text, write_if_changed
from firstboot.core.step import Outcome, StepFailed
from firstboot.host_names import short_hostname, write_host_names

NAME = "system"

# (type, bits) of the host keys the hardened sshd offers (see sshd_config.d/10-arkbox.conf).
HOST_KEY_TYPES: tuple[tuple[str, int | None], ...] = (("ed25519", None), ("rsa", 4096))
SSH_UNIT = "ssh.service"


def applies(config: Appliance) -> bool:
    return True


# ---------------------------------------------------------------- pure parts


def key_comment(key: str) -> str:
    """What a key line calls itself ("ops@laptop"), or its type when it has no comment."""
    fields = key.split(maxsplit=2)
    return fields[2] if len(fields) > 2 else fields[0]


def useradd_argv(user: str) -> tuple[str, ...]:
    # No password is set: the account is locked for passwords and logs in with keys only.
    return ("useradd", "--create-home", "--user-group", "--shell", ADMIN_SHELL,
            "--comment", ADMIN_COMMENT, user)


def host_key_argv(path: Path, key_type: str, bits: int | None) -> tuple[str, ...]:
    size = ("-b", str(bits)) if bits else ()
    return ("ssh-keygen", "-q", "-t", key_type, *size, "-N", "", "-C", "", "-f", str(path))


def sshd_effective_config_argv() -> tuple[str, ...]:
    return ("sshd", "-T")


def restart_sshd_argv() -> tuple[str, ...]:
    return ("systemctl", "restart", SSH_UNIT)


def sshd_mismatch(effective: str, port: int, user: str) -> str | None:
    """Why `sshd -T` output does not serve the admin on `port`, or None when it does."""
    ports: set[int] = set()
    allowed: list[str] = []
    for line in effective.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "port" and value.strip().isdigit():
            ports.add(int(value))
        elif key == "allowusers":
            allowed.extend(value.split())
    if port not in ports:
        shown = " ".join(str(p) for p in sorted(ports)) or "none"
        return f"sshd listens on port {shown}, the config says appliance.admin.ssh_port: {port}"
    if allowed and user not in allowed:
        return f"sshd's AllowUsers ({' '.join(allowed)}) does not name the admin {user!r}"
    return None


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int
    home: Path


def find_account(passwd_text: str | None, user: str) -> Account | None:
    for line in (passwd_text or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[0] == user:
            return Account(int(fields[2]), int(fields[3]), Path(fields[5]))
    return None


# ---------------------------------------------------------------- the step


@dataclass(frozen=True)
class Wanted:
    fqdn: str
    short: str
    timezone: str
    user: str
    keys: list[str]

    @classmethod
    def of(cls, config: Appliance) -> Wanted:
        identity = config.appliance
        return cls(identity.hostname, short_hostname(identity.hostname), identity.timezone,
                   identity.admin.user, list(identity.admin.ssh_keys))


def run(ctx: FirstbootContext) -> Outcome:
    wanted = Wanted.of(ctx.config)
    changes: list[str] = []
    if _set_hostname(ctx, wanted):
        changes.append(f"hostname {wanted.short} ({wanted.fqdn})")
    if _set_timezone(ctx, wanted.timezone):
        changes.append(f"time zone {wanted.timezone}")
    made_keys = _make_host_keys(ctx)
    if made_keys:
        changes.append(f"host keys {' '.join(made_keys)} made")
    ctx.checkpoint("host-keys")
    account_changes = _set_up_admin(ctx, wanted)
    changes.extend(account_changes)
    _check_sshd(ctx, wanted, restart=bool(made_keys))
    keys = ", ".join(f'"{key_comment(k)}"' for k in wanted.keys)
    details = {"hostname": wanted.fqdn, "admin": wanted.user, "admin_keys": len(wanted.keys)}
    if changes:
        return Outcome.changed_("; ".join(changes), details)
    return Outcome.unchanged(f"hostname {wanted.short}, admin {wanted.user} with key {keys}",
                             details)


def verify(ctx: FirstbootContext) -> str | None:
    wanted = Wanted.of(ctx.config)
    paths = ctx.paths
    if (read_text(paths.at("/etc/hostname")) or "").strip() != wanted.short:
        return "/etc/hostname does not hold the configured name"
    if paths.is_live and socket.gethostname() != wanted.short:
        return f"the running host name is {socket.gethostname()!r}, not {wanted.short!r}"
    localtime = paths.at("/etc/localtime")
    if not localtime.is_symlink() or str(localtime.readlink()) != _zone_target(wanted.timezone):
        return f"/etc/localtime does not point at {wanted.timezone}"
    for key_type, _ in HOST_KEY_TYPES:
        if not _host_key_path(ctx, key_type).is_file():
            return f"SSH host key {key_type} is missing"
    account = find_account(read_text(paths.at("/etc/passwd")), wanted.user)
    if account is None:
        return f"the admin account {wanted.user!r} does not exist"
    keys_file = _authorized_keys_path(ctx, account)
    if read_text(keys_file) != authorized_keys_content(wanted.keys):
        return f"{keys_file} does not hold the configured keys"
    if keys_file.stat().st_mode & 0o077:
        return f"{keys_file} is readable by others"
    return None


# ---------------------------------------------------------------- parts of run


def _set_hostname(ctx: FirstbootContext, wanted: Wanted) -> bool:
    paths = ctx.paths
    changed = write_host_names(paths.at("/etc"), wanted.fqdn)
    if paths.is_live and socket.gethostname() != wanted.short:
        # The kernel's name now; systemd-hostnamed reads /etc/hostname from here on.
        socket.sethostname(wanted.short)
        changed = True
    if changed:
        ctx.log.info("host name %s (%s)", wanted.short, wanted.fqdn)
    return changed


def _zone_target(timezone: str) -> str:
    return f"/usr/share/zoneinfo/{timezone}"


def _set_timezone(ctx: FirstbootContext, timezone: str) -> bool:
    target = _zone_target(timezone)
    if not ctx.paths.at(target).is_file():
        raise StepFailed(f"time zone {timezone!r} is not installed ({target} is missing)",
                         hint="check appliance.timezone, or add tzdata to the image")
    changed = atomic_symlink(ctx.paths.at("/etc/localtime"), target)
    changed |= write_if_changed(ctx.paths.at("/etc/timezone"), timezone + "\n")
    if changed:
        ctx.log.info("time zone %s", timezone)
    return changed


def _host_key_path(ctx: FirstbootContext, key_type: str) -> Path:
    return ctx.paths.at(f"/etc/ssh/ssh_host_{key_type}_key")


def _make_host_keys(ctx: FirstbootContext) -> list[str]:
    made = []
    for key_type, bits in HOST_KEY_TYPES:
        path = _host_key_path(ctx, key_type)
        if path.is_file() and path.with_name(path.name + ".pub").is_file():
            continue
        # A half-made pair (power cut during ssh-keygen) is made again whole.
        for stale in (path, path.with_name(path.name + ".pub")):
            stale.unlink(missing_ok=True)
        ensure_dir(path.parent, 0o755)
        ctx.run(host_key_argv(path, key_type, bits), timeout=300)
        ctx.log.info("made SSH host key %s", key_type)
        made.append(key_type)
    return made


def _authorized_keys_path(ctx: FirstbootContext, account: Account) -> Path:
    return ctx.paths.at(str(account.home)) / ".ssh" / "authorized_keys"


def _set_up_admin(ctx: FirstbootContext, wanted: Wanted) -> list[str]:
    changes = []
    passwd = ctx.paths.at("/etc/passwd")
    account = find_account(read_text(passwd), wanted.user)
    if account is None:
        ctx.run(useradd_argv(wanted.user), timeout=60)
        account = find_account(read_text(passwd), wanted.user)
        if account is None:
            raise StepFailed(f"useradd did not create the admin account {wanted.user!r}",
                             hint="check /etc/passwd and the journal of this boot")
        ctx.log.info("created the admin account %s", wanted.user)
        changes.append(f"admin account {wanted.user}")
    owner = (account.uid, account.gid) if os.geteuid() == 0 else None
    ssh_dir = _authorized_keys_path(ctx, account).parent
    for directory in (ssh_dir.parent, ssh_dir):  # the home exists unless someone removed it
        if not directory.is_dir():
            ensure_dir(directory, 0o700)
            if owner is not None:
                os.chown(directory, *owner)
    ensure_dir(ssh_dir, 0o700)
    if owner is not None:
        os.chown(ssh_dir, *owner)  # sshd's StrictModes refuses keys in a directory not the user's
    content = authorized_keys_content(wanted.keys)
    if write_if_changed(ssh_dir / "authorized_keys", content, 0o600, owner):
        names = ", ".join(f'"{key_comment(k)}"' for k in wanted.keys)
        ctx.log.info("admin %s may log in with %s", wanted.user, names)
        changes.append(f"admin key{'s' if len(wanted.keys) > 1 else ''} {names}")
    sudoers = ctx.paths.at(sudoers_path(wanted.user))
    if ctx.paths.at("/usr/bin/sudo").exists() and write_if_changed(
            sudoers, sudoers_content(wanted.user), 0o440):
        changes.append(f"sudo for {wanted.user}")
    return changes


def _check_sshd(ctx: FirstbootContext, wanted: Wanted, restart: bool) -> None:
    port = ctx.config.appliance.admin.ssh_port
    effective = ctx.run(sshd_effective_config_argv(), timeout=60,
                        hint="sshd's configuration is broken: see sshd -t").stdout
    problem = sshd_mismatch(effective, port, wanted.user)
    if problem is not None:
        raise StepFailed(
            problem,
            hint="sshd's settings are made when the image is built: rebuild it (arkbox build) "
            "after changing appliance.admin, or edit /etc/ssh/sshd_config.d/10-arkbox.conf",
        )
    if restart and ctx.paths.at("/run/systemd/system").is_dir():
        # sshd loads host keys only when it starts.
        ctx.run(restart_sshd_argv(), timeout=120)
        ctx.log.info("restarted sshd to load its new host keys")
