"""Disk layout, boot files and boot-code patching: pure functions, no image written."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import pytest

from builder.pipeline import disk, qcow2

IDS = disk.disk_ids("demo", 1735689600)
LAYOUT = disk.disk_layout(IDS, root_mib=1000)


def test_ids_are_stable_and_differ_by_name_and_epoch() -> None:
    assert disk.disk_ids("demo", 1735689600) == IDS
    assert disk.disk_ids("other", 1735689600).root_partuuid != IDS.root_partuuid
    assert disk.disk_ids("demo", 1).root_fs_uuid != IDS.root_fs_uuid
    assert len({IDS.disk_guid, IDS.bios_uuid, IDS.esp_uuid, IDS.root_partuuid,
                IDS.root_fs_uuid}) == 5
    assert len(IDS.esp_volume_id) == 8 and int(IDS.esp_volume_id, 16) >= 0


def test_partitions_are_mib_aligned_in_order_and_do_not_overlap() -> None:
    parts = LAYOUT.partitions
    assert [p.number for p in parts] == [1, 2, 3]
    for p in parts:
        assert p.start % disk.SECTORS_PER_MIB == 0 and p.size % disk.SECTORS_PER_MIB == 0
    for a, b in itertools.pairwise(parts):
        assert a.start + a.size <= b.start
    assert LAYOUT.bios.start == disk.SECTORS_PER_MIB  # after the primary GPT
    assert LAYOUT.root.size == 1000 * disk.SECTORS_PER_MIB
    # room for the 33-sector backup GPT after the last partition
    assert LAYOUT.total_sectors - (LAYOUT.root.start + LAYOUT.root.size) >= 33


def test_root_is_last_with_the_discoverable_root_type() -> None:
    assert LAYOUT.partitions[-1] is LAYOUT.root
    assert LAYOUT.root.type_guid == disk.ROOT_X86_64_TYPE
    assert LAYOUT.bios.type_guid == disk.BIOS_BOOT_TYPE
    assert LAYOUT.esp.type_guid == disk.ESP_TYPE


def test_too_small_root_is_refused() -> None:
    with pytest.raises(ValueError):
        disk.disk_layout(IDS, root_mib=10)


def test_root_size_adds_overhead_and_headroom() -> None:
    used = 600 * disk.MIB
    assert disk.root_size_mib(used, headroom_mib=0) > 600
    assert disk.root_size_mib(used, headroom_mib=512) == disk.root_size_mib(used, 0) + 512


def test_sfdisk_script_names_every_partition_with_its_uuid() -> None:
    script = disk.sfdisk_script(LAYOUT)
    assert script.startswith("label: gpt\n")
    assert f"label-id: {IDS.disk_guid}" in script
    for p in LAYOUT.partitions:
        assert f"start={p.start}, size={p.size}, type={p.type_guid}, uuid={p.uuid}" in script


def test_mkfs_ext4_fills_the_root_partition_at_its_offset() -> None:
    cmd = disk.mkfs_ext4_argv(Path("/o/x.raw"), LAYOUT, Path("/t"))
    extended = cmd[cmd.index("-E") + 1]
    assert f"offset={LAYOUT.root.offset}" in extended and "nodiscard" in extended
    # the image file is new and sparse: mkfs writes no zeros to it
    assert "assume_storage_prezeroed=1" in extended.split(",")
    assert cmd[cmd.index("-d") + 1] == "/t"
    assert cmd[cmd.index("-U") + 1] == IDS.root_fs_uuid
    assert int(cmd[-1]) * disk.EXT4_BLOCK == LAYOUT.root.size_bytes
    assert cmd[-2] == "/o/x.raw"


def test_esp_is_fat32_at_its_offset_and_filled_by_mtools() -> None:
    cmd = disk.mkfs_vfat_argv(Path("/o/x.raw"), LAYOUT)
    assert cmd[cmd.index("--offset") + 1] == str(LAYOUT.esp.start)
    assert cmd[cmd.index("-F") + 1] == "32"
    assert int(cmd[-1]) * 1024 == LAYOUT.esp.size_bytes
    copy = disk.esp_copy_argv(Path("/o/x.raw"), LAYOUT, Path("/t/core.efi"))
    assert f"/o/x.raw@@{LAYOUT.esp.offset}" in copy
    assert copy[-1] == "::/EFI/BOOT/BOOTX64.EFI"


def test_grub_images_use_the_trees_grub_and_the_root_partition_prefix() -> None:
    cmd = disk.grub_mkimage_argv(Path("/t"), "i386-pc", disk.CORE_IMG, ("biosdisk",))
    assert cmd[:3] == ("chroot", "/t", "grub-mkimage")
    assert cmd[cmd.index("-p") + 1] == "(,gpt3)/boot/grub"
    assert "--disable-shim-lock" not in cmd
    efi = disk.grub_mkimage_argv(Path("/t"), "x86_64-efi", disk.CORE_EFI, ("fat",))
    assert "--disable-shim-lock" in efi and efi[-1] == "fat"


def test_boot_files_point_at_the_root_partition_and_the_serial_console() -> None:
    cfg = disk.grub_cfg(IDS)
    assert f"root=PARTUUID={IDS.root_partuuid}" in cfg
    assert "console=ttyS0,115200n8" in cfg and "serial --unit=0" in cfg
    assert "linux /vmlinuz " in cfg and "initrd /initrd.img" in cfg
    tab = disk.fstab(IDS)
    assert f"PARTUUID={IDS.root_partuuid} / ext4" in tab and "x-systemd.growfs" in tab
    assert "Type=root" in disk.repart_root_conf()


def test_install_boot_files_writes_them_into_the_tree(tmp_path: Path) -> None:
    disk.install_boot_files(tmp_path, IDS)
    assert (tmp_path / disk.FSTAB).read_text() == disk.fstab(IDS)
    assert (tmp_path / disk.GRUB_CFG).read_text() == disk.grub_cfg(IDS)
    assert (tmp_path / disk.REPART_ROOT).exists()
    assert "!container" in (tmp_path / disk.REMOUNT_FS_DROPIN).read_text()


def test_boot_sector_points_at_core_and_keeps_the_partition_table() -> None:
    boot_img = bytes(range(256)) * 2
    mbr = bytes(440) + b"SIGN" + b"\0\0" + bytes([0xEE]) * 64 + b"\x55\xaa"
    sector = disk.boot_sector(boot_img, mbr, core_lba=2048)
    assert len(sector) == 512
    assert struct.unpack_from("<Q", sector, disk.BOOT_KERNEL_SECTOR)[0] == 2048
    assert sector[disk.BOOT_DRIVE_CHECK:disk.BOOT_DRIVE_CHECK + 2] == b"\x90\x90"
    assert sector[disk.BOOT_CODE_END:] == mbr[disk.BOOT_CODE_END:]
    assert sector[:disk.BOOT_KERNEL_SECTOR] == boot_img[:disk.BOOT_KERNEL_SECTOR]


def test_core_image_blocklist_names_the_following_sectors() -> None:
    core = bytes(512 * 3 + 100)
    placed = disk.core_image_at(core, core_lba=2048)
    assert len(placed) == 512 * 4
    start, count, segment = struct.unpack_from("<QHH", placed, 512 - disk.BLOCKLIST_SIZE)
    assert (start, count, segment) == (2049, 3, 0x820)


def test_rootfs_tar_is_reproducible_and_docker_importable() -> None:
    cmd = disk.rootfs_tar_argv(Path("/t"), Path("/o/x.tar"), 1735689600)
    for flag in ("--sort=name", "--numeric-owner", "--clamp-mtime", "--mtime=@1735689600",
                 "--xattrs", "--format=posix"):
        assert flag in cmd
    assert cmd[-1] == "."


def test_qcow2_is_compressed() -> None:
    cmd = qcow2.convert_argv(Path("/a.raw"), Path("/a.qcow2"))
    assert cmd[:2] == ("qemu-img", "convert") and "-c" in cmd
    assert cmd[cmd.index("-O") + 1] == "qcow2"
    # zstd in 2 MiB clusters: the fastest conversion measured, and the smallest file
    assert cmd[cmd.index("-o") + 1] == "compression_type=zstd,cluster_size=2M"
    assert "-W" not in cmd  # out-of-order writes would make the file's bytes vary
