"""Bootable disk images (raw, qcow2) and the `docker import`-able tarball of one root fs tree.

The disk is made without mounting anything: sfdisk writes a GPT into the image
file, `mkfs.ext4 -d TREE -E offset=…` fills the root partition straight from the
tree, the ESP is formatted at its offset by `mkfs.vfat --offset` and filled with
mtools, and the BIOS boot code is placed with plain file writes (what
grub-bios-setup would do, without its need for a block device).

    sector 0        protective MBR carrying GRUB's boot.img code
    1 MiB   (1 MiB) BIOS boot partition: GRUB's i386-pc core.img
    2 MiB  (64 MiB) EFI system partition: \\EFI\\BOOT\\BOOTX64.EFI (GRUB x86_64-efi)
    66 MiB (rest)   root, ext4, GPT type "Linux root (x86-64)"; grows at first boot

Both GRUB images carry every module they need and the prefix `(,gpt3)/boot/grub`
(partition 3 of the disk they were loaded from), so BIOS and UEFI read the same
/boot/grub/grub.cfg, which boots the /vmlinuz and /initrd.img symlinks that
Debian's kernel packages keep current. See docs/disk-image.md.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from builder.pipeline.cache import digest_file
from builder.pipeline.hashed_output import command_output_to_file
from builder.pipeline.qcow2 import write_qcow2
from firstboot.core.errors import ArkboxError
from firstboot.core.execute import run

SECTOR = 512
MIB = 1024 * 1024
SECTORS_PER_MIB = MIB // SECTOR
EXT4_BLOCK = 4096

BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
# "Linux root (x86-64)" of the Discoverable Partitions Specification: systemd-repart
# finds it by this type (Type=root) when it grows the partition at first boot.
ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"

BIOS_BOOT_MIB = 1
ESP_MIB = 64
ROOT_PARTITION_NUMBER = 3
GRUB_PREFIX = f"(,gpt{ROOT_PARTITION_NUMBER})/boot/grub"
ROOT_LABEL = "arkbox-root"
ESP_LABEL = "ARKBOX-ESP"

# GRUB's i386-pc boot sector (boot.img) layout, from GRUB's include/grub/i386/pc/boot.h.
BOOT_KERNEL_SECTOR = 0x5C  # u64 LBA of core.img's first sector
BOOT_DRIVE_CHECK = 0x66  # a 2-byte jmp; NOPs make boot.img force a hard-disk drive number
BOOT_CODE_END = 0x1B8  # boot.img code ends where the disk signature and partition table start
BLOCKLIST_SIZE = 12  # diskboot.img's last entry: u64 start LBA, u16 sectors, u16 segment
KERNEL_LOAD_SEGMENT = 0x820  # where diskboot loads the rest of core.img

# Every module the GRUB images need, built in: nothing is loaded from disk at boot,
# so a later grub package upgrade on the server cannot mismatch the boot code.
GRUB_MODULES_COMMON: tuple[str, ...] = (
    "part_gpt", "ext2", "normal", "linux", "boot", "configfile", "search",
    "search_fs_uuid", "echo", "test", "cat", "ls", "sleep", "serial", "terminal",
    "reboot", "halt", "gzio", "loadenv",
)
GRUB_MODULES_BIOS: tuple[str, ...] = ("biosdisk",)
GRUB_MODULES_EFI: tuple[str, ...] = ("efi_gop", "all_video", "fat")

# Where the images are written inside the tree (as grub-install would).
CORE_IMG = "boot/grub/i386-pc/core.img"
CORE_EFI = "boot/grub/x86_64-efi/core.efi"
GRUB_CFG = "boot/grub/grub.cfg"
FSTAB = "etc/fstab"
REPART_ROOT = "etc/repart.d/50-arkbox-root.conf"
REMOUNT_FS_DROPIN = "etc/systemd/system/systemd-remount-fs.service.d/arkbox-not-in-container.conf"

DEFAULT_HEADROOM_MIB = 512
# Timeouts: far above what each takes on a loaded 2-core build machine (seconds).
QUICK_TIMEOUT_S = 120
MKFS_TIMEOUT_S = 900
TAR_TIMEOUT_S = 900
TOOLS = ("sfdisk", "mkfs.ext4", "mkfs.vfat", "mmd", "mcopy", "qemu-img", "chroot", "tar")
_UUID_NAMESPACE = uuid.UUID("8d3f1c2e-5b7a-4e0f-9a61-2c4d8e7b0a15")


@dataclass(frozen=True)
class DiskIds:
    """The identifiers of one image: derived from its name and SOURCE_DATE_EPOCH, so stable."""

    disk_guid: str
    bios_uuid: str
    esp_uuid: str
    root_partuuid: str
    root_fs_uuid: str
    esp_volume_id: str  # 8 hex digits


@dataclass(frozen=True)
class Partition:
    number: int
    name: str
    type_guid: str
    uuid: str
    start: int  # sectors
    size: int  # sectors

    @property
    def offset(self) -> int:
        return self.start * SECTOR

    @property
    def size_bytes(self) -> int:
        return self.size * SECTOR


@dataclass(frozen=True)
class DiskLayout:
    ids: DiskIds
    total_sectors: int
    bios: Partition
    esp: Partition
    root: Partition

    @property
    def size_bytes(self) -> int:
        return self.total_sectors * SECTOR

    @property
    def partitions(self) -> tuple[Partition, ...]:
        return (self.bios, self.esp, self.root)


@dataclass(frozen=True)
class DiskImages:
    raw: Path
    qcow2: Path
    layout: DiskLayout
    seconds: float
    sha256: dict[str, str]  # file name -> digest, taken while the images were written
    compressed: int  # clusters of the qcow2 compressed by this build
    clusters: int  # clusters of the qcow2 holding data


# --- pure functions: identifiers, layout, file contents, argv ---------------------------


def stable_uuid(seed: str, what: str) -> str:
    return str(uuid.uuid5(_UUID_NAMESPACE, f"{seed}/{what}"))


def disk_ids(name: str, source_date_epoch: int) -> DiskIds:
    """Identifiers that are the same for every build of `name` at `source_date_epoch`."""
    seed = f"{name}@{source_date_epoch}"
    return DiskIds(
        disk_guid=stable_uuid(seed, "disk"),
        bios_uuid=stable_uuid(seed, "bios"),
        esp_uuid=stable_uuid(seed, "esp"),
        root_partuuid=stable_uuid(seed, "root-part"),
        root_fs_uuid=stable_uuid(seed, "root-fs"),
        esp_volume_id=stable_uuid(seed, "esp-fs").replace("-", "")[:8].upper(),
    )


def root_size_mib(used_bytes: int, headroom_mib: int = DEFAULT_HEADROOM_MIB) -> int:
    """The root partition size for a tree of `used_bytes` (allocated in 4 KiB blocks).

    ext4 metadata (inode tables ~1.6%, 5% reserved blocks, journal up to 64 MiB)
    plus `headroom_mib` free space for first boot before the partition is grown.
    """
    return math.ceil(used_bytes * 1.08 / MIB) + 64 + headroom_mib


def disk_layout(ids: DiskIds, root_mib: int, esp_mib: int = ESP_MIB) -> DiskLayout:
    """GPT layout: 1 MiB gap, BIOS boot, ESP, root; 1 MiB at the end for the backup GPT."""
    if root_mib < 64:
        raise ValueError(f"root partition too small: {root_mib} MiB")
    bios = Partition(1, "bios", BIOS_BOOT_TYPE, ids.bios_uuid,
                     1 * SECTORS_PER_MIB, BIOS_BOOT_MIB * SECTORS_PER_MIB)
    esp = Partition(2, "esp", ESP_TYPE, ids.esp_uuid,
                    bios.start + bios.size, esp_mib * SECTORS_PER_MIB)
    root = Partition(ROOT_PARTITION_NUMBER, "root", ROOT_X86_64_TYPE, ids.root_partuuid,
                     esp.start + esp.size, root_mib * SECTORS_PER_MIB)
    total = root.start + root.size + SECTORS_PER_MIB
    return DiskLayout(ids, total, bios, esp, root)


def sfdisk_script(layout: DiskLayout) -> str:
    lines = [
        "label: gpt",
        f"label-id: {layout.ids.disk_guid}",
        "unit: sectors",
        "sector-size: 512",
        f"first-lba: {SECTORS_PER_MIB}",
        "",
    ]
    lines += [
        f"start={p.start}, size={p.size}, type={p.type_guid}, uuid={p.uuid}, name=\"{p.name}\""
        for p in layout.partitions
    ]
    return "\n".join(lines) + "\n"


def kernel_cmdline(ids: DiskIds) -> str:
    # The last console= gets /dev/console: systemd's status lines go to the serial port.
    # gpt_auto=no: mounts are what fstab says (no automount of the ESP at /efi).
    return (f"root=PARTUUID={ids.root_partuuid} ro console=tty0 console=ttyS0,115200n8"
            " systemd.gpt_auto=no")


def grub_cfg(ids: DiskIds) -> str:
    cmdline = kernel_cmdline(ids)
    return f"""\
