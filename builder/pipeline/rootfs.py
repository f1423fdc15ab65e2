"""The base root file system: Debian 13 (trixie) made by mmdebstrap, packed as a tarball.

The argv is built by pure functions (unit-tested without running anything); one
function runs it through `firstboot.core.execute.run`. Downloaded .debs are kept in a
cache outside the checkout (`/var/cache/arkbox/debs`) and synced in and out of
the chroot, so a rebuild downloads nothing new. `SOURCE_DATE_EPOCH` makes the
tarball reproducible for the same inputs and mirror content.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from builder.pipeline.cache import exclusive
from firstboot.core.errors import ArkboxError
from firstboot.core.execute import run

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://security.debian.org/debian-security"
DEB_CACHE_DIR = Path("/var/cache/arkbox/debs")
# The chroot's apt archive directory, where the deb cache is synced in and out.
CHROOT_ARCHIVES = "/var/cache/apt/archives"
HOSTNAME = "arkbox"
MMDEBSTRAP_TIMEOUT_S = 3600

# What every role gets. `extra_packages` adds to it; nothing here is a compiler.
BASE_PACKAGES: tuple[str, ...] = (
    # init, device manager, logind (clean ACPI shutdown from the VPS panel), time
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "libpam-systemd",
    "systemd-timesyncd",
    # networking: systemd-networkd (in `systemd`) does DHCP on the VPS NIC
    "systemd-resolved",
    "iproute2",
    "netbase",
    # the root partition grows to the disk at first boot (see docs/disk-image.md)
    "systemd-repart",
    "e2fsprogs",
    # sfdisk: first boot removes the seed partition from the table (docs/seed.md)
    "fdisk",
    # kernel and boot loader modules for both BIOS and UEFI (the images are made at disk time)
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    # what the appliance runs on
    "openssh-server",
    "openssh-sftp-server",
    "docker.io",
    "docker-cli",
    "apparmor",
    "nftables",
    "borgbackup",
    "ca-certificates",
    "unattended-upgrades",
    "kmod",
    "procps",
)

# dpkg drops these paths at unpack time: no documentation (copyright files stay),
# no man/info pages, no translations beyond C.UTF-8 (which libc-bin ships).
DPKG_PATH_FILTERS: tuple[str, ...] = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
    "path-exclude=/usr/share/doc-base/*",
    # AppArmor's ~100 profiles for desktop programs (browsers, chat clients...) have no
    # program to confine here and cost ~30 s of first boot under TCG; the framework stays,
    # and dockerd loads its own docker-default profile.
    "path-exclude=/etc/apparmor.d/*",
    "path-include=/etc/apparmor.d/abi/*",
    "path-include=/etc/apparmor.d/abstractions/*",
    "path-include=/etc/apparmor.d/tunables/*",
    "path-include=/etc/apparmor.d/local/*",
    "path-include=/etc/apparmor.d/disable/*",
    "path-include=/etc/apparmor.d/force-complain/*",
)

# Persisted in /etc/apt/apt.conf.d/99mmdebstrap, so later upgrades stay minimal too.
APT_OPTIONS: tuple[str, ...] = (
    'APT::Install-Recommends "false"',
    'APT::Install-Suggests "false"',
    'Acquire::Languages "none"',
)

_NOT_IN_CONTAINER = """\
# arkbox: in a container the engine configures the network; networkd would only
# wait for a DHCP lease that never comes.
[Unit]
ConditionVirtualization=!container
"""

# Files laid into the tree before the non-essential packages are installed
# (so initramfs-tools sees its config when the kernel's hook first runs).
BASE_FILES: Mapping[str, str] = {
    "etc/hostname": HOSTNAME + "\n",
    "etc/systemd/network/50-arkbox-dhcp.network": """\
# arkbox: DHCP (v4 and v6) on the VPS's wired NICs, outside containers only.
[Match]
Name=en* eth*
Virtualization=!container

[Network]
DHCP=yes
IPv6AcceptRA=yes
""",
    **{
        f"etc/systemd/system/{unit}.d/arkbox-not-in-container.conf": _NOT_IN_CONTAINER
        for unit in (
            "systemd-networkd.service",
            "systemd-networkd.socket",
            "systemd-networkd-persistent-storage.service",
            "systemd-networkd-wait-online.service",
        )
    },
    # Online as soon as one NIC is: a second, unconfigured private NIC must not
    # delay first boot by wait-online's 2-minute timeout.
    "etc/systemd/system/systemd-networkd-wait-online.service.d/arkbox-any.conf": """\
[Service]
ExecStart=
ExecStart=/usr/lib/systemd/systemd-networkd-wait-online --any
""",
    # Host keys must differ per server: they are deleted at build time and made on first boot.
    "etc/systemd/system/arkbox-ssh-hostkeys.service": """\
