"""bench/lynis.py hands the image's own network sysctls to the rig container."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_lynis", ROOT / "bench/lynis.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def rootfs_tar(tmp_path: Path, files: dict[str, str]) -> Path:
    tree = tmp_path / "tree"
    for name, text in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
    (tree / "usr").mkdir(parents=True, exist_ok=True)
    tar = tmp_path / "rootfs.tar"
    subprocess.run(["tar", "--create", f"--file={tar}", f"--directory={tree}", "--sort=name",
                    "."], check=True, timeout=60)
    return tar


def test_parse_reads_settings_as_systemd_sysctl_does() -> None:
    text = ("# comment\n; also a comment\n\nnet.ipv4.tcp_syncookies = 0\n"
            "-kernel.unprivileged_userns_clone = 0\nnet.ipv4.tcp_syncookies=1\nnot a setting\n")
    assert bench().parse_sysctl_conf(text) == {
        "net.ipv4.tcp_syncookies": "1", "kernel.unprivileged_userns_clone": "0"}


def test_only_the_images_per_namespace_network_settings_are_handed_on(tmp_path: Path) -> None:
    tar = rootfs_tar(tmp_path, {
        "etc/sysctl.d/10-first.conf": "net.ipv4.conf.all.rp_filter = 2\n",
        "etc/sysctl.d/90-arkbox.conf": ("net.ipv4.conf.all.rp_filter = 1\n"
                                        "net.ipv6.conf.all.accept_redirects = 0\n"
                                        "net.core.bpf_jit_harden = 2\nkernel.sysrq = 0\n"),
        "etc/sysctl.d/README.sysctl": "net.ipv4.ip_forward = 1\n",
    })
    assert bench().image_network_sysctls(tar) == {
        "net.ipv4.conf.all.rp_filter": "1", "net.ipv6.conf.all.accept_redirects": "0"}


def test_an_image_without_sysctl_files_gets_none(tmp_path: Path) -> None:
    tar = rootfs_tar(tmp_path, {"etc/hostname": "stock\n"})
    assert bench().image_network_sysctls(tar) == {}
    argv = bench().systemd_container_argv("img", "name", {})
    assert "--sysctl" in argv  # route_localnet only, for the inner dockerd
    assert argv.count("--sysctl") == 1
    given = bench().systemd_container_argv("img", "name", {"net.ipv4.tcp_syncookies": "1"})
    assert "net.ipv4.tcp_syncookies=1" in given and given.count("--sysctl") == 2


def test_the_rig_profile_skips_only_the_kernel_test_with_its_reason() -> None:
    module = bench()
    profile = module.rig_profile()
    skipped = [line.split("=", 1)[1] for line in profile.splitlines()
               if line.startswith("skip-test=")]
    assert skipped == ["KRNL-5830"]
    assert "# compares the running kernel" in profile  # each skip says why
    assert "KRNL-5830 (compares the running kernel" in module.skipped_note()