# arkbox: written at image build time, read by both the BIOS and the UEFI GRUB image.
# /vmlinuz and /initrd.img are kept current by Debian's kernel packages: no update-grub.
serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1
terminal_input serial console
terminal_output serial console
set timeout=2
set default=0

menuentry 'Debian GNU/Linux (arkbox)' {{
    linux /vmlinuz {cmdline}
    initrd /initrd.img
}}

menuentry 'Debian GNU/Linux (arkbox, previous kernel)' {{
    linux /vmlinuz.old {cmdline}
    initrd /initrd.img.old
}}
"""


def fstab(ids: DiskIds) -> str:
    return f"""\
# arkbox: written at image build time. x-systemd.growfs grows the root file system
# to its partition at boot, after systemd-repart has grown the partition to the disk.
PARTUUID={ids.root_partuuid} / ext4 defaults,x-systemd.growfs,errors=remount-ro 0 1
"""


def repart_root_conf() -> str:
    return """\
# arkbox: at boot, systemd-repart grows the root partition (the last one) to the
# end of the disk; the BIOS boot partition and the ESP have no entry and are left alone.
[Partition]
Type=root
"""


def remount_fs_dropin() -> str:
    return """\
# arkbox: the same root fs runs as a container (NAME-rootfs.tar), where fstab's
# root device does not exist and the engine has mounted / already.
[Unit]
ConditionVirtualization=!container
"""


def sfdisk_argv(image: Path) -> tuple[str, ...]:
    return ("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--wipe", "always",
            str(image))


def mkfs_ext4_argv(image: Path, layout: DiskLayout, tree: Path) -> tuple[str, ...]:
    root = layout.root
    extended = ",".join((
        f"offset={root.offset}",
        f"hash_seed={layout.ids.root_fs_uuid}",
        # never discard: on an image file that would punch holes outside the partition
        "nodiscard",
        # The image file is new and sparse, so zero already: no 64 MiB of journal zeros
        # written, and the inode tables marked zeroed (the box's kernel skips zeroing them
        # at first mount). Needs e2fsprogs 1.47.0.
        "assume_storage_prezeroed=1",
    ))
    return ("mkfs.ext4", "-F", "-q", "-L", ROOT_LABEL, "-U", layout.ids.root_fs_uuid,
            "-b", str(EXT4_BLOCK), "-E", extended, "-d", str(tree), str(image),
            str(root.size_bytes // EXT4_BLOCK))


def mkfs_vfat_argv(image: Path, layout: DiskLayout) -> tuple[str, ...]:
    esp = layout.esp
    # One sector per cluster keeps a 64 MiB FAT32 above its 65525-cluster minimum (left
    # to itself, mkfs.fat sizes clusters by the whole image file); hidden sectors = start;
    # --invariant: no creation time in the volume label entry (reproducible ESP).
    return ("mkfs.vfat", "--invariant", "-F", "32", "-s", "1", "-h", str(esp.start),
            "-n", ESP_LABEL,
            "-i", layout.ids.esp_volume_id, "--offset", str(esp.start), str(image),
            str(esp.size_bytes // 1024))


def mtools_target(image: Path, layout: DiskLayout) -> str:
    return f"{image}@@{layout.esp.offset}"


def esp_mkdir_argv(image: Path, layout: DiskLayout) -> tuple[str, ...]:
    target = mtools_target(image, layout)
    return ("mmd", "-i", target, "::/EFI", "::/EFI/BOOT")


def esp_copy_argv(image: Path, layout: DiskLayout, efi_binary: Path) -> tuple[str, ...]:
    # -m keeps the source file's (clamped) mtime, for a reproducible ESP
    return ("mcopy", "-m", "-i", mtools_target(image, layout), str(efi_binary),
            "::/EFI/BOOT/BOOTX64.EFI")


def grub_mkimage_argv(tree: Path, platform: str, output: str,
                      modules: Sequence[str]) -> tuple[str, ...]:
    """Run the tree's own grub-mkimage (chroot) so boot code and modules match its GRUB."""
    argv = ["chroot", str(tree), "grub-mkimage", "-O", platform, "-o", "/" + output,
            "-d", f"/usr/lib/grub/{platform}",
            "-p", GRUB_PREFIX]
    if platform.endswith("-efi"):
        argv.append("--disable-shim-lock")
    return (*argv, *modules)


