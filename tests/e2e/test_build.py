"""`arkbox build` as an operator runs it: outputs, manifest, caching and reproducibility.

The session's build (tests/built.py) is compared with a second build whose
config differs only in the time zone: that rebuild must reuse the base root fs
and every service image (read from the manifest, not from timings), and its
root fs must equal the first one file by file except for the config itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from built import ROOT, Built, arkbox_build, built_appliance
from conftest import require

from builder.pipeline.manifest import read_manifest

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def first(docker_engine: None) -> Built:
    require(os.geteuid() == 0, "root (arkbox build)")
    return built_appliance()


@pytest.fixture(scope="module")
def config_only_change(first: Built, tmp_path_factory: pytest.TempPathFactory) -> Built:
    work = tmp_path_factory.mktemp("rebuild")
    config_dir = work / "config"
    config_dir.mkdir()
    text = (ROOT / "config/default.yaml").read_text()
    assert "timezone: Etc/UTC" in text
    (config_dir / "appliance.yaml").write_text(text.replace("timezone: Etc/UTC",
                                                            "timezone: Europe/Berlin"))
    (config_dir / "secrets").symlink_to(ROOT / "config/secrets")
    built = Built(work / "out", work / "build.log")
    result = arkbox_build(config_dir / "appliance.yaml", built.out, built.log)
    assert result.returncode == 0, result.stderr[-3000:]
    return built


def members(tar: Path) -> dict[str, str]:
    """Path -> digest of content, mode, owner and mtime, for every member."""
    out: dict[str, str] = {}
    with tarfile.open(tar) as archive:
        for member in archive:
            h = hashlib.sha256(f"{member.mode}:{member.uid}:{member.gid}:{member.mtime}:"
                               f"{member.type!r}:{member.linkname}".encode())
            if member.isfile():
                f = archive.extractfile(member)
                assert f is not None
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
            out[member.name] = h.hexdigest()
    return out


def test_outputs_and_manifest_digests(first: Built) -> None:
    manifest = read_manifest(first.manifest)
    expected = {"arkbox-test.raw", "arkbox-test.qcow2", "arkbox-test-rootfs.tar",
                "arkbox-installer"}
    assert set(manifest.outputs) == expected
    for name in ("arkbox-installer", "arkbox-test.qcow2"):
        digest = hashlib.sha256((first.out / name).read_bytes()).hexdigest()
        assert manifest.outputs[name].sha256 == digest
    assert {i.name for i in manifest.service_images} == {
        "proxy", "mail", "radicale", "dokuwiki", "roundcube", "postgres"}
    assert manifest.packages["docker.io"] and manifest.packages["borgbackup"]
    compilers = [p for p in manifest.packages
                 if re.fullmatch(r"(gcc|g\+\+|cpp|clang|binutils|make)(-\d+)?", p)]
    assert compilers == []
    assert not any((first.out / n).name.startswith(".") for n in os.listdir(first.out))


def test_image_carries_installer_unit_config_and_images(first: Built) -> None:
    names = set(members_names(first.rootfs_tar))
    for path in ("usr/local/sbin/arkbox-installer", "etc/systemd/system/arkbox-firstboot.service",
                 "etc/systemd/system/multi-user.target.wants/arkbox-firstboot.service",
                 "etc/systemd/system/arkbox-images.service",
                 "etc/systemd/system/multi-user.target.wants/arkbox-images.service",
                 "etc/arkbox/appliance.yaml", "etc/arkbox/secrets/borg-passphrase",
                 "usr/share/arkbox/images/images.tar", "usr/share/arkbox/build-manifest.json"):
        assert path in names or f"./{path}" in names, path
    with tarfile.open(first.rootfs_tar) as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if name.startswith("etc/arkbox/") and member.isfile():
                assert member.mode & 0o077 == 0, f"{name} is {oct(member.mode)}"
            assert not name.startswith("etc/ssh/ssh_host_"), "host keys must not be baked"
            assert not name.startswith("usr/share/man/man"), "no man pages"


def members_names(tar: Path) -> list[str]:
    with tarfile.open(tar) as archive:
        return archive.getnames()


def test_config_only_change_reuses_base_and_images(config_only_change: Built) -> None:
    stages = {s.name: s.note for s in read_manifest(config_only_change.manifest).stages}
    assert stages["base root fs (trixie)"].endswith("cached (inputs unchanged)"), stages
    assert "cached 6/6" in stages["service images"], stages
    assert stages["installer (PyInstaller)"] == "cached (inputs unchanged)", stages
    log = config_only_change.log.read_text()
    assert "base root fs (trixie)" in log and "cached (inputs unchanged)" in log


def test_rebuild_differs_only_in_the_config(first: Built, config_only_change: Built) -> None:
    a, b = members(first.rootfs_tar), members(config_only_change.rootfs_tar)
    assert set(a) == set(b)
    differing = sorted(name for name in a if a[name] != b[name])
    # The config, and the in-image manifest that records its digest.
    assert differing == ["./etc/arkbox/appliance.yaml",
                         "./usr/share/arkbox/build-manifest.json"], differing
    manifest = json.loads((config_only_change.manifest).read_text())
    assert manifest["config_sha256"] != read_manifest(first.manifest).config_sha256


def _bad_build(tmp_path: Path, mirror: str, path_env: str | None = None) -> tuple[int, str, Path]:
    """Build a config whose base root fs cannot be made; returns exit code, output, out dir."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    text = (ROOT / "config/default.yaml").read_text()
    (config_dir / "appliance.yaml").write_text(
        text.replace("mirror: http://deb.debian.org/debian", f"mirror: {mirror}"))
    (config_dir / "secrets").symlink_to(ROOT / "config/secrets")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep-me").write_text("an earlier output")
    env = dict(os.environ)
    if path_env is not None:
        env["PATH"] = path_env
    arkbox = Path(sys.executable).parent / "arkbox"
    result = subprocess.run([str(arkbox), "build", str(config_dir / "appliance.yaml"),
                             "--out", str(out), "--cache", str(tmp_path / "cache")],
                            capture_output=True, text=True, env=env, timeout=900)
    return result.returncode, result.stdout + result.stderr, out


def test_failed_mirror_names_the_stage_and_writes_nothing(tmp_path: Path, first: Built) -> None:
    # Port 9 (discard) on loopback: nothing answers, the download fails at once.
    code, output, out = _bad_build(tmp_path, "http://127.0.0.1:9/debian")
    assert code == 1, output
    assert "✗ base root fs (trixie)" in output
    assert "mmdebstrap" in output and "hint:" in output
    assert "nothing was written to" in output
    assert "Traceback" not in output
    assert sorted(p.name for p in out.iterdir()) == ["keep-me"]


def test_missing_tool_names_the_stage_and_what_to_install(tmp_path: Path, first: Built) -> None:
    code, output, out = _bad_build(tmp_path, "http://127.0.0.1:9/debian", path_env="/nonexistent")
    assert code == 1, output
    assert "mmdebstrap is not installed (root fs stage)" in output
    assert "hint: apt-get install mmdebstrap" in output
    assert sorted(p.name for p in out.iterdir()) == ["keep-me"]
