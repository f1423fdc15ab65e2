"""Hardening of the appliance's root file system at build time.

`apply_hardening` lays the files of `image/hardening/` (a tree mirroring the
target; `*.j2` files are jinja2 templates rendered with StrictUndefined), edits
a few stock files as data (login.defs, the root password, set-uid bits), and
disables or masks the systemd units the role does not need. It returns one
line per change, for the build log. Why each item exists: docs/hardening.md.

The templates' variables (`template_values`) come from the validated config
(`vars_from_config`): the admin's user and SSH port (`appliance.admin`, or
`backup_server.port` for that role), the settings of `build.hardening`, the
role, and the accounts that may log in over SSH (the admin, plus the borg
account on a backup server).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2

from builder.pipeline.backup_server import BORG_USER
from firstboot.core.config.hardening import Hardening
from firstboot.core.errors import ArkboxError, BadInputError
from firstboot.core.execute import run
from firstboot.firewall_rules import ANY_V4, ANY_V6

if TYPE_CHECKING:
    from firstboot.core.config import Appliance

ROLES = ("appliance", "backup-server")
HARDENING_TREE = Path(__file__).resolve().parents[2] / "image" / "hardening"
TEMPLATE_SUFFIX = ".j2"

# Debian packages the hardening relies on, for the root fs stage's package list:
# confinement of containers (docker-default profile), a private $TMPDIR per login,
# services restarted after library upgrades, and a check of packaged files.
HARDENING_PACKAGES: tuple[str, ...] = ("apparmor", "libpam-tmpdir", "needrestart", "debsums")

# Accounts besides the admin that may log in over SSH, by role: the clients of a backup
# server log in as borg (their repository URLs say ssh://borg@...).
ROLE_SSH_USERS: Mapping[str, tuple[str, ...]] = {
    "appliance": (),
    "backup-server": (BORG_USER,),
}

FILE_MODE = 0o644
DIR_MODE = 0o755
# Files whose mode differs from FILE_MODE, by path in the target.
FILE_MODES: Mapping[str, int] = {
    # Only root reads sshd's policy (who may log in, from where).
    "etc/ssh/sshd_config.d/10-arkbox.conf": 0o600,
}
# Files laid only for some roles (path in the target -> roles).
ROLE_FILES: Mapping[str, frozenset[str]] = {
    "etc/docker/daemon.json": frozenset({"appliance"}),
    # Docker needs the legacy iptables module; a backup server filters with nftables alone.
    "etc/modprobe.d/arkbox-no-legacy-iptables.conf": frozenset({"backup-server"}),
}
# Files that configure something another package or stage provides: laid only when that
# path exists in the root fs, so a missing package leaves no stray configuration.
REQUIRES: Mapping[str, str] = {
    "etc/docker/daemon.json": "usr/sbin/dockerd",
    "etc/needrestart/conf.d/90-arkbox.conf": "usr/sbin/needrestart",
    "etc/systemd/resolved.conf.d/90-arkbox.conf": "usr/lib/systemd/systemd-resolved",
    "etc/systemd/system/arkbox-ssh-hostkeys.service.d/10-arkbox-hardening.conf":
        "etc/systemd/system/arkbox-ssh-hostkeys.service",
    "etc/default/debsums": "usr/bin/debsums",
    "etc/systemd/system/arkbox-debsums.service": "usr/bin/debsums",
    "etc/systemd/system/arkbox-debsums.timer": "usr/bin/debsums",
}

# /etc/login.defs settings (key, value): new files private to their owner's group,
# home directories private, and a password (should one ever be set) kept a day.
LOGIN_DEFS: tuple[tuple[str, str], ...] = (
    ("UMASK", "027"),
    ("HOME_MODE", "0700"),
    ("PASS_MIN_DAYS", "1"),
    ("ENCRYPT_METHOD", "YESCRYPT"),
)
LOCKED_ACCOUNTS: tuple[str, ...] = ("root",)
# Set-uid/set-gid programs nobody on an appliance needs: changing one's finger info or
# shell, group passwords, password-ageing queries, host-based SSH authentication.
SETID_DROPPED: tuple[str, ...] = (
    "usr/bin/chfn",
    "usr/bin/chsh",
    "usr/bin/gpasswd",
    "usr/bin/newgrp",
    "usr/bin/chage",
    "usr/bin/expiry",
    "usr/lib/openssh/ssh-keysign",
)
# Host keys baked into an image would be shared by every server made from it.
HOST_KEY_GLOB = "etc/ssh/ssh_host_*"

# Units the role does not need. Only those present in the root fs are touched.
DISABLED_UNITS: Mapping[str, tuple[str, ...]] = {
    # e2scrub checks ext4 through LVM snapshots; the image has no LVM.
    "appliance": ("e2scrub_all.timer", "e2scrub_reap.service"),
    # A backup server runs borg over SSH and no containers.
    "backup-server": ("e2scrub_all.timer", "e2scrub_reap.service",
                      "docker.service", "docker.socket", "containerd.service"),
}
# Units of the hardening tree to enable (when laid): the weekly check of package files.
ENABLED_UNITS: tuple[str, ...] = ("arkbox-debsums.timer",)
# Never wanted: a root shell on tty9 with no password, and a reboot on Ctrl-Alt-Del sent
# by a stray keystroke in the provider's web console.
MASKED_UNITS: tuple[str, ...] = ("debug-shell.service", "ctrl-alt-del.target")
# The root fs stage makes host keys with its own unit; Debian's first-boot generator
# would race it and make the weaker set (RSA 3072, ECDSA), so it is masked when ours exists.
ARKBOX_KEYGEN_UNIT = "arkbox-ssh-hostkeys.service"
DEBIAN_KEYGEN_UNIT = "sshd-keygen.service"
UNIT_DIRS = ("etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")


@dataclass(frozen=True)
class HardeningVars:
    """What the hardening templates are rendered from, for one appliance."""

    admin_user: str
    ssh_port: int
    settings: Hardening = field(default_factory=Hardening)
    # appliance.admin.allow_from: enforced by sshd on a backup server (see ssh_allow_users).
    admin_allow_from: tuple[str, ...] = (ANY_V4, ANY_V6)


@dataclass(frozen=True)
class TreeFile:
    """One file of the hardening tree and where it goes in the target."""

    source: Path
    target: str  # relative to the root fs, without the template suffix
    mode: int
    template: bool


def vars_from_config(config: Appliance, role: str) -> HardeningVars:
    """The hardening variables of a validated config (the model checked every value)."""
    admin = config.appliance.admin
    port = admin.ssh_port
    if role == "backup-server" and config.backup_server is not None:
        port = config.backup_server.port
    return HardeningVars(admin.user, port, config.build.hardening, tuple(admin.allow_from))


def ssh_allow_users(variables: HardeningVars, role: str) -> tuple[str, ...]:
    """sshd's AllowUsers: the admin, then the role's accounts. On a backup server the SSH
    port is open to all (its clients' addresses are not known), so the admin is let in
    only from `allow_from` here (USER@NETWORK); on an appliance the firewall does that."""
    admin: tuple[str, ...] = (variables.admin_user,)
    networks = variables.admin_allow_from
    if role == "backup-server" and not {ANY_V4, ANY_V6} <= set(networks):
        admin = tuple(f"{variables.admin_user}@{network}" for network in networks)
    return tuple(dict.fromkeys((*admin, *ROLE_SSH_USERS[role])))


def template_values(variables: HardeningVars, role: str) -> dict[str, object]:
    """The names the templates use: the settings, the role and who may log in over SSH."""
    if role not in ROLES:
        raise BadInputError(f"role: must be one of {', '.join(ROLES)}, got {role!r}")
    allow_users = ssh_allow_users(variables, role)
    return {
        **variables.settings.model_dump(),
        "role": role,
        "admin_user": variables.admin_user,
        "ssh_port": variables.ssh_port,
        "ssh_allow_users": allow_users,
    }


# --- the tree --------------------------------------------------------------------------


def tree_files(tree: Path, role: str) -> list[TreeFile]:
    """The files of `tree` that `role` gets, sorted, with their target paths and modes."""
    files = []
    for source in sorted(p for p in tree.rglob("*") if p.is_file()):
        relative = source.relative_to(tree).as_posix()
        template = relative.endswith(TEMPLATE_SUFFIX)
        target = relative.removesuffix(TEMPLATE_SUFFIX) if template else relative
        if role not in ROLE_FILES.get(target, frozenset(ROLES)):
            continue
        files.append(TreeFile(source, target, FILE_MODES.get(target, FILE_MODE), template))
    return files


def render(source: Path, values: Mapping[str, object]) -> str:
    """Render one template; an undefined variable is an error, not an empty string."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(source.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - configuration files, not HTML
    )
    try:
        return env.get_template(source.name).render(values)
    except jinja2.TemplateError as e:
        raise ArkboxError(
            f"hardening template {source}: {e}",
            hint="a template may use the names of template_values: a build.hardening "
            "setting, role, admin_user, ssh_port, ssh_allow_users",
        ) from e