def rootfs_tar_argv(tree: Path, out_tar: Path, source_date_epoch: int) -> tuple[str, ...]:
    """GNU tar, reproducible: sorted, numeric owners, mtimes clamped, no atime/ctime."""
    return (
        "tar", "--create", f"--file={out_tar}", f"--directory={tree}",
        "--format=posix", "--sort=name", "--numeric-owner",
        "--xattrs", "--xattrs-include=*",
        f"--mtime=@{source_date_epoch}", "--clamp-mtime",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
        ".",
    )


def boot_sector(boot_img: bytes, mbr: bytes, core_lba: int) -> bytes:
    """Sector 0: GRUB's boot.img code pointing at core.img, with the protective MBR's
    disk signature and partition table kept."""
    if len(boot_img) != SECTOR or len(mbr) != SECTOR:
        raise ValueError("boot.img and the MBR must be one sector each")
    code = bytearray(boot_img[:BOOT_CODE_END])
    struct.pack_into("<Q", code, BOOT_KERNEL_SECTOR, core_lba)
    code[BOOT_DRIVE_CHECK:BOOT_DRIVE_CHECK + 2] = b"\x90\x90"
    return bytes(code) + mbr[BOOT_CODE_END:]


def core_image_at(core_img: bytes, core_lba: int) -> bytes:
    """core.img padded to whole sectors, its first sector (diskboot) told where the rest is."""
    sectors = math.ceil(len(core_img) / SECTOR)
    if sectors < 2:
        raise ValueError("core.img is too short to be a GRUB i386-pc core image")
    image = bytearray(core_img.ljust(sectors * SECTOR, b"\0"))
    struct.pack_into("<QHH", image, SECTOR - BLOCKLIST_SIZE,
                     core_lba + 1, sectors - 1, KERNEL_LOAD_SEGMENT)
    return bytes(image)


