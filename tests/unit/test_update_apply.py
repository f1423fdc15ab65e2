"""`arkbox-installer update` below a temp root (issue 15 item 3): the files swap, the backup
comes first, a failed apply rolls every file back, an interrupted update is undone later.

The box's `apply` and backup are stand-ins here (they act on the running system); the
rig test (tests/e2e/test_update.py) runs the real ones in a booted appliance.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from test_update_bundle import OLD_ARCHIVE, bundle, lay_tree, manifest

from firstboot.core.context import Paths
from firstboot.core.errors import ArkboxError, BadInputError
from firstboot.status_view import update_lines
from firstboot.updates import apply as apply_module
from firstboot.updates.apply import Applied, rollback_interrupted, update
from firstboot.updates.bundle import MANIFEST_PATH, verify_bundle
from firstboot.updates.record import load_record, update_status
from firstboot.updates.swap import stage, update_dir

SECRET = "etc/arkbox/secrets/borg-passphrase"
STALE = "usr/local/lib/arkbox-installer/_internal/only-in-the-old-build.so"


def old_box(root: Path) -> Paths:
    """A box on the previous build: another wiki image, an older archive, a secret the
    seed installed, and an installer file the new build no longer has."""
    lay_tree(root, manifest(wiki="a", archive=OLD_ARCHIVE), installer=b"\x7fELF old")
    (root / SECRET).parent.mkdir(parents=True)
    (root / SECRET).write_text("not in any bundle\n")
    (root / STALE).write_bytes(b"old")
    return Paths(root)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file's and link's content below root, but the update's own state."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if name.startswith("var/lib/arkbox"):
            continue
        if path.is_symlink():
            out[name] = "-> " + str(path.readlink())
        elif path.is_file():
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


class Box:
    """Stand-ins for the box's backup and `apply` that note what they saw."""

    def __init__(self, paths: Paths, apply_results: list[Applied]) -> None:
        self.paths, self.results = paths, apply_results
        self.calls: list[str] = []

    def backup(self, paths: Paths) -> str:
        self.calls.append(f"backup on {self.wiki()}")
        return "box-2026-12-06T10:00:00Z"

    def apply(self, paths: Paths, out: object) -> Applied:
        self.calls.append(f"apply on {self.wiki()}")
        return self.results.pop(0)

    def wiki(self) -> str:
        built = json.loads((self.paths.root / MANIFEST_PATH).read_text())
        return str(built["service_images"][1]["id"])[-1]


    def clean(self, paths: Paths, before: set[str], out: object) -> None:
        self.calls.append(f"clean {sorted(i[-1] for i in before)} on {self.wiki()}")


def run_update(box: Box, bundle_path: Path) -> int:
    return update(bundle_path, box.paths, out=lambda _: None, apply=box.apply,
                  backup=box.backup, clean=box.clean)


def test_an_update_backs_up_first_then_swaps_and_applies(tmp_path: Path) -> None:
    paths = old_box(tmp_path / "box")
    box = Box(paths, [Applied(True)])
    new = bundle(tmp_path)
    assert run_update(box, new) == 0
    # The previous build's image IDs (proxy and wiki: "a…" both) are handed to the
    # clean-up after the success, which removes those the new build does not name.
    assert box.calls == ["backup on a", "apply on b", "clean ['a'] on b"]
    root = paths.root
    assert (root / "usr/local/lib/arkbox-installer/arkbox-installer").read_bytes() == \
        b"\x7fELF new"
    assert not (root / STALE).exists()  # the installer folder is replaced whole
    assert (root / SECRET).read_text() == "not in any bundle\n"
    assert (root / "usr/local/sbin/arkbox-installer").is_symlink()
    record = load_record(paths)
    assert record is not None and record["result"] == "ok" and record["phase"] == "done"
    assert record["images_changed"] == ["dokuwiki"] and record["installer_changed"]
    assert record["backup_archive"] == "box-2026-12-06T10:00:00Z"
    assert not (update_dir(root) / "previous").exists()
    assert not (update_dir(root) / "next").exists()


def test_a_failed_apply_rolls_every_file_back_and_applies_the_old_build(tmp_path: Path
                                                                        ) -> None:
    paths = old_box(tmp_path / "box")
    before = tree_digest(paths.root)
    box = Box(paths, [Applied(False, "health: wiki unhealthy after 300 s", "see its log"),
                      Applied(True)])
    assert run_update(box, bundle(tmp_path)) == 1
    # The failed build's images (proxy "a…", wiki "b…") go to the clean-up, on the old build.
    assert box.calls == ["backup on a", "apply on b", "apply on a", "clean ['a', 'b'] on a"]
    assert tree_digest(paths.root) == before
    record = load_record(paths)
    assert record is not None and record["result"] == "rolled back"
    assert record["failure"] == "health: wiki unhealthy after 300 s; rolled back"
    shown = "\n".join(line.plain for line in update_lines(record))
    assert "update: rolled back · arkbox 0.2.0 → 0.2.0 (dokuwiki changed)" in shown
    assert "backup before it: box-2026-12-06T10:00:00Z" in shown
    assert "wiki unhealthy after 300 s; rolled back\n  hint: see its log" in shown
    assert not (update_dir(paths.root) / "previous").exists()