def file_content(item: TreeFile, values: Mapping[str, object]) -> bytes:
    return render(item.source, values).encode() if item.template else item.source.read_bytes()


def write_file(rootdir: Path, target: str, content: bytes, mode: int) -> bool:
    """Write one file (atomically, via a temp name) unless it already has this content and mode.

    Returns whether anything changed.
    """
    dest = _inside(rootdir, target)
    if dest.is_file() and not dest.is_symlink() and dest.read_bytes() == content \
            and stat.S_IMODE(dest.stat().st_mode) == mode:
        return False
    _make_parents(rootdir, dest.parent)
    if dest.is_symlink():
        dest.unlink()  # never write through a link out of the tree
    partial = dest.with_name(dest.name + ".arkbox-tmp")
    partial.write_bytes(content)
    partial.chmod(mode)
    partial.replace(dest)
    return True


def _make_parents(rootdir: Path, directory: Path) -> None:
    missing = []
    while not directory.exists() and directory != rootdir:
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir(mode=DIR_MODE)
        path.chmod(DIR_MODE)  # mkdir's mode is filtered by the umask


def _inside(rootdir: Path, target: str) -> Path:
    if target.startswith("/") or ".." in Path(target).parts:
        raise ValueError(f"target path must be relative and inside the root fs: {target}")
    return rootdir / target