# --- the tree ------------------------------------------------------------------------


def tree_used_bytes(tree: Path) -> int:
    """Bytes the tree takes on ext4: files rounded up to blocks, one block per directory."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(tree):
        total += EXT4_BLOCK
        for name in filenames + [d for d in dirnames if Path(dirpath, d).is_symlink()]:
            st = Path(dirpath, name).lstat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += math.ceil(st.st_size / EXT4_BLOCK) * EXT4_BLOCK
    return total


def install_boot_files(tree: Path, ids: DiskIds) -> None:
    """Write the disk-specific files into the tree: fstab, grub.cfg, the repart rule.

    Call it before `rootfs_tar` if the tarball should be the very same root fs as the
    disk (the files are harmless in a container: systemd ignores fstab devices there
    and systemd-repart does not run).
    """
    files = {
        FSTAB: fstab(ids),
        GRUB_CFG: grub_cfg(ids),
        REPART_ROOT: repart_root_conf(),
        REMOUNT_FS_DROPIN: remount_fs_dropin(),
    }
    for rel, text in files.items():
        target = tree / rel
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        target.write_text(text)
        target.chmod(0o644)


def make_grub_images(tree: Path, on_line: Callable[[str], None] | None = None) -> None:
    """Build core.img (BIOS) and core.efi (UEFI) inside the tree with the tree's GRUB."""
    for rel, platform, extra in (
        (CORE_IMG, "i386-pc", GRUB_MODULES_BIOS),
        (CORE_EFI, "x86_64-efi", GRUB_MODULES_EFI),
    ):
        package = "grub-pc-bin" if platform == "i386-pc" else "grub-efi-amd64-bin"
        (tree / rel).parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        run(grub_mkimage_argv(tree, platform, rel, GRUB_MODULES_COMMON + extra),
            on_line=on_line, timeout=QUICK_TIMEOUT_S,
            hint=f"the root fs needs {package} (builder/rootfs.py BASE_PACKAGES)")


