"""The update bundle (issue 15): written with every file's sha256, read back byte by byte,
refused when damaged, truncated, for another box or a downgrade."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from builder.pipeline.update_bundle import write_bundle
from firstboot.core.errors import BadInputError
from firstboot.updates.bundle import INDEX_NAME, MANIFEST_PATH, BundleIndex, verify_bundle
from firstboot.updates.check import check_update

INSTALLER = str(Path(sys.executable).parent / "arkbox-installer")
EPOCH = 1_735_689_600
OLD_ARCHIVE = {"http://m/debian/dists/trixie-security": "Fri, 04 Dec 2026 03:54:29 UTC"}
NEW_ARCHIVE = {"http://m/debian/dists/trixie-security": "Sat, 05 Dec 2026 10:00:00 UTC"}


def manifest(version: str = "0.2.0", wiki: str = "b", archive: dict[str, str] | None = None,
             name: str = "box") -> dict[str, object]:
    return {"name": name, "role": "appliance", "arkbox_version": version,
            "config_sha256": "c" * 64, "archive_state": archive or NEW_ARCHIVE,
            "service_images": [{"name": "proxy", "id": "sha256:" + "a" * 64},
                               {"name": "dokuwiki", "id": "sha256:" + wiki * 64}]}


def lay_tree(root: Path, built: dict[str, object], installer: bytes = b"\x7fELF new") -> Path:
    """The arkbox-owned files of a root fs, and one file that is not arkbox's."""
    files = {
        "usr/local/lib/arkbox-installer/arkbox-installer": installer,
        "usr/local/lib/arkbox-installer/_internal/libpython.so": b"lib" * 1000,
        "etc/arkbox/appliance.yaml": b"appliance:\n  name: box\n",
        MANIFEST_PATH: json.dumps(built).encode(),
        "usr/share/arkbox/images/images.tar": bytes(range(256)) * 4096,
        "usr/share/arkbox/recipes/dokuwiki/recipe.yaml": b"name: dokuwiki\n",
        "etc/passwd": b"root:x:0:0::/root:/bin/sh\n",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "usr/local/sbin").mkdir(parents=True)
    (root / "usr/local/sbin/arkbox-installer").symlink_to(
        "/usr/local/lib/arkbox-installer/arkbox-installer")
    return root


def bundle(tmp_path: Path, built: dict[str, object] | None = None, **tree: bytes) -> Path:
    out = tmp_path / "box-update.tar"
    write_bundle(lay_tree(tmp_path / "new", built or manifest(), **tree), out,
                 BundleIndex(appliance="box", role="appliance", arkbox_version="0.2.0",
                             config_sha256="c" * 64, archive_state=NEW_ARCHIVE),
                 source_date_epoch=EPOCH)
    return out


def test_written_bundle_reads_back_with_only_arkbox_files(tmp_path: Path) -> None:
    verified = verify_bundle(bundle(tmp_path))
    assert sorted(verified.index.files) == [
        "etc/arkbox/appliance.yaml",
        "usr/local/lib/arkbox-installer/_internal/libpython.so",
        "usr/local/lib/arkbox-installer/arkbox-installer",
        "usr/share/arkbox/build-manifest.json",
        "usr/share/arkbox/images/images.tar",
        "usr/share/arkbox/recipes/dokuwiki/recipe.yaml"]
    assert verified.index.links == {
        "usr/local/sbin/arkbox-installer": "/usr/local/lib/arkbox-installer/arkbox-installer"}
    assert verified.manifest["name"] == "box"
    with tarfile.open(verified.path) as archive:
        names = archive.getnames()
        assert names[-1] == INDEX_NAME  # last: written after every file was hashed
        assert all(m.uid == 0 and m.mtime <= EPOCH for m in archive.getmembers())


def test_the_same_tree_gives_the_same_bytes(tmp_path: Path) -> None:
    first = bundle(tmp_path / "a").read_bytes()
    assert bundle(tmp_path / "b").read_bytes() == first


def test_truncated_bundle_is_refused(tmp_path: Path) -> None:
    whole = bundle(tmp_path)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(BadInputError) as refused:
        verify_bundle(cut)
    assert str(cut) in refused.value.message
    assert "truncated" in refused.value.message


def test_a_changed_byte_is_refused_and_named(tmp_path: Path) -> None:
    whole = bundle(tmp_path)
    data = bytearray(whole.read_bytes())
    at = data.index(bytes(range(256)))  # inside images.tar's content
    data[at + 7] ^= 0xFF
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(data))
    with pytest.raises(BadInputError) as refused:
        verify_bundle(damaged)
    assert "usr/share/arkbox/images/images.tar does not match its digest" in (
        refused.value.message)


def test_a_file_outside_what_arkbox_owns_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as archive:
        data = b"root::0:0::/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    with pytest.raises(BadInputError) as refused:
        verify_bundle(evil)
    assert "'etc/passwd' is outside what an update may replace" in refused.value.message


def box_root(tmp_path: Path, built: dict[str, object]) -> Path:
    return lay_tree(tmp_path / "box", built, installer=b"\x7fELF old")


def test_check_says_what_changes(tmp_path: Path) -> None:
    verified = verify_bundle(bundle(tmp_path))
    result = check_update(verified, box_root(tmp_path, manifest(version="0.1.0", wiki="0")),
                          allow_downgrade=False)
    assert result.images_changed == ["dokuwiki"] and result.images_unchanged == ["proxy"]
    assert result.installer_changed and not result.config_changed
    assert result.version == ("0.1.0", "0.2.0") and result.downgrade is None


@pytest.mark.parametrize(("box", "why"), [
    (manifest(name="other"), "is for appliance 'box'; this box is appliance 'other'"),
    (manifest(version="0.3.0"), "a downgrade: arkbox 0.2.0 is older than this box's 0.3.0"),
    (manifest(archive={"http://m/debian/dists/trixie-security":
                       "Sun, 06 Dec 2026 10:00:00 UTC"}),
     "a downgrade: its Debian archive (Sat, 05 Dec 2026 10:00:00 UTC) is older"),
])
def test_another_box_or_a_downgrade_is_refused(tmp_path: Path, box: dict[str, object],
                                               why: str) -> None:
    verified = verify_bundle(bundle(tmp_path))
    with pytest.raises(BadInputError) as refused:
        check_update(verified, box_root(tmp_path, box), allow_downgrade=False)
    assert why in refused.value.message
    if "downgrade" in why:
        allowed = check_update(verified, box_root(tmp_path / "again", box),
                               allow_downgrade=True)
        assert allowed.downgrade is not None


def test_verify_update_command_exit_codes(tmp_path: Path) -> None:
    good = bundle(tmp_path)
    root = box_root(tmp_path, manifest(version="0.1.0", archive=OLD_ARCHIVE))
    ok = subprocess.run([INSTALLER, "verify-update", str(good), "--root", str(root)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "every file matches its sha256" in ok.stdout
    assert "arkbox 0.1.0 → 0.2.0" in ok.stdout
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:10000])
    refused = subprocess.run([INSTALLER, "verify-update", str(cut), "--root", str(root)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert "truncated" in refused.stderr and "hint:" in refused.stderr
    assert "Traceback" not in refused.stderr
