"""A backup server's host, locked down at build time: its firewall and its admin account.

No first boot runs on the backup-server role, so what first boot does on an appliance
(steps `firewall` and `system`) is laid into the root fs here, once, from the same
config and with the installer's own libraries:

* the nftables ruleset (firstboot/firewall_rules.py, role "backup-server"): the SSH port
  and nothing else, checked with `nft -c`, loaded at boot by nftables.service;
* the host name (`appliance.hostname`) in /etc/hostname and /etc/hosts (step `system`'s
  firstboot/host_names.py);
* the admin (`appliance.admin`): an account with its keys, sudo as on the appliance, no
  password. sshd lets it in only from `appliance.admin.allow_from` (the hardening
  stage's AllowUsers): the firewall cannot tell it from the borg clients on one port.

Why: docs/backup.md, "The backup-server role".
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from firstboot.admin_account import (
    ADMIN_COMMENT,
    ADMIN_SHELL,
    BUILT_AUTHORIZED_KEYS_HEADER,
    authorized_keys_content,
    sudoers_content,
    sudoers_path,
)
from firstboot.core.errors import ArkboxError, BadInputError
from firstboot.core.execute import run
from firstboot.core.files import atomic_symlink, ensure_dir, write_if_changed
from firstboot.firewall_rules import (
    BOOT_CONFIG,
    BOOT_CONFIG_CONTENT,
    DROP_IN,
    DROP_IN_CONTENT,
    ENABLED_LINK,
    RENDERED,
    UNIT,
    UNIT_FILE,
    plan_for,
    render_ruleset,
)
from firstboot.host_names import short_hostname, write_host_names

if TYPE_CHECKING:
    from firstboot.core.config import Appliance

# Enabled by the assemble stage for every role; it Wants= docker.service, which would start
# the engine (and containerd) that the hardening stage disabled on this role.
IMAGES_UNIT_LINK = "/etc/systemd/system/multi-user.target.wants/arkbox-images.service"
# Debian's range for accounts of people (login.defs UID_MIN..UID_MAX), taken from the
# bottom as useradd does.
PERSON_IDS = range(1000, 60001)
SUDO = PurePosixPath("/usr/bin/sudo")


def _inside(tree: Path, path: str | PurePosixPath) -> Path:
    return tree / str(path).lstrip("/")


def nft_check_argv(path: Path) -> tuple[str, ...]:
    return ("nft", "-c", "-f", str(path))


def install_firewall(tree: Path, config: Appliance) -> list[str]:
    """The ruleset, its boot loader /etc/nftables.conf, and nftables.service enabled."""
    if not _inside(tree, UNIT_FILE).is_file():
        raise ArkboxError(f"{UNIT} is not in the root fs ({UNIT_FILE} is missing)",
                          hint="the base root fs lacks the nftables package: check "
                          "builder/pipeline/rootfs.py's BASE_PACKAGES and rebuild")
    rendered = _inside(tree, RENDERED)
    ensure_dir(rendered.parent, 0o700)
    candidate = rendered.with_name(rendered.name + ".new")
    write_if_changed(candidate, render_ruleset(config, "backup-server"), 0o600)
    # The same check first boot makes on an appliance: nothing is loaded by -c.
    run(nft_check_argv(candidate), timeout=60,
        hint="the rendered ruleset is invalid: a defect of arkbox; report it with the "
        "build log")
    changed = write_if_changed(rendered, candidate.read_bytes(), 0o600)
    candidate.unlink()
    changed |= write_if_changed(_inside(tree, BOOT_CONFIG), BOOT_CONFIG_CONTENT, 0o644)
    changed |= write_if_changed(_inside(tree, DROP_IN), DROP_IN_CONTENT, 0o644)
    changed |= atomic_symlink(_inside(tree, ENABLED_LINK), UNIT_FILE)
    summary = plan_for(config, "backup-server").summary()
    return [f"firewall: {summary}, loaded at boot by {UNIT}"] if changed else []


def _entries(path: Path) -> list[list[str]]:
    return [line.split(":") for line in path.read_text().splitlines()] if path.exists() else []


def _existing_ids(tree: Path, user: str) -> tuple[int, int] | None:
    """The account's (uid, gid), None when there is none; a system account is refused."""
    for fields in _entries(tree / "etc/passwd"):
        if fields[0] == user and len(fields) > 3:
            uid, gid = int(fields[2]), int(fields[3])
            if uid not in PERSON_IDS:
                raise BadInputError(
                    f"appliance.admin.user: {user!r} is an account of the image already "
                    f"(uid {uid}); the backup server's administrator needs its own",
                    hint="choose another name for appliance.admin.user")
            return uid, gid
    return None


def _append(path: Path, line: str) -> None:
    if path.exists():
        with path.open("a") as f:
            f.write(line + "\n")