[Unit]
Description=Generate SSH host keys missing on this server (first boot)
Before=ssh.service ssh.socket
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=ssh.service ssh.socket multi-user.target
""",
    # One line on the console (the serial log of a VPS or of the boot test) once boot is done.
    "etc/systemd/system/arkbox-boot-report.service": """\
[Unit]
Description=Report on the console that boot reached multi-user.target
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "arkbox: reached multi-user.target; failed units: \
[$$(systemctl list-units --failed --plain --no-legend | cut -d" " -f1 | xargs)]"'
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
""",
    # A VPS has no swap to resume from; saying so keeps update-initramfs quiet and exact.
    "etc/initramfs-tools/conf.d/arkbox-resume": "RESUME=none\n",
}

# Run inside the finished chroot (as `sh -c` by mmdebstrap, $1 = the chroot).
CUSTOMIZE_COMMANDS: tuple[str, ...] = (
    'chroot "$1" systemctl enable systemd-networkd.service arkbox-ssh-hostkeys.service'
    ' arkbox-boot-report.service',
    # systemd 257's ssh generator would add sshd sockets on AF_VSOCK and AF_UNIX (and fails
    # on hosts without vsock): sshd listens where its own config says, nowhere else.
    'mkdir -p "$1/etc/systemd/system-generators"'
    ' && ln -sf /dev/null "$1/etc/systemd/system-generators/systemd-ssh-generator"',
    'rm -f "$1"/etc/ssh/ssh_host_*',
    # apt makes these _apt's, unless it could not drop privileges (a work dir that _apt
    # cannot enter): the same owner either way keeps the tarball reproducible
    'chroot "$1" chown _apt:root /var/cache/apt/archives/partial /var/lib/apt/lists/partial',
    # mmdebstrap copies the build host's resolv.conf; resolved's stub replaces it at boot.
    'if [ ! -L "$1/etc/resolv.conf" ]; then rm -f "$1/etc/resolv.conf"; fi',
)


@dataclass(frozen=True)
class RootfsResult:
    """A finished root fs tarball and what it took."""

    tarball: Path
    seconds: float
    size_bytes: int
    packages: tuple[str, ...]


def apt_sources(suite: str, mirror: str, security_mirror: str | None) -> tuple[str, ...]:
    """The sources.list lines of the image: the suite, its updates and its security archive."""
    lines = [f"deb {mirror} {suite} main", f"deb {mirror} {suite}-updates main"]
    if security_mirror:
        lines.append(f"deb {security_mirror} {suite}-security main")
    return tuple(lines)


def package_list(extra_packages: Sequence[str] = ()) -> tuple[str, ...]:
    """BASE_PACKAGES plus extras, without duplicates, in a stable order."""
    seen: dict[str, None] = dict.fromkeys(BASE_PACKAGES)
    for name in extra_packages:
        name = name.strip()
        if not name or name.startswith("-") or "," in name or " " in name:
            raise ArkboxError(f"not a package name: {name!r}",
                              hint="list one Debian package name per entry")
        seen.setdefault(name, None)
    return tuple(seen)


def deb_cache_hooks(cache_dir: Path) -> tuple[str, ...]:
    """mmdebstrap options that reuse and refill the .deb cache in `cache_dir`.

    mmdebstrap 1.3 (bookworm) accepts a non-empty archive directory as it is;
    newer versions want `--skip=download/empty`, which older ones ignore.
    """
    return (
        # keep the essential .debs in the chroot's archive so sync-out sees them
        "--skip=essential/unlink",
        "--skip=download/empty",
        f"--setup-hook=mkdir -p \"$1\"{CHROOT_ARCHIVES}",
        f"--setup-hook=sync-in {cache_dir} {CHROOT_ARCHIVES}",
        f"--customize-hook=sync-out {CHROOT_ARCHIVES} {cache_dir}",
    )


def mmdebstrap_argv(
    suite: str,
    mirror: str,
    packages: Sequence[str],
    out_tar: Path,
    *,
    files_dir: Path | None = None,
    cache_dir: Path | None = DEB_CACHE_DIR,
    security_mirror: str | None = SECURITY_MIRROR,
    variant: str = "apt",
) -> tuple[str, ...]:
    """The mmdebstrap command that writes the root fs of `packages` to `out_tar`.

    `files_dir` is a tree synced into / before the packages are installed.
    The cleanup stage removes apt lists and the apt cache from the result.
    """
    argv: list[str] = ["mmdebstrap", f"--variant={variant}", "--mode=root", "--format=tar"]
    argv += [f"--aptopt={opt}" for opt in APT_OPTIONS]
    argv += [f"--dpkgopt={opt}" for opt in DPKG_PATH_FILTERS]
    argv.append("--include=" + ",".join(packages))
    if cache_dir is not None:
        argv += deb_cache_hooks(cache_dir)
    if files_dir is not None:
        argv.append(f"--essential-hook=sync-in {files_dir} /")
    argv += [f"--customize-hook={cmd}" for cmd in CUSTOMIZE_COMMANDS]
    argv += [suite, str(out_tar)]
    argv += apt_sources(suite, mirror, security_mirror)
    return tuple(argv)


def mmdebstrap_env(source_date_epoch: int, tmpdir: Path) -> dict[str, str]:
    """The environment of the mmdebstrap run: reproducible timestamps, a roomy TMPDIR."""
    return {
        "SOURCE_DATE_EPOCH": str(source_date_epoch),
        "TMPDIR": str(tmpdir),
        "LC_ALL": "C.UTF-8",
    }


def write_files(files: Mapping[str, str], root: Path) -> None:
    """Write `files` (relative path -> text) under `root`, 0644, directories 0755."""
    for rel, text in sorted(files.items()):
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ValueError(f"file path must be relative and inside the tree: {rel}")
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        target.write_text(text)
        target.chmod(0o644)


@contextmanager
def locked(cache_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on `cache_dir` so two builds do not sync into it at once."""
    with exclusive(cache_dir / ".lock", str(cache_dir)):
        yield