def test_a_failed_rollback_says_so(tmp_path: Path) -> None:
    paths = old_box(tmp_path / "box")
    before = tree_digest(paths.root)
    box = Box(paths, [Applied(False, "services: wiki would not start"),
                      Applied(False, "proxy: nginx -t failed")])
    assert run_update(box, bundle(tmp_path)) == 1
    assert box.calls[-1] == "apply on a"  # no clean-up: the box is on neither build
    assert tree_digest(paths.root) == before  # the files are back even so
    record = load_record(paths)
    assert record is not None and record["result"] == "failed"
    assert "previous build's apply failed too: proxy: nginx -t failed" in record["failure"]
    # The files are back: nothing is left to undo, so the next update is not refused.
    assert not (update_dir(paths.root) / "previous").exists()


def test_a_failed_backup_changes_nothing(tmp_path: Path) -> None:
    paths = old_box(tmp_path / "box")
    before = tree_digest(paths.root)
    box = Box(paths, [])

    def failing(_: Paths) -> str:
        raise ArkboxError("backup server backup.example cannot be reached", hint="check it")

    code = update(bundle(tmp_path), paths, out=lambda _: None, apply=box.apply,
                  backup=failing, clean=box.clean)
    assert code == 1 and box.calls == []
    assert tree_digest(paths.root) == before
    record = load_record(paths)
    assert record is not None and record["result"] == "failed"
    assert record["failure"] == ("backup server backup.example cannot be reached; "
                                 "nothing was changed")


def test_a_bundle_for_another_box_is_refused_before_anything(tmp_path: Path) -> None:
    paths = old_box(tmp_path / "box")
    before = tree_digest(paths.root)
    box = Box(paths, [])
    with pytest.raises(BadInputError, match="this box is appliance 'box'"):
        run_update(box, bundle(tmp_path, manifest(name="other")))
    assert box.calls == [] and tree_digest(paths.root) == before
    assert load_record(paths) is None


def test_the_same_build_is_nothing_to_do(tmp_path: Path) -> None:
    new = bundle(tmp_path)
    paths = Paths(tmp_path / "new")  # the very tree the bundle was made from
    box = Box(paths, [])
    assert run_update(box, new) == 0 and box.calls == []


def test_an_interrupted_update_is_refused_until_rolled_back(tmp_path: Path) -> None:
    paths = old_box(tmp_path / "box")
    before = tree_digest(paths.root)
    box = Box(paths, [])

    def power_cut(_paths: Paths, _out: object) -> Applied:
        raise KeyboardInterrupt  # the process ends here, as on a power loss

    with pytest.raises(KeyboardInterrupt):
        update(bundle(tmp_path), paths, out=lambda _: None, apply=power_cut,
               backup=box.backup, clean=box.clean)
    record = load_record(paths)
    assert record is not None and (record["result"], record["phase"]) == ("running", "apply")
    shown = update_status(paths)  # nobody holds the update's lock: it was cut off
    assert shown is not None and shown["result"] == "interrupted"
    assert shown["hint"] == ("the next boot rolls it back (arkbox-update-recover.service); "
                             "or now: arkbox-installer update --rollback")
    with pytest.raises(ArkboxError, match="cut off"):
        run_update(box, bundle(tmp_path / "again"))
    box.results = [Applied(True)]
    assert rollback_interrupted(paths, out=lambda _: None, apply=box.apply) == 0
    assert tree_digest(paths.root) == before
    record = load_record(paths)
    assert record is not None and record["result"] == "rolled back"
    assert record["failure"] == "cut off in its apply phase; rolled back"
    with pytest.raises(ArkboxError, match="nothing to roll back"):
        rollback_interrupted(paths, out=lambda _: None, apply=box.apply)
    assert rollback_interrupted(paths, out=lambda _: None, apply=box.apply,
                                at_boot=True) == 0  # at boot: nothing to do is no error


class PowerCut(BaseException):
    """The process ends here: nothing after it runs (the lock goes, as with the process)."""