def lay_tree(rootdir: Path, variables: HardeningVars, role: str, tree: Path) -> list[str]:
    values = template_values(variables, role)
    changes = []
    for item in tree_files(tree, role):
        needed = REQUIRES.get(item.target)
        if needed is not None and not (rootdir / needed).exists():
            changes.append(f"skipped /{item.target}: /{needed} is not in the root fs")
            continue
        if write_file(rootdir, item.target, file_content(item, values), item.mode):
            changes.append(f"wrote /{item.target} ({item.mode:04o})")
    return changes


# --- stock files edited as data --------------------------------------------------------


def set_login_defs(text: str, settings: Iterable[tuple[str, str]]) -> str:
    """`text` (a login.defs) with each KEY set to its value.

    The first uncommented KEY line is replaced, later ones are dropped (login.defs
    reads the first); a missing KEY is appended. Comments are kept.
    """
    lines = text.splitlines()
    appended: list[str] = []
    for key, value in settings:
        wanted = f"{key}\t{value}"
        pattern = re.compile(rf"^\s*{re.escape(key)}\s")
        found = [i for i, line in enumerate(lines) if pattern.match(line + " ")]
        if not found:
            appended.append(wanted)
            continue
        lines[found[0]] = wanted
        for i in reversed(found[1:]):
            del lines[i]
    if appended:
        lines += ["", "# arkbox hardening (docs/hardening.md)", *appended]
    return "\n".join(lines) + "\n"


def lock_passwords(shadow: str, users: Sequence[str]) -> tuple[str, list[str]]:
    """`shadow` with the password of each of `users` locked ("!" prefixed, as `passwd -l`).

    Returns the new text and the users whose entry changed.
    """
    changed = []
    lines = shadow.splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if len(fields) > 1 and fields[0] in users and not fields[1].startswith("!"):
            fields[1] = "!" + fields[1]
            lines[i] = ":".join(fields)
            changed.append(fields[0])
    return "\n".join(lines) + "\n", changed


def id_names(table: str) -> dict[int, str]:
    """Numeric id -> name, from the text of an /etc/passwd or /etc/group."""
    names: dict[int, str] = {}
    for line in table.splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit():
            names.setdefault(int(fields[2]), fields[0])
    return names


def statoverride_line(owner: str, group: str, mode: int, path: str) -> str:
    """One line of dpkg's statoverride database (mode in octal, as dpkg writes it)."""
    return f"{owner} {group} {mode:o} /{path}"


def set_statoverrides(text: str, entries: Sequence[str]) -> str:
    """dpkg's statoverride text with `entries` added, replacing any for the same path."""
    paths = {entry.rsplit(" ", 1)[1] for entry in entries}
    kept = [line for line in text.splitlines() if line and line.rsplit(" ", 1)[-1] not in paths]
    return "\n".join([*kept, *entries]) + "\n"


def edit_login_defs(rootdir: Path) -> list[str]:
    path = rootdir / "etc/login.defs"
    if not path.is_file():
        raise ArkboxError(f"{path} is missing", hint="the root fs stage must install `login`")
    old = path.read_text()
    new = set_login_defs(old, LOGIN_DEFS)
    if new == old:
        return []
    path.write_text(new)
    return ["set /etc/login.defs " + ", ".join(f"{k} {v}" for k, v in LOGIN_DEFS)]


def lock_root(rootdir: Path) -> list[str]:
    path = rootdir / "etc/shadow"
    new, changed = lock_passwords(path.read_text(), LOCKED_ACCOUNTS)
    if not changed:
        return []
    mode = stat.S_IMODE(path.stat().st_mode)
    path.write_text(new)
    path.chmod(mode)
    return [f"locked the password of {', '.join(changed)} in /etc/shadow"]


