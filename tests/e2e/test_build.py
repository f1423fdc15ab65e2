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
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from built import ROOT, Built, arkbox_build, built_appliance
from conftest import require

from builder.pipeline import archive_state, rootfs
from builder.pipeline.cache import cache_dir_from_env
from builder.pipeline.manifest import read_manifest
from builder.seed_disk import read_seed_partition, read_table
from firstboot.core.config import load_config
from firstboot.core.seed import PARTITION_LABEL, decode, needed_refs
from firstboot.updates.bundle import verify_bundle

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
                "arkbox-installer.tar", "arkbox-test-update.tar"}
    assert set(manifest.outputs) == expected
    for name in ("arkbox-installer.tar", "arkbox-test.qcow2", "arkbox-test-update.tar"):
        digest = hashlib.sha256((first.out / name).read_bytes()).hexdigest()
        assert manifest.outputs[name].sha256 == digest
    assert {i.name for i in manifest.service_images} == {
        "proxy", "mail", "radicale", "dokuwiki", "roundcube", "postgres"}
    # The archive each part was built from: the suite, its updates, its security archive.
    assert sorted(d.rsplit("/", 1)[-1] for d in manifest.archive_state) == [
        "trixie", "trixie-security", "trixie-updates"]
    assert all(re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} [\d:]{8} UTC", date)
               for date in manifest.archive_state.values()), manifest.archive_state
    assert all(i.archive_state == manifest.archive_state for i in manifest.service_images)
    assert manifest.packages["docker.io"] and manifest.packages["borgbackup"]
    compilers = [p for p in manifest.packages
                 if re.fullmatch(r"(gcc|g\+\+|cpp|clang|binutils|make)(-\d+)?", p)]
    assert compilers == []
    assert not any((first.out / n).name.startswith(".") for n in os.listdir(first.out))


def test_image_carries_installer_unit_config_and_images(first: Built) -> None:
    names = set(members_names(first.rootfs_tar))
    for path in ("usr/local/sbin/arkbox-installer", "usr/local/lib/arkbox-installer/_internal",
                 "usr/local/lib/arkbox-installer/arkbox-installer",
                 "etc/systemd/system/arkbox-firstboot.service",
                 "etc/systemd/system/multi-user.target.wants/arkbox-firstboot.service",
                 "etc/systemd/system/arkbox-images.service",
                 "etc/systemd/system/multi-user.target.wants/arkbox-images.service",
                 "etc/arkbox/appliance.yaml",
                 "usr/share/arkbox/images/images.tar", "usr/share/arkbox/build-manifest.json"):
        assert path in names or f"./{path}" in names, path
    # Secrets arrive per box in the seed: the image has the config and nothing else there.
    configs = sorted(n.removeprefix("./") for n in names
                     if n.removeprefix("./").startswith("etc/arkbox/"))
    assert configs == ["etc/arkbox/appliance.yaml"], configs
    with tarfile.open(first.rootfs_tar) as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if name.startswith("etc/arkbox/") and member.isfile():
                assert member.mode & 0o077 == 0, f"{name} is {oct(member.mode)}"
            assert not name.startswith("etc/ssh/ssh_host_"), "host keys must not be baked"
            assert not name.startswith("usr/share/man/man"), "no man pages"
            if name == "usr/local/sbin/arkbox-installer":  # the one-folder build's program
                assert member.linkname == "/usr/local/lib/arkbox-installer/arkbox-installer"