# --- writing the image ---------------------------------------------------------------


def write_raw_image(tree: Path, image: Path, layout: DiskLayout, source_date_epoch: int,
                    on_line: Callable[[str], None] | None = None) -> None:
    """Create `image` (sparse) with partition table, ESP, root fs and BIOS boot code."""
    with image.open("wb") as f:  # new and sparse: mkfs_ext4_argv counts on its zeros
        f.truncate(layout.size_bytes)
    run(sfdisk_argv(image), input_data=sfdisk_script(layout), timeout=QUICK_TIMEOUT_S)
    run(mkfs_vfat_argv(image, layout), timeout=QUICK_TIMEOUT_S)
    # mtools stamps new directories with SOURCE_DATE_EPOCH when it is set
    mtools_env = {"MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": str(source_date_epoch)}
    run(esp_mkdir_argv(image, layout), env=mtools_env, timeout=QUICK_TIMEOUT_S)
    run(esp_copy_argv(image, layout, tree / CORE_EFI), env=mtools_env, timeout=QUICK_TIMEOUT_S)
    run(mkfs_ext4_argv(image, layout, tree), env=mkfs_env(source_date_epoch), on_line=on_line,
        timeout=MKFS_TIMEOUT_S,
        hint="if it ran out of space, give a larger size_mib (or more headroom)")
    _write_bios_boot(tree, image, layout)


def _write_bios_boot(tree: Path, image: Path, layout: DiskLayout) -> None:
    core = (tree / CORE_IMG).read_bytes()
    if len(core) > layout.bios.size_bytes:
        raise ArkboxError(f"GRUB core.img ({len(core)} bytes) does not fit the BIOS boot "
                          f"partition ({layout.bios.size_bytes} bytes)")
    boot_img = (tree / "usr/lib/grub/i386-pc/boot.img").read_bytes()
    with image.open("r+b") as f:
        mbr = f.read(SECTOR)
        f.seek(0)
        f.write(boot_sector(boot_img, mbr, layout.bios.start))
        f.seek(layout.bios.offset)
        f.write(core_image_at(core, layout.bios.start))


def mkfs_env(source_date_epoch: int) -> dict[str, str]:
    # e2fsprogs takes its "now" (superblock, root and lost+found times) from
    # E2FSPROGS_FAKE_TIME (1.47.0) or SOURCE_DATE_EPOCH (1.47.1 and later)
    epoch = str(source_date_epoch)
    return {"E2FSPROGS_FAKE_TIME": epoch, "SOURCE_DATE_EPOCH": epoch}


def prepare_boot(tree: Path, name: str, *, source_date_epoch: int,
                 on_line: Callable[[str], None] | None = None) -> None:
    """Write the disk's boot files and both GRUB images into the tree (idempotent).

    Before the root fs tarball and the disk are made from the tree: both then hold the
    same files, and nothing writes to the tree while they read it at the same time.
    """
    install_boot_files(tree, disk_ids(name, source_date_epoch))
    make_grub_images(tree, on_line)
    _clamp_mtime(tree / CORE_EFI, source_date_epoch)


