"""A restore never writes outside its staging directory, and a backup never reads a device
or through a symlink: crafted archives and raced volumes, real borg.

Each archive is made with borg itself (`borg import-tar` of a tar written here) in a
local repository, the way a service racing the backup, or someone holding the key, could
shape one: a symlink `x -> VICTIM`, then `x/g`. The image's borg (1.4.0) and this
machine's (Debian 12: 1.2.4) both write VICTIM/g when they extract that; restore() must
refuse before extracting, name the item, and leave VICTIM as it was. No Docker: the
repository is a directory, borg runs locally (Borg.env points it there).

The backup tests play a live volume's owner: each swap happens when arkbox's walk has
looked at a path and before borg reads it (the walk is wrapped), the race a service read
with `consistency: none` or `dump` can run.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_tool

from firstboot.backup import backup as backup_module
from firstboot.backup import feed
from firstboot.backup.client import BackupError, Borg
from firstboot.backup.restore import Backup, restore, staging_dir
from firstboot.core.config import load_config
from firstboot.core.config.base import EXAMPLE_ADMIN_KEY
from firstboot.core.context import FirstbootContext, Paths

pytestmark = [pytest.mark.integration]
PASSPHRASE = "test passphrase, not a secret"
APPLIANCE = "arkbox-test"
COMMENT = json.dumps({"arkbox": "backup", "format": feed.FORMAT, "appliance": APPLIANCE,
                      "paused": [], "dumps": {}})


@dataclass
class LocalRepo:
    path: Path
    env: dict[str, str]

    def borg(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run(["borg", *args], env={**os.environ, **self.env}, cwd=cwd,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def import_tar(self, name: str, members: list[tuple[tarfile.TarInfo, bytes]],
                   tmp: Path) -> Backup:
        tar_path = tmp / f"{name}.tar"
        with tarfile.open(tar_path, "w") as tar:
            for info, data in members:
                info.size = len(data) if info.isreg() else 0
                tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
        self.borg("import-tar", "--comment", COMMENT, f"::{name}", str(tar_path))
        return Backup(name, "")


@pytest.fixture
def repo(tmp_path: Path) -> LocalRepo:
    require_tool("borg")
    env = {"BORG_REPO": str(tmp_path / "repo"), "BORG_PASSPHRASE": PASSPHRASE,
           "BORG_BASE_DIR": str(tmp_path / "borg-base"),
           "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no"}
    local = LocalRepo(tmp_path / "repo", env)
    local.borg("init", "--encryption=repokey-blake2")
    return local


@pytest.fixture
def box(tmp_path: Path, repo: LocalRepo, monkeypatch: pytest.MonkeyPatch
        ) -> Iterator[FirstbootContext]:
    config_dir = tmp_path / "config"
    (config_dir / "secrets").mkdir(parents=True)
    (config_dir / "secrets/borg-passphrase").write_text(PASSPHRASE + "\n")
    (config_dir / "appliance.yaml").write_text(textwrap.dedent(f"""\
        appliance:
          name: {APPLIANCE}
          domain: arkbox.test
          hostname: arkbox.test
          admin: {{ssh_keys: ["{EXAMPLE_ADMIN_KEY}"]}}
        mail: {{enabled: false}}
        services:
          wiki:
            image: "registry.example/dokuwiki:1"
            volumes: {{data: /var/lib/dokuwiki/data}}
            backup: {{consistency: none}}
        backup:
          repository: ssh://borg@backup.arkbox.test:22/./arkbox
          passphrase: {{file: secrets/borg-passphrase}}
        """))
    # The same borg runs as on a box, against a local repository instead of over SSH.
    monkeypatch.setattr(Borg, "env", lambda self: dict(repo.env))
    yield FirstbootContext(config=load_config(config_dir / "appliance.yaml"),
                           paths=Paths(tmp_path / "root"))


def _dir(name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, b""


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info, data


def _link(name: str, target: str, *, hard: bool = False) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = (tarfile.LNKTYPE if hard else tarfile.SYMTYPE), target
    return info, b""


def _a_box(specials: list[dict[str, object]]) -> list[tuple[tarfile.TarInfo, bytes]]:
    """What a real backup holds at least: the restore verifies these after extracting."""
    return [_dir("."), _file("manifest.json", json.dumps({"appliance": APPLIANCE}).encode()),
            _dir("config"), _file("config/appliance.yaml", b"appliance: {}\n"),
            _dir("secrets"), _dir(".backup"),
            _file(".backup/specials.json", json.dumps({"specials": specials}).encode()),
            _dir("volumes"), _dir("volumes/wiki"), _dir("volumes/wiki/data")]


def _nothing_written(victim: Path, ctx: FirstbootContext) -> None:
    assert sorted(p.name for p in victim.iterdir()) == ["keep"]
    assert (victim / "keep").read_text() == "untouched"
    assert not staging_dir(ctx.paths).exists()
    assert not ctx.paths.data.exists()


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    target = tmp_path / "victim"
    target.mkdir()
    (target / "keep").write_text("untouched")
    return target


def test_an_item_below_an_archived_symlink_refuses_the_archive(
        box: FirstbootContext, repo: LocalRepo, victim: Path, tmp_path: Path) -> None:
    backup = repo.import_tar(f"{APPLIANCE}-2026-12-05T010000Z", [
        *_a_box([]), _link("volumes/wiki/data/x", str(victim)),
        _file("volumes/wiki/data/x/g", b"planted"),
        _link("volumes/wiki/data/y", "volumes/wiki/data/x/keep", hard=True)], tmp_path)
    with pytest.raises(BackupError) as refused:
        restore(box, backup)
    message = refused.value.message
    assert "refusing to restore" in message
    assert "volumes/wiki/data/x/g: below 'volumes/wiki/data/x', which the archive holds as " \
           "a symlink" in message, message
    assert "volumes/wiki/data/y: below 'volumes/wiki/data/x'" in message  # the hard link
    assert refused.value.hint and "--archive" in refused.value.hint
    _nothing_written(victim, box)


def test_a_volume_that_is_a_symlink_refuses_the_archive(
        box: FirstbootContext, repo: LocalRepo, victim: Path, tmp_path: Path) -> None:
    members = [m for m in _a_box([]) if m[0].name != "volumes/wiki/data"]
    backup = repo.import_tar(f"{APPLIANCE}-2026-12-05T020000Z",
                             [*members, _link("volumes/wiki/data", str(victim))], tmp_path)
    with pytest.raises(BackupError, match="volumes/wiki/data: a symlink where arkbox keeps a "
                                          "directory"):
        restore(box, backup)
    _nothing_written(victim, box)


def test_a_specials_entry_below_an_archived_symlink_refuses_the_archive(
        box: FirstbootContext, repo: LocalRepo, victim: Path, tmp_path: Path) -> None:
    specials = [{"path": "volumes/wiki/data/x/nftables.service", "kind": "symlink",
                 "target": "/dev/null", "mode": 0o777, "uid": 0, "gid": 0, "mtime_ns": 0},
                {"path": "volumes/wiki/data/x/pipe", "kind": "fifo", "mode": 0o600,
                 "uid": 0, "gid": 0, "mtime_ns": 0}]
    backup = repo.import_tar(f"{APPLIANCE}-2026-12-05T030000Z", [
        *_a_box(specials), _link("volumes/wiki/data/x", str(victim))], tmp_path)
    with pytest.raises(BackupError, match="'x' on its way is not a directory"):
        restore(box, backup)
    _nothing_written(victim, box)


def test_a_safe_archive_restores_with_its_symlinks_and_specials(
        box: FirstbootContext, repo: LocalRepo, victim: Path, tmp_path: Path) -> None:
    specials = [{"path": "volumes/wiki/data/sub/pipe", "kind": "fifo", "mode": 0o600,
                 "uid": 0, "gid": 0, "mtime_ns": 0}]
    backup = repo.import_tar(f"{APPLIANCE}-2026-12-05T040000Z", [
        *_a_box(specials), _link("volumes/wiki/data/out", str(victim)),  # kept as a link
        _dir("volumes/wiki/data/sub"), _file("volumes/wiki/data/sub/a", b"a"),
        _link("volumes/wiki/data/sub/b", "volumes/wiki/data/sub/a", hard=True)], tmp_path)
    restore(box, backup)
    data = box.paths.data / "volumes/wiki/data"
    assert os.readlink(data / "out") == str(victim)
    assert (data / "sub/b").read_text() == "a"
    assert (data / "sub/pipe").is_fifo()
    assert sorted(p.name for p in victim.iterdir()) == ["keep"]


# ------------------------------------------------------------------ the backup's reads


def _race(monkeypatch: pytest.MonkeyPatch, swaps: dict[str, Callable[[], None]]) -> None:
    """Run swaps[rel] when the walk yields rel: after arkbox looked, before borg reads."""
    walk = feed.walk

    def racing_walk(data: Path, top: str, skip: frozenset[str], found: feed.Walked
                    ) -> Iterator[str]:
        for rel in walk(data, top, skip, found):
            if rel in swaps:
                swaps.pop(rel)()
            yield rel

    monkeypatch.setattr(backup_module.feed, "walk", racing_walk)


def _archived(repo: LocalRepo, archive: str) -> dict[str, dict[str, object]]:
    listing = repo.borg("list", "--json-lines", f"::{archive}")
    return {str(i["path"]): i for i in map(json.loads, listing.splitlines())}


def _volume(box: FirstbootContext) -> Path:
    volume = box.paths.data / "volumes/wiki/data"
    volume.mkdir(parents=True)
    (box.paths.data / "manifest.json").write_text("{}")
    return volume


def test_a_file_swapped_for_a_symlink_to_a_device_is_archived_as_the_symlink(
        box: FirstbootContext, repo: LocalRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    volume = _volume(box)
    (volume / "f").write_text("a file when arkbox looked")

    def swap() -> None:
        (volume / "f").unlink()
        (volume / "f").symlink_to("/dev/null")  # /dev/zero would never end

    _race(monkeypatch, {"volumes/wiki/data/f": swap})
    report = backup_module.run_backup(box, prune=False)
    item = _archived(repo, report.archive)["volumes/wiki/data/f"]
    assert (item["type"], item["source"]) == ("l", "/dev/null"), item  # not data read from it


def test_a_device_node_planted_after_the_walk_is_never_read(
        box: FirstbootContext, repo: LocalRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    volume = _volume(box)
    (volume / "disk").write_text("a file when arkbox looked")

    def plant() -> None:
        (volume / "disk").unlink()
        os.mknod(volume / "disk", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's

    _race(monkeypatch, {"volumes/wiki/data/disk": plant})
    with pytest.raises(BackupError, match=r"volumes/wiki/data/disk.*Permission denied"):
        backup_module.run_backup(box, prune=False)
    # borg commits the rest (its exit code 1 is a warning); the node is not in it.
    (archive,) = repo.borg("list", "--short").split()
    assert "volumes/wiki/data/disk" not in _archived(repo, archive)


def test_a_directory_swapped_for_a_symlink_is_not_read_through(
        box: FirstbootContext, repo: LocalRepo, monkeypatch: pytest.MonkeyPatch,
        victim: Path) -> None:
    volume = _volume(box)
    (volume / "d").mkdir()
    (volume / "d/keep").write_text("in the volume")

    def swap() -> None:
        shutil.rmtree(volume / "d")
        (volume / "d").symlink_to(victim)  # victim/keep: "untouched", outside the volume

    _race(monkeypatch, {"volumes/wiki/data/d/keep": swap})
    with pytest.raises(BackupError, match=r"volumes/wiki/data/d/keep.*symbolic links"):
        backup_module.run_backup(box, prune=False)
    (archive,) = repo.borg("list", "--short").split()
    items = _archived(repo, archive)
    assert "volumes/wiki/data/d/keep" not in items, items["volumes/wiki/data/d/keep"]