def add_account(tree: Path, user: str) -> tuple[tuple[int, int], bool]:
    """The admin in passwd, group, shadow and gshadow, as useradd --user-group would make
    it, written as data; its (uid, gid) and whether it is new. The password field is "!":
    no password, keys only (sshd goes through PAM, which does not refuse it)."""
    if (ids := _existing_ids(tree, user)) is not None:
        return ids, False
    taken = {int(f[2]) for name in ("etc/passwd", "etc/group")
             for f in _entries(tree / name) if len(f) > 2 and f[2].isdigit()}
    uid = next(i for i in PERSON_IDS if i not in taken)
    _append(tree / "etc/passwd", f"{user}:x:{uid}:{uid}:{ADMIN_COMMENT}:/home/{user}:{ADMIN_SHELL}")
    _append(tree / "etc/group", f"{user}:x:{uid}:")
    # No last-change date: no password ageing applies to an account without a password.
    _append(tree / "etc/shadow", f"{user}:!:::::::")
    _append(tree / "etc/gshadow", f"{user}:!::")
    return (uid, uid), True


def _home(tree: Path, user: str, owner: tuple[int, int]) -> Path:
    """/home/USER, private (HOME_MODE 0700), with /etc/skel's files as useradd copies them."""
    home = ensure_dir(_inside(tree, f"/home/{user}"), 0o700)
    skel = tree / "etc/skel"
    for source in sorted(skel.iterdir()) if skel.is_dir() else []:
        target = home / source.name
        if source.is_file() and not target.exists():
            shutil.copy2(source, target)
            shutil.chown(target, *owner)
    shutil.chown(home, *owner)
    return home


def install_admin(tree: Path, config: Appliance) -> list[str]:
    """The admin account, its authorized_keys and its sudoers file."""
    admin = config.appliance.admin
    if not _inside(tree, SUDO).exists():
        raise ArkboxError(f"sudo is not in the root fs ({SUDO} is missing): the backup "
                          "server's admin could not run arkbox-borg-compact",
                          hint="keep sudo in builder/pipeline/build.py's IMAGE_PACKAGES")
    owner, created = add_account(tree, admin.user)
    home = _home(tree, admin.user, owner)
    ssh_dir = ensure_dir(home / ".ssh", 0o700)
    shutil.chown(ssh_dir, *owner)  # sshd's StrictModes refuses keys in a directory not the user's
    keys = authorized_keys_content(list(admin.ssh_keys), BUILT_AUTHORIZED_KEYS_HEADER)
    changes = [f"admin account {admin.user} (uid {owner[0]}), no password"] if created else []
    if write_if_changed(ssh_dir / "authorized_keys", keys, 0o600, owner):
        changes.append(f"admin {admin.user}: {len(admin.ssh_keys)} SSH key(s)")
    if write_if_changed(_inside(tree, sudoers_path(admin.user)), sudoers_content(admin.user),
                        0o440):
        changes.append(f"sudo for {admin.user}")
    return changes


def complete_gshadow(tree: Path) -> list[str]:
    """A gshadow line for every group that has none (the borg group is written as data
    without one): `grpck` (and Lynis's AUTH-9216) reports a group file that lacks it."""
    gshadow = tree / "etc/gshadow"
    if not gshadow.exists():
        return []
    known = {fields[0] for fields in _entries(gshadow)}
    missing = [f[0] for f in _entries(tree / "etc/group") if f[0] and f[0] not in known]
    for name in missing:
        _append(gshadow, f"{name}:!::")
    return [f"/etc/gshadow: {', '.join(missing)} added"] if missing else []


def no_engine_at_boot(tree: Path) -> list[str]:
    """A backup server runs no containers: nothing may pull the engine in at boot."""
    link = _inside(tree, IMAGES_UNIT_LINK)
    if not (link.is_symlink() or link.exists()):
        return []
    link.unlink()
    return ["arkbox-images.service not enabled on this role (it would start docker)"]


def install_hostname(tree: Path, config: Appliance) -> list[str]:
    """/etc/hostname and /etc/hosts from `appliance.hostname`, as step `system` writes them
    on an appliance: the image's own name ("arkbox") resolved nowhere, so sudo said
    "unable to resolve host" on every call of the admin."""
    fqdn = config.appliance.hostname
    if not write_host_names(tree / "etc", fqdn):
        return []
    return [f"host name {short_hostname(fqdn)} ({fqdn}) in /etc/hostname and /etc/hosts"]


def install_host(tree: Path, config: Appliance) -> list[str]:
    """Everything of this module, for `install_backup_server`."""
    return (install_hostname(tree, config) + install_firewall(tree, config)
            + install_admin(tree, config)
            + complete_gshadow(tree) + no_engine_at_boot(tree))