def build_disk_images(
    tree: Path,
    out_dir: Path,
    name: str,
    *,
    source_date_epoch: int,
    clusters: Path,
    scratch: Path,
    size_mib: int | None = None,
    headroom_mib: int = DEFAULT_HEADROOM_MIB,
    on_line: Callable[[str], None] | None = None,
) -> DiskImages:
    """Write `out_dir/NAME.raw` and `out_dir/NAME.qcow2` from the root fs `tree`, which
    `prepare_boot` has made ready; only reads it. `clusters` is the cache of the last qcow2
    (qcow2.py), `scratch` a folder for the clusters to compress. `size_mib` is the root
    partition's size; by default the tree's size plus `headroom_mib`. Needs root (the
    tree's GRUB ran in a chroot); no loop device, no mount.
    """
    _require(tree)
    started = time.monotonic()
    ids = disk_ids(name, source_date_epoch)
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    if size_mib is None:  # a walk of the whole tree (~1 s); the build checked space up front
        used = tree_used_bytes(tree)
        _require_free_space(out_dir, used * 2)
        size_mib = root_size_mib(used, headroom_mib)
    layout = disk_layout(ids, size_mib)
    raw, qcow2 = out_dir / f"{name}.raw", out_dir / f"{name}.qcow2"
    raw_tmp, qcow2_tmp = _partial(raw), _partial(qcow2)
    try:
        write_raw_image(tree, raw_tmp, layout, source_date_epoch, on_line)
        # The raw's sha256 in a thread meanwhile (hashlib runs without the GIL)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash-raw") as pool:
            raw_sha256 = pool.submit(digest_file, raw_tmp)
            written = write_qcow2(raw_tmp, qcow2_tmp, cache=clusters, work=scratch,
                                  on_line=on_line)
            digests = {raw.name: raw_sha256.result(), qcow2.name: written.sha256}
    except BaseException:
        raw_tmp.unlink(missing_ok=True)
        qcow2_tmp.unlink(missing_ok=True)
        raise
    raw_tmp.replace(raw)
    qcow2_tmp.replace(qcow2)
    return DiskImages(raw, qcow2, layout, time.monotonic() - started, digests,
                      written.compressed, written.clusters)


def rootfs_tar(tree: Path, out_tar: Path, *, source_date_epoch: int) -> str:
    """Pack `tree` as a reproducible, `docker import`-able tarball at `out_tar`, hashed
    while written; returns its sha256."""
    if not tree.is_dir():
        raise ArkboxError(f"root fs tree {tree} does not exist")
    out_tar.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(out_tar)
    try:
        sha256 = command_output_to_file(rootfs_tar_argv(tree, Path("-"), source_date_epoch),
                                        partial, timeout=TAR_TIMEOUT_S)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out_tar)
    return sha256


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _clamp_mtime(path: Path, epoch: int) -> None:
    if path.stat().st_mtime > epoch:
        os.utime(path, (epoch, epoch))


def _require(tree: Path) -> None:
    if not (tree / "usr").is_dir():
        raise ArkboxError(f"{tree} is not a root fs tree (no usr/)")
    if not (tree / CORE_IMG).is_file() or not (tree / CORE_EFI).is_file():
        raise ArkboxError(f"{tree} has no GRUB images: call prepare_boot first")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise ArkboxError(f"disk image stage: missing tools: {', '.join(missing)}",
                          hint="apt-get install fdisk e2fsprogs dosfstools mtools qemu-utils "
                               "(or run scripts/setup)")
    if os.geteuid() != 0:
        raise ArkboxError("disk image stage needs root (GRUB's images are made in a chroot "
                          "of the tree, whose files are owned by root)",
                          hint="run the build as root")


def _require_free_space(out_dir: Path, needed: int) -> None:
    free = shutil.disk_usage(out_dir).free
    if free < needed:
        raise ArkboxError(f"not enough free disk in {out_dir}: {free // MIB} MiB free, "
                          f"about {needed // MIB} MiB needed for the raw and qcow2 images",
                          hint="free some space or choose another --out")

