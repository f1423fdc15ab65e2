"""The mmdebstrap command is data: checked here without running anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.pipeline import rootfs
from firstboot.core.errors import ArkboxError

OUT = Path("/tmp/out/rootfs.tar")


def argv(**kwargs: object) -> tuple[str, ...]:
    params: dict[str, object] = {"files_dir": Path("/tmp/files")}
    params.update(kwargs)
    return rootfs.mmdebstrap_argv("trixie", "http://mirror/debian",
                                  rootfs.package_list(("jq",)), OUT, **params)  # type: ignore[arg-type]


def test_suite_target_and_sources_end_the_command() -> None:
    cmd = argv()
    i = cmd.index("trixie")
    assert cmd[i + 1] == str(OUT)
    assert cmd[i + 2:] == (
        "deb http://mirror/debian trixie main",
        "deb http://mirror/debian trixie-updates main",
        f"deb {rootfs.SECURITY_MIRROR} trixie-security main",
    )


def test_minimal_variant_tar_and_root_mode() -> None:
    cmd = argv()
    assert cmd[0] == "mmdebstrap"
    assert "--variant=apt" in cmd and "--format=tar" in cmd and "--mode=root" in cmd


def test_packages_are_one_include_with_base_and_extras() -> None:
    includes = [a for a in argv() if a.startswith("--include=")]
    assert len(includes) == 1
    names = includes[0].removeprefix("--include=").split(",")
    for required in ("systemd", "systemd-sysv", "openssh-server", "docker.io", "nftables",
                     "borgbackup", "ca-certificates", "unattended-upgrades",
                     "linux-image-cloud-amd64", "grub-pc-bin", "grub-efi-amd64-bin",
                     "systemd-repart", "systemd-resolved", "jq"):
        assert required in names
    assert "lynis" not in names
    assert not {"gcc", "make", "build-essential"} & set(names)


def test_package_list_dedups_and_keeps_order() -> None:
    names = rootfs.package_list(("jq", "systemd", "jq"))
    assert names[: len(rootfs.BASE_PACKAGES)] == rootfs.BASE_PACKAGES
    assert names.count("jq") == 1 and names.count("systemd") == 1


@pytest.mark.parametrize("bad", ["-o", "a,b", "two words", ""])
def test_bad_extra_package_names_are_refused(bad: str) -> None:
    with pytest.raises(ArkboxError):
        rootfs.package_list((bad,))


def test_docs_man_and_locales_are_filtered_by_dpkg() -> None:
    opts = [a.removeprefix("--dpkgopt=") for a in argv() if a.startswith("--dpkgopt=")]
    assert "path-exclude=/usr/share/doc/*" in opts
    assert "path-include=/usr/share/doc/*/copyright" in opts
    assert "path-exclude=/usr/share/man/*" in opts
    assert "path-exclude=/usr/share/locale/*" in opts
    # includes must come after the exclude they carve out of
    assert opts.index("path-include=/usr/share/doc/*/copyright") > opts.index(
        "path-exclude=/usr/share/doc/*")


def test_no_recommends_persisted_for_later_upgrades() -> None:
    assert '--aptopt=APT::Install-Recommends "false"' in argv()


def test_deb_cache_is_synced_in_and_out() -> None:
    cmd = argv(cache_dir=Path("/var/cache/arkbox/debs"))
    assert "--skip=essential/unlink" in cmd
    assert "--setup-hook=sync-in /var/cache/arkbox/debs /var/cache/apt/archives" in cmd
    assert "--customize-hook=sync-out /var/cache/apt/archives /var/cache/arkbox/debs" in cmd
    setup = [a for a in cmd if a.startswith("--setup-hook=")]
    assert setup[0].startswith("--setup-hook=mkdir"), "the archive dir must exist before sync-in"


def test_without_cache_no_sync_hooks() -> None:
    assert not [a for a in argv(cache_dir=None) if "sync-out" in a or "sync-in /var/cache" in a]


def test_files_are_laid_in_before_the_packages() -> None:
    assert "--essential-hook=sync-in /tmp/files /" in argv()


def test_host_keys_are_removed_and_units_enabled() -> None:
    hooks = [a for a in argv() if a.startswith("--customize-hook=")]
    assert any("ssh_host_" in h and "rm -f" in h for h in hooks)
    assert any("systemctl enable" in h and "systemd-networkd.service" in h for h in hooks)


def test_environment_is_reproducible() -> None:
    env = rootfs.mmdebstrap_env(1735689600, Path("/var/tmp/x"))
    assert env["SOURCE_DATE_EPOCH"] == "1735689600"
    assert env["TMPDIR"] == "/var/tmp/x"


def test_no_security_mirror_means_two_sources() -> None:
    assert len(rootfs.apt_sources("trixie", "http://m/debian", None)) == 2


def test_base_files_are_relative_and_networkd_skips_containers() -> None:
    assert all(not p.startswith("/") for p in rootfs.BASE_FILES)
    network = rootfs.BASE_FILES["etc/systemd/network/50-arkbox-dhcp.network"]
    assert "DHCP=yes" in network and "Virtualization=!container" in network


def test_write_files_refuses_paths_outside_the_tree(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        rootfs.write_files({"../escape": "x"}, tmp_path)
    rootfs.write_files({"etc/a/b.conf": "x\n"}, tmp_path)
    assert (tmp_path / "etc/a/b.conf").read_text() == "x\n"
    assert (tmp_path / "etc/a/b.conf").stat().st_mode & 0o777 == 0o644


def test_unpack_keeps_owners_and_capabilities() -> None:
    cmd = rootfs.unpack_argv(Path("/t.tar"), Path("/d"))
    assert "--same-owner" in cmd and "--numeric-owner" in cmd and "--xattrs" in cmd
    assert "--xattrs-include=*" in cmd