def cut_at(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    def kill(_paths: Paths) -> Callable[[str, str], None]:
        def maybe(step: str, point: str) -> None:
            if f"{step}:{point}" == where:
                raise PowerCut(where)
        return maybe
    monkeypatch.setattr(apply_module, "kill_switch", kill)


@pytest.mark.parametrize(("where", "first_apply", "outcome"), [
    ("update:after-backup", [], "failed"),
    ("update:swap-midway", [], "rolled back"),
    ("update:apply-midway", [], "rolled back"),
    ("update:rollback-midway", [Applied(False, "health: wiki unhealthy")], "rolled back"),
])
def test_a_power_cut_at_any_point_ends_on_one_whole_build_at_the_next_boot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str,
        first_apply: list[Applied], outcome: str) -> None:
    """Cut at each point, then what boot runs (update --recover): the box is the old
    build again, byte for byte, and the same update then goes through."""
    paths = old_box(tmp_path / "box")
    before = tree_digest(paths.root)
    lines: list[str] = []
    box = Box(paths, list(first_apply))

    def apply(p: Paths, out: Callable[[str], None]) -> Applied:
        out("  [1/18] seed         ok")
        out("  [13/18] services     changed   1 recreated")  # where apply-midway cuts
        return box.apply(p, out)

    cut_at(monkeypatch, where)
    with pytest.raises(PowerCut):
        update(bundle(tmp_path), paths, out=lines.append, apply=apply, backup=box.backup,
               clean=box.clean)
    monkeypatch.undo()
    box.results = [Applied(True)]
    assert rollback_interrupted(paths, out=lines.append, apply=box.apply, at_boot=True,
                                clean=box.clean) == 0
    # The cut-off build's images (proxy "a…", wiki "b…") go, once the box is back.
    assert box.calls[-1:] == (["backup on a"] if outcome == "failed" else
                              ["clean ['a', 'b'] on a"])
    assert tree_digest(paths.root) == before, lines
    record = load_record(paths)
    assert record is not None and record["result"] == outcome, record
    assert record["failure"].startswith("cut off in its "), record
    if outcome == "failed":  # cut before the swap: how long it had run is not known
        assert record["seconds"] is None, record
    assert not (update_dir(paths.root) / "previous").exists()
    assert not (update_dir(paths.root) / "next").exists()
    # Recovery is done: a second boot does nothing, and the update goes through.
    assert rollback_interrupted(paths, out=lines.append, apply=box.apply, at_boot=True) == 0
    box.results = [Applied(True)]
    assert run_update(box, bundle(tmp_path / "again")) == 0
    built = tree_digest(tmp_path / "again" / "new")
    assert {name: tree_digest(paths.root).get(name) for name in built} == built


def test_a_cut_after_a_finished_update_only_removes_the_kept_files(tmp_path: Path) -> None:
    paths = old_box(tmp_path / "box")
    box = Box(paths, [Applied(True)])
    assert run_update(box, bundle(tmp_path)) == 0
    after = tree_digest(paths.root)
    kept = update_dir(paths.root) / "previous"
    (kept / "etc/arkbox").mkdir(parents=True)  # as if cut before previous/ was removed
    (kept / "etc/arkbox/appliance.yaml").write_text("the old config\n")
    (kept / "swap.json").write_text(json.dumps(
        {"whole": [], "replaced": ["etc/arkbox/appliance.yaml"], "added": []}))
    assert rollback_interrupted(paths, out=lambda _: None, apply=box.apply,
                                at_boot=True) == 0
    assert tree_digest(paths.root) == after and not kept.exists()


def test_a_record_of_another_installer_version_does_not_stop_the_recovery(
        tmp_path: Path) -> None:
    paths = old_box(tmp_path / "box")
    before = tree_digest(paths.root)
    box = Box(paths, [Applied(True)])

    def power_cut(_paths: Paths, _out: object) -> Applied:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        update(bundle(tmp_path), paths, out=lambda _: None, apply=power_cut,
               backup=box.backup, clean=box.clean)
    saved = json.loads((paths.state / "update.json").read_text())
    saved["a_field_of_a_later_version"] = 1
    (paths.state / "update.json").write_text(json.dumps(saved))
    assert rollback_interrupted(paths, out=lambda _: None, apply=box.apply,
                                at_boot=True) == 0
    assert tree_digest(paths.root) == before


def test_staging_refuses_a_bundle_that_changed_since_it_was_verified(tmp_path: Path
                                                                      ) -> None:
    first = bundle(tmp_path / "a")
    verified = verify_bundle(first)
    first.write_bytes(bundle(tmp_path / "b", installer=b"\x7fELF other").read_bytes())
    with pytest.raises(BadInputError, match="changed since it was verified"):
        stage(verified, tmp_path / "next")
    assert not (tmp_path / "next").exists()


def test_a_file_only_the_box_has_in_its_installer_folder_is_a_change(tmp_path: Path) -> None:
    """The same build but for one extra file in the installer's folder: not "already the
    build", and the update takes the file away (the folder is replaced whole)."""
    new = bundle(tmp_path)
    paths = Paths(tmp_path / "new")  # the very tree the bundle was made from
    extra = paths.root / "usr/local/lib/arkbox-installer/left-by-another-build.txt"
    extra.write_text("not in the bundle\n")
    box = Box(paths, [Applied(True)])
    assert run_update(box, new) == 0
    assert box.calls[-2:] == ["apply on b", "clean ['a', 'b'] on b"]
    assert not extra.exists()


def test_a_recovery_whose_apply_fails_exits_1(tmp_path: Path) -> None:
    paths = old_box(tmp_path / "box")
    box = Box(paths, [])

    def power_cut(_paths: Paths, _out: object) -> Applied:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        update(bundle(tmp_path), paths, out=lambda _: None, apply=power_cut,
               backup=box.backup, clean=box.clean)
    box.results = [Applied(False, "proxy: nginx -t failed")]
    assert rollback_interrupted(paths, out=lambda _: None, apply=box.apply, at_boot=True,
                                clean=box.clean) == 1
    record = load_record(paths)
    assert record is not None and record["result"] == "failed"
    assert not any(call.startswith("clean") for call in box.calls)