def debugfs_ls(raw: Path, path: str) -> list[str]:
    """The names in a directory of the raw image's root file system, read without mounting."""
    table = read_table(raw)
    root = table.named("root")
    assert root is not None, table
    device = f"{raw}?offset={root.start * table.sector_size}"
    listed = subprocess.run(["debugfs", "-R", f"ls -p {path}", device], capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    # -p: one "/inode/mode/uid/gid/name/size/" line per entry
    return [line.split("/")[5] for line in listed.stdout.splitlines()
            if line.startswith("/") and line.split("/")[5] not in (".", "..")]


def test_disk_holds_the_images_in_the_engines_data_root(first: Built) -> None:
    """First boot from the disk loads nothing: each image's config is in the data root, and
    the tarball is not on the disk (it is in the root fs tarball, for the rig)."""
    require(shutil.which("debugfs") is not None, "debugfs (e2fsprogs)")
    manifest = read_manifest(first.manifest)
    ids = {image.id.removeprefix("sha256:") for image in manifest.service_images}
    assert ids, manifest.service_images
    stored = debugfs_ls(first.out / "arkbox-test.raw",
                        "/var/lib/docker/image/overlay2/imagedb/content/sha256")
    assert ids <= set(stored), (ids, stored)
    assert set(debugfs_ls(first.out / "arkbox-test.raw", "/var/lib/docker")) == {
        "image", "overlay2"}
    assert debugfs_ls(first.out / "arkbox-test.raw", "/usr/share/arkbox/images") == []
    names = {n.removeprefix("./") for n in members_names(first.rootfs_tar)}
    assert "usr/share/arkbox/images/images.tar" in names
    assert not any(n.startswith("var/lib/docker/image") for n in names)
    stages = {s.name: s.note for s in manifest.stages}
    assert "images preloaded in /var/lib/docker" in stages["disk image"], stages


def test_installer_output_runs_where_it_is_unpacked(first: Built, tmp_path: Path) -> None:
    # As the operator would; tar, not tarfile: Debian 12's Python 3.11.2 has no extraction
    # filters, and a later Python's default filter is not what this test is about.
    subprocess.run(["tar", "-xf", str(first.installer_tar), "-C", str(tmp_path)], check=True,
                   timeout=120)
    program = tmp_path / "arkbox-installer" / "arkbox-installer"
    link = tmp_path / "bin" / "arkbox-installer"  # as /usr/local/sbin links to it
    link.parent.mkdir()
    link.symlink_to(program)
    for argv in ([str(program), "--version"], [str(link), "--version"]):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("arkbox-installer "), result.stdout


def test_update_bundle_checks_out_on_the_box_it_was_built_for(first: Built,
                                                              tmp_path: Path) -> None:
    """The frozen installer of the image reads the bundle whole and compares it with the
    box: the same build changes nothing; a truncated copy is refused (exit 2)."""
    bundle = first.out / "arkbox-test-update.tar"
    index = verify_bundle(bundle).index
    assert {"etc/arkbox/appliance.yaml", "usr/share/arkbox/images/images.tar",
            "usr/local/lib/arkbox-installer/arkbox-installer"} <= set(index.files)
    assert index.appliance == "arkbox-test" and index.archive_state
    root = tmp_path / "box"
    root.mkdir()
    subprocess.run(["tar", "-xf", str(first.rootfs_tar), "-C", str(root), "--wildcards",
                    "*usr/share/arkbox/build-manifest.json", "*usr/local/lib/arkbox-installer/*"],
                   check=True, timeout=300)
    program = str(root / "usr/local/lib/arkbox-installer/arkbox-installer")
    same = subprocess.run([program, "verify-update", str(bundle), "--root", str(root), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert same.returncode == 0, same.stderr
    result = json.loads(same.stdout)
    assert result["images_changed"] == [] and len(result["images_unchanged"]) == 6, result
    assert not result["installer_changed"] and not result["config_changed"], result
    cut = tmp_path / "cut.tar"
    with bundle.open("rb") as whole, cut.open("wb") as part:
        part.write(whole.read(64 << 20))
    refused = subprocess.run([program, "verify-update", str(cut), "--root", str(root)],
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "truncated" in refused.stderr and "Traceback" not in refused.stderr


def members_names(tar: Path) -> list[str]:
    with tarfile.open(tar) as archive:
        return archive.getnames()


def test_config_only_change_reuses_base_and_images(config_only_change: Built) -> None:
    stages = {s.name: s.note for s in read_manifest(config_only_change.manifest).stages}
    assert stages["base root fs (trixie)"].endswith("cached (inputs unchanged)"), stages
    assert "cached 6/6" in stages["service images"], stages
    assert stages["installer (PyInstaller)"] == "cached (inputs unchanged)", stages
    assert stages["engine data root"].endswith("cached (inputs unchanged)"), stages
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


def _bad_build(tmp_path: Path, mirror: str, path_env: str | None = None, *,
               archive_recorded: bool = True) -> tuple[int, str, Path]:
    """Build a config whose base root fs cannot be made; returns exit code, output, out dir.

    With `archive_recorded` the cache already holds the archive's state for that mirror
    (as after an earlier build), so the build gets as far as the base root fs."""
    if archive_recorded:
        dists = archive_state.release_dists("trixie", mirror, rootfs.SECURITY_MIRROR)
        (tmp_path / "cache").mkdir()
        (tmp_path / "cache" / archive_state.STATE_FILE).write_text(
            json.dumps(dict.fromkeys(dists, "Sat, 21 Nov 2026 09:15:44 UTC")))
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


def test_unreachable_mirror_fails_at_the_archive_state(tmp_path: Path, first: Built) -> None:
    code, output, out = _bad_build(tmp_path, "http://127.0.0.1:9/debian", archive_recorded=False)
    assert code == 1, output
    assert "✗ archive state" in output
    flat = " ".join(output.split())  # the console wraps long lines
    assert "could not read http://127.0.0.1:9/debian/dists/trixie/InRelease" in flat
    assert "hint:" in output and "Traceback" not in output
    assert sorted(p.name for p in out.iterdir()) == ["keep-me"]


def test_missing_tool_names_the_stage_and_what_to_install(tmp_path: Path, first: Built) -> None:
    code, output, out = _bad_build(tmp_path, "http://127.0.0.1:9/debian", path_env="/nonexistent")
    assert code == 1, output
    assert "mmdebstrap is not installed (root fs stage)" in output
    assert "hint: apt-get install mmdebstrap" in output
    assert sorted(p.name for p in out.iterdir()) == ["keep-me"]


# --- issue 14: a generic image, a private out/, the seed beside it ---------------------


def secret_needles(config_path: Path, role: str = "appliance") -> dict[str, bytes]:
    """Every value the config references (what a box of any role might need), and each
    long line of a multi-line one (a key leaked line by line is leaked too)."""
    config = load_config(config_path)
    needles: dict[str, bytes] = {}
    for _where, ref in config.secret_refs():
        assert ref.file is not None, "the default config keeps its secrets in files"
        value = (config.base_dir / ref.file).read_bytes().strip()
        needles[ref.file] = value
        for number, line in enumerate(value.splitlines()):
            if len(line) >= 20 and not line.startswith(b"-----"):
                needles[f"{ref.file} line {number + 1}"] = line
    needed = {str(ref.file) for ref in needed_refs(config, role)}
    assert needed <= set(needles), needed - set(needles)
    assert len(needles) >= 6, sorted(needles)
    assert all(len(v) >= 8 for v in needles.values())  # long enough not to match by chance
    return needles


def found_in(path: Path, needles: dict[str, bytes], chunk_size: int = 16 << 20) -> list[str]:
    """Which needles occur in the file's bytes; holes of a sparse file are skipped, and
    consecutive reads overlap so a value across a read boundary is found too."""
    overlap = max(len(v) for v in needles.values())
    hits: set[str] = set()
    with path.open("rb") as handle:
        fd, size, offset = handle.fileno(), os.fstat(handle.fileno()).st_size, 0
        while offset < size:
            try:
                offset = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # only holes are left
                break
            end = os.lseek(fd, offset, os.SEEK_HOLE)
            position = max(0, offset - overlap)
            while position < end:
                handle.seek(position)
                chunk = handle.read(chunk_size)
                hits |= {name for name, value in needles.items() if value in chunk}
                if len(chunk) < chunk_size:
                    break
                position += chunk_size - overlap
            offset = end
    return sorted(hits)


def test_no_secret_value_in_any_output_or_the_cache(first: Built, tmp_path: Path) -> None:
    needles = secret_needles(ROOT / "config/default.yaml")
    cache = cache_dir_from_env()
    assert cache.is_dir()
    in_cache = sorted(p for p in cache.rglob("*") if p.is_file() and not p.is_symlink())
    # A qcow2 is compressed (zstd): each, out/'s and the cache's of the last disk of each
    # name (builder/pipeline/qcow2.py), is read as the disk it is too.
    qcow2s = [first.qcow2, *(p for p in in_cache if p.suffix == ".qcow2")]
    unpacked = []
    for n, image in enumerate(qcow2s):
        raw = tmp_path / f"qcow2-{n}-as.raw"
        converted = subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)],
                                   capture_output=True, text=True, timeout=900)
        if converted.returncode != 0 and gone(image):
            continue
        assert converted.returncode == 0, converted.stderr
        unpacked.append(raw)
    scanned = [*sorted(first.out.iterdir()), *unpacked, *in_cache]
    assert {p.name for p in first.out.iterdir()} >= {
        "arkbox-test.raw", "arkbox-test.qcow2", "arkbox-test-rootfs.tar", "arkbox-installer.tar",
        "arkbox-test-update.tar",
        "build-manifest.json"}
    leaks: dict[str, list[str]] = {}
    for path in scanned:
        try:
            if hits := found_in(path, needles):
                leaks[str(path)] = hits
        except FileNotFoundError:
            assert gone(path)
    assert leaks == {}, f"secret values (named by their file) found in: {leaks}"
    # The scan finds a value where there is one, after a hole and across a read boundary.
    planted = tmp_path / "planted"
    with planted.open("wb") as handle:
        handle.seek(20 << 20)
        handle.write(b"\0" * ((16 << 20) - 5) + b"\n".join(needles.values()))
    hits = found_in(planted, needles)  # names only: a failure must not print a value
    assert hits == sorted(needles)
    log = first.log.read_text()
    seeded = len(needed_refs(load_config(ROOT / "config/default.yaml"), "appliance"))
    assert f"{seeded} secrets from the seed" in log and "secret files" not in log


def gone(path: Path) -> bool:
    """A cache file that another build on the same cache replaced while the scan ran (the
    cache is shared by every checkout on the machine): nothing can leak from it, and the
    scan goes on. Only cache files may go; out/ is this run's own."""
    return not path.exists() and cache_dir_from_env() in path.parents


def test_out_is_private(first: Built) -> None:
    assert (first.out.stat().st_mode & 0o777) == 0o700
    for path in first.out.iterdir():
        assert path.is_file() and not path.name.startswith("."), path  # no work dir left
        assert (path.stat().st_mode & 0o777) == 0o600, f"{path} is {oct(path.stat().st_mode)}"


def test_seed_into_a_copy_of_the_real_raw_image(first: Built, tmp_path: Path) -> None:
    raw = first.out / "arkbox-test.raw"
    before = (raw.stat().st_mtime_ns, raw.stat().st_size)
    out = tmp_path / "box1.raw"
    result = subprocess.run([str(Path(sys.executable).parent / "arkbox"), "seed",
                             str(ROOT / "config/default.yaml"), "--into", str(raw),
                             "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert (raw.stat().st_mtime_ns, raw.stat().st_size) == before
    digest = hashlib.sha256()
    with raw.open("rb") as handle:
        for block in iter(lambda: handle.read(16 << 20), b""):
            digest.update(block)
    assert digest.hexdigest() == read_manifest(first.manifest).outputs[raw.name].sha256
    assert (out.stat().st_mode & 0o777) == 0o600
    listed = json.loads(subprocess.run(["sfdisk", "-J", str(out)], capture_output=True,
                                       text=True, check=True, timeout=60).stdout)
    partitions = listed["partitiontable"]["partitions"]
    assert partitions[-1].get("name") == PARTITION_LABEL and partitions[-1]["size"] == 2048
    assert read_table(out).partitions[:-1] == read_table(raw).partitions
    seed = decode(read_seed_partition(out), str(out))
    config = load_config(ROOT / "config/default.yaml")
    assert seed.config_sha256 == read_manifest(first.manifest).config_sha256
    assert sorted(seed.secrets) == sorted(
        f"file:{r.file}" for r in needed_refs(config, "appliance"))


def test_backup_server_role_from_the_appliance_config_carries_none_of_its_secrets(
    first: Built, tmp_path: Path
) -> None:
    built = Built(tmp_path / "out", tmp_path / "build.log")
    result = arkbox_build(ROOT / "config/default.yaml", built.out, built.log,
                          "--role", "backup-server")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0 secrets from the seed" in built.log.read_text()
    outputs = sorted(built.out.iterdir())
    assert any(p.name.endswith("-rootfs.tar") for p in outputs)
    needles = secret_needles(ROOT / "config/default.yaml", "backup-server")
    leaks = {str(p): hits for p in outputs if (hits := found_in(p, needles))}
    assert leaks == {}, leaks