def build_rootfs_tar(
    out_tar: Path,
    *,
    source_date_epoch: int,
    extra_packages: Sequence[str] = (),
    extra_files: Mapping[str, str] | None = None,
    suite: str = SUITE,
    mirror: str = MIRROR,
    security_mirror: str | None = SECURITY_MIRROR,
    cache_dir: Path | None = DEB_CACHE_DIR,
    work_dir: Path | None = None,
    on_line: Callable[[str], None] | None = None,
) -> RootfsResult:
    """Run mmdebstrap and leave the root fs tarball at `out_tar` (written to a temp name first).

    Needs root (mmdebstrap's root mode, chroot) and network access to `mirror`.
    """
    _require_tools()
    out_tar.parent.mkdir(parents=True, exist_ok=True)
    partial = out_tar.with_name(out_tar.name + ".partial")
    packages = package_list(extra_packages)
    files = {**BASE_FILES, **(extra_files or {})}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="arkbox-rootfs-", dir=work_dir) as tmp:
        # apt downloads as the unprivileged _apt user: it must be able to enter the chroot
        Path(tmp).chmod(0o755)
        files_dir = Path(tmp) / "files"
        write_files(files, files_dir)
        chroot_tmp = Path(tmp) / "chroot"
        chroot_tmp.mkdir()
        argv = mmdebstrap_argv(suite, mirror, packages, partial, files_dir=files_dir,
                               cache_dir=cache_dir, security_mirror=security_mirror)
        try:
            with _cache_lock(cache_dir):
                run(argv, env=mmdebstrap_env(source_date_epoch, chroot_tmp),
                    on_line=on_line or _ignore, timeout=MMDEBSTRAP_TIMEOUT_S,
                    hint="check the mirror is reachable and the disk has room; "
                         "the output above says which package or hook failed")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    partial.replace(out_tar)
    return RootfsResult(out_tar, time.monotonic() - started, out_tar.stat().st_size, packages)


def unpack_argv(tarball: Path, dest: Path) -> tuple[str, ...]:
    """GNU tar extraction that keeps owners, modes and file capabilities (xattrs)."""
    return ("tar", "--extract", f"--file={tarball}", f"--directory={dest}",
            "--preserve-permissions", "--same-owner", "--numeric-owner",
            "--xattrs", "--xattrs-include=*")


UNPACK_TIMEOUT_S = 900  # ~2 s for the appliance's 600 MB on a loaded 2-core machine


def unpack_rootfs_tar(tarball: Path, dest: Path) -> Path:
    """Unpack a root fs tarball into the empty (or new) directory `dest`. Needs root."""
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ArkboxError(f"{dest} is not empty: will not unpack a root fs over other files")
    run(unpack_argv(tarball, dest), timeout=UNPACK_TIMEOUT_S,
        hint="unpacking a root fs needs root and free disk")
    return dest


@contextmanager
def _cache_lock(cache_dir: Path | None) -> Iterator[None]:
    if cache_dir is None:
        yield
        return
    with locked(cache_dir):
        yield


def _ignore(_line: str) -> None:
    return None


def _require_tools() -> None:
    if shutil.which("mmdebstrap") is None:
        raise ArkboxError("mmdebstrap is not installed (root fs stage)",
                          hint="apt-get install mmdebstrap (or run scripts/setup)")
    if os.geteuid() != 0:
        raise ArkboxError("the root fs stage needs root (mmdebstrap --mode=root)",
                          hint="run the build as root")