def drop_setid_bits(rootdir: Path) -> list[str]:
    """Clear the set-uid/set-gid bits of SETID_DROPPED, recorded as dpkg statoverrides.

    The statoverride keeps the mode through package upgrades.
    """
    users = id_names((rootdir / "etc/passwd").read_text())
    groups = id_names((rootdir / "etc/group").read_text())
    entries, changes = [], []
    for path in SETID_DROPPED:
        target = rootdir / path
        if not target.is_file() or target.is_symlink():
            continue
        info = target.stat()
        mode = stat.S_IMODE(info.st_mode) & ~(stat.S_ISUID | stat.S_ISGID)
        entries.append(statoverride_line(users.get(info.st_uid, str(info.st_uid)),
                                         groups.get(info.st_gid, str(info.st_gid)), mode, path))
        if stat.S_IMODE(info.st_mode) != mode:
            target.chmod(mode)
            changes.append(f"cleared set-id bits of /{path}")
    database = rootdir / "var/lib/dpkg/statoverride"
    old = database.read_text() if database.exists() else ""
    new = set_statoverrides(old, entries)
    if entries and new != old:
        database.write_text(new)
        database.chmod(0o644)
    return changes


def remove_host_keys(rootdir: Path) -> list[str]:
    removed = sorted(rootdir.glob(HOST_KEY_GLOB))
    for key in removed:
        key.unlink()
    return [f"removed /{key.relative_to(rootdir)}" for key in removed]


# --- systemd units ---------------------------------------------------------------------


def systemctl_argv(rootdir: Path, verb: str, units: Sequence[str]) -> tuple[str, ...]:
    """`systemctl --root` acting on the unit files of an offline root fs."""
    return ("systemctl", f"--root={rootdir}", "--no-reload", verb, *units)


def unit_present(rootdir: Path, unit: str) -> bool:
    return any((rootdir / d / unit).exists() or (rootdir / d / unit).is_symlink()
               for d in UNIT_DIRS)


def is_masked(rootdir: Path, unit: str) -> bool:
    link = rootdir / "etc/systemd/system" / unit
    return link.is_symlink() and str(link.readlink()) == "/dev/null"


def units_to_disable(rootdir: Path, role: str) -> list[str]:
    return [u for u in DISABLED_UNITS[role] if unit_present(rootdir, u)]


def units_to_enable(rootdir: Path) -> list[str]:
    """ENABLED_UNITS laid in the root fs and not yet wanted by their target."""
    wants = rootdir / "etc/systemd/system/timers.target.wants"
    return [u for u in ENABLED_UNITS if unit_present(rootdir, u)
            and not (wants / u).is_symlink()]


def units_to_mask(rootdir: Path) -> list[str]:
    units = list(MASKED_UNITS)
    if unit_present(rootdir, ARKBOX_KEYGEN_UNIT) and unit_present(rootdir, DEBIAN_KEYGEN_UNIT):
        units.append(DEBIAN_KEYGEN_UNIT)
    return [u for u in units if not is_masked(rootdir, u)]


SYSTEMCTL_TIMEOUT_S = 120  # systemctl --root only edits links: seconds at most


def apply_units(rootdir: Path, role: str) -> list[str]:
    changes = []
    disable = units_to_disable(rootdir, role)
    if disable:
        result = run(systemctl_argv(rootdir, "disable", disable), timeout=SYSTEMCTL_TIMEOUT_S)
        # systemctl says "Removed ..." for each symlink it deleted, nothing when already off.
        if "Removed" in result.stderr + result.stdout:
            changes.append("disabled " + " ".join(disable))
    enable = units_to_enable(rootdir)
    if enable:
        run(systemctl_argv(rootdir, "enable", enable), timeout=SYSTEMCTL_TIMEOUT_S)
        changes.append("enabled " + " ".join(enable))
    mask = units_to_mask(rootdir)
    if mask:
        run(systemctl_argv(rootdir, "mask", mask), timeout=SYSTEMCTL_TIMEOUT_S)
        changes.append("masked " + " ".join(mask))
    return changes


# --- the stage -------------------------------------------------------------------------


def apply_hardening(
    rootdir: Path,
    variables: HardeningVars,
    role: str,
    *,
    tree: Path = HARDENING_TREE,
) -> list[str]:
    """Harden the unpacked root fs at `rootdir` for `role`; returns what changed, for the log.

    Idempotent: a second run on the same tree returns an empty list. Needs to own the
    files of `rootdir` (root, as the rest of the build) and `systemctl` on the build host.
    """
    if not (rootdir / "etc").is_dir():
        raise ArkboxError(f"{rootdir} is not an unpacked root fs (no etc/)",
                          hint="run the root fs stage first")
    changes = lay_tree(rootdir, variables, role, tree)
    changes += edit_login_defs(rootdir)
    changes += lock_root(rootdir)
    changes += drop_setid_bits(rootdir)
    changes += remove_host_keys(rootdir)
    changes += apply_units(rootdir, role)
    return changes

