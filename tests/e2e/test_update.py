"""Issue 15 item 3 on a booted appliance: `arkbox-installer update BUNDLE`.

One appliance (the built NAME-rootfs.tar with systemd) and the backup-server role, in one
rig; real borg, the real installer's `apply`, real health checks. The bundles are the
build's own NAME-update.tar with one service image changed: the wiki's image rebuilt on
top of the built one (a label more: a good update), or with an entrypoint that never
serves (a bad one, whose health check fails).

Each test states what it needs through the `box` fixture and leaves the box on the
build it found (the good update's test updates it back), so each passes alone.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from restore_checks import wait_first_boot_or_failure
from rig_fixtures import (
    DEFAULT_CONFIG,
    admin_key_pair,
    appliance_image,
    check,
    containers,
    installer,
    rig_up,
    sh,
)
from update_bundles import bundle_with_installer_file, bundle_with_wiki, docker

from builder.rig.parts import ApplianceContainer, BackupServerContainer, image_from_rootfs_tar
from builder.sign_update import sign_bundle
from firstboot.updates.bundle import MANIFEST_PATH

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RIG_OCTET = 190
MARKER = "/srv/arkbox/volumes/wiki/data/update-marker.txt"
BOX_BUNDLE = "/root/update.tar"


@dataclass
class Box:
    app: ApplianceContainer
    built_bundle: Path  # the build's own bundle: the box's build
    config: Path  # the box's config, as `arkbox update` reads it on the build machine
    identity: Path  # the admin's private key


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    from built import built_appliance, built_backup_server

    work = tmp_path_factory.mktemp("update-box")
    identity = work / "admin-key"
    public = admin_key_pair(identity, "e2e-update@arkbox-tests")
    config: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["appliance"]["admin"]["ssh_keys"] = [public]
    config_path = work / "appliance.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    (work / "secrets").symlink_to(DEFAULT_CONFIG.parent / "secrets")
    with rig_up("update", RIG_OCTET) as rig:
        image = appliance_image(rig)
        server_image = image_from_rootfs_tar(rig.client, built_backup_server(),
                                             "arkbox/backup-server-role")
        rig.add(BackupServerContainer(rig, "backup", server_image, aliases=("backup.arkbox.test",)))
        app = ApplianceContainer(rig, "appliance", image, aliases=["arkbox.test"],
                            config=yaml.safe_dump(config, sort_keys=False),
                            seed_config=DEFAULT_CONFIG, boot_timeout=420)
        rig.add(app)
        status = wait_first_boot_or_failure(app, timeout=900)
        assert status["result"] == "ok", status["failures"]
        check(app, f"echo 'written before the update' > {MARKER}")
        yield Box(app, built_appliance().out / "arkbox-test-update.tar", config_path,
                  identity)


def copy_in(app: ApplianceContainer, bundle: Path) -> None:
    docker("cp", str(bundle), f"{app.name}:{BOX_BUNDLE}")


def update_status(app: ApplianceContainer) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(check(app, "/usr/local/sbin/arkbox-installer status "
                                                 "--json 2>/dev/null || true"))
    return dict(data.get("update") or {})


def started_at(app: ApplianceContainer) -> dict[str, str]:
    out = check(app, "docker ps -q --filter label=arkbox.owner=arkbox | xargs docker "
                     "inspect --format '{{.Name}} {{.State.StartedAt}} {{.Image}}'")
    return {line.split()[0].lstrip("/"): " ".join(line.split()[1:])
            for line in out.splitlines() if line.strip()}


def wiki_container(names: dict[str, str]) -> str:
    return next(name for name in names if name.endswith("wiki"))


def archives(app: ApplianceContainer) -> list[str]:
    code, out = installer(app, "list --json")
    assert code == 0, out
    return [str(a["name"]) for a in json.loads(out[out.index("["):])]


def test_an_update_changing_one_image_restarts_only_that_service(box: Box,
                                                                  tmp_path: Path) -> None:
    app = box.app
    before_ids, before_runs = containers(app), started_at(app)
    copy_in(app, bundle_with_wiki(box.built_bundle, tmp_path, "good", {}))
    started = time.monotonic()
    code, out = installer(app, f"update {BOX_BUNDLE}")
    print(f"\nupdate (one image) took {time.monotonic() - started:.0f} s")
    assert code == 0, out
    after_ids, after_runs = containers(app), started_at(app)
    wiki = wiki_container(after_runs)
    assert after_ids[wiki] != before_ids[wiki]  # recreated on the new image
    assert {n: i for n, i in after_ids.items() if n != wiki} == \
        {n: i for n, i in before_ids.items() if n != wiki}
    assert {n: r for n, r in after_runs.items() if n != wiki} == \
        {n: r for n, r in before_runs.items() if n != wiki}  # not even restarted
    record = update_status(app)
    assert record["result"] == "ok" and record["images_changed"] == ["dokuwiki"], record
    assert record["backup_archive"] in archives(app)
    assert check(app, f"cat {MARKER}").strip() == "written before the update"
    old_image = before_runs[wiki].split()[1]
    assert sh(app, f"docker image inspect {old_image}")[0] != 0, "the previous image stays"
    # Back to the build: the next test (or a run of this one alone) starts from it.
    copy_in(app, box.built_bundle)
    code, out = installer(app, f"update {BOX_BUNDLE}")
    assert code == 0, out
    assert started_at(app)[wiki].split()[1] == before_runs[wiki].split()[1]  # its image


def test_an_update_changing_only_the_installer_restarts_nothing(box: Box,
                                                                 tmp_path: Path) -> None:
    app = box.app
    before_ids, before_runs = containers(app), started_at(app)
    note = "/usr/local/lib/arkbox-installer/update-test-note.txt"
    copy_in(app, bundle_with_installer_file(box.built_bundle, tmp_path,
                                            "update-test-note.txt", "a new installer\n"))
    code, out = installer(app, f"update {BOX_BUNDLE}")
    assert code == 0, out
    record = update_status(app)
    assert record["result"] == "ok" and record["installer_changed"], record
    assert record["images_changed"] == [], record
    assert check(app, f"cat {note}") == "a new installer\n"  # the new folder is in place
    assert containers(app) == before_ids and started_at(app) == before_runs
    # Back to the build: its installer folder has no such file.
    copy_in(app, box.built_bundle)
    code, out = installer(app, f"update {BOX_BUNDLE}")
    assert code == 0, out
    assert sh(app, f"test -e {note}")[0] != 0
    assert containers(app) == before_ids


def test_an_update_whose_image_fails_its_health_check_rolls_back(box: Box,
                                                                 tmp_path: Path) -> None:
    app = box.app
    before_runs = started_at(app)
    never_serves = "#!/bin/sh\n# an image that starts and never answers\nexec sleep 100000\n"
    copy_in(app, bundle_with_wiki(box.built_bundle, tmp_path, "bad",
                                  {"entrypoint": never_serves}))
    manifest_before = check(app, f"sha256sum /{MANIFEST_PATH}")
    code, out = installer(app, f"update {BOX_BUNDLE}")
    assert code == 1, out
    assert "rolling back" in out
    record = update_status(app)
    assert record["result"] == "rolled back", record
    assert "wiki" in record["failure"] and record["failure"].endswith("rolled back"), record
    assert record["backup_archive"] in archives(app)
    assert check(app, f"sha256sum /{MANIFEST_PATH}") == manifest_before
    after_runs = started_at(app)
    wiki = wiki_container(after_runs)
    assert after_runs[wiki].split()[1] == before_runs[wiki].split()[1]  # the old image again
    assert check(app, f"cat {MARKER}").strip() == "written before the update"
    assert sh(app, "docker image inspect arkbox/dokuwiki:update-test-bad")[0] != 0
    code, out = installer(app, "plan")
    assert code == 0, out  # nothing left to converge: the box is its old build, healthy


def arkbox_update(box: Box, out_dir: Path) -> subprocess.CompletedProcess[str]:
    arkbox = Path(sys.executable).parent / "arkbox"
    return subprocess.run([str(arkbox), "update", str(box.config), "--host", box.app.ip(),
                           "--out", str(out_dir), "--identity", str(box.identity),
                           "--known-hosts", str(box.identity.parent / "known_hosts"),
                           "--accept-new-host-key"],
                          capture_output=True, text=True, timeout=1800)


@contextmanager
def admin_key_of_the_test(box: Box, tmp_path: Path) -> Iterator[None]:
    """The box's admin takes this test's key: its config (with the key) put in place and
    applied, the config it had put back after. An update swaps the bundle's config in,
    whose admin key is config/default.yaml's (no private half here)."""
    app = box.app
    before = check(app, "cat /etc/arkbox/appliance.yaml")
    docker("cp", str(box.config), f"{app.name}:/etc/arkbox/appliance.yaml")
    code, out = installer(app, "apply")
    assert code == 0, out
    try:
        yield
    finally:
        (tmp_path / "config-before.yaml").write_text(before)
        docker("cp", str(tmp_path / "config-before.yaml"),
               f"{app.name}:/etc/arkbox/appliance.yaml")
        code, out = installer(app, "apply")
        assert code == 0, out


def test_arkbox_update_hands_the_bundle_over_ssh_and_passes_the_exit_code_on(
        box: Box, tmp_path: Path) -> None:
    with admin_key_of_the_test(box, tmp_path):
        ssh_update_exit_codes(box, tmp_path)


def ssh_update_exit_codes(box: Box, tmp_path: Path) -> None:
    # The build's own bundle: the box checks it whole and finds itself already that build.
    same = arkbox_update(box, box.built_bundle.parent)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "already the build" in same.stdout, same.stdout
    # A truncated copy: the box refuses it (exit 2), and that is this command's exit too.
    cut_dir = tmp_path / "out"
    cut_dir.mkdir()
    with box.built_bundle.open("rb") as whole:
        (cut_dir / box.built_bundle.name).write_bytes(whole.read(32 << 20))
    refused = arkbox_update(box, cut_dir)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "truncated" in refused.stdout + refused.stderr
    assert check(box.app, "ls /home/ops/arkbox-update.tar 2>/dev/null || true").strip() == ""


@pytest.mark.parametrize("point", ["update:swap-midway", "update:apply-midway"])
def test_an_update_cut_off_by_a_power_loss_is_rolled_back_at_the_next_boot(
        box: Box, tmp_path: Path, point: str) -> None:
    """SIGKILL at the point (the power loss), then the unit boot starts: the box is its
    previous build again, whole, with the data untouched."""
    app = box.app
    assert check(app, "systemctl is-enabled arkbox-update-recover.service").strip() == \
        "enabled"
    before_runs = started_at(app)
    wiki = wiki_container(before_runs)
    manifest_before = check(app, f"sha256sum /{MANIFEST_PATH}")
    installer_before = check(app, "sha256sum /usr/local/lib/arkbox-installer/arkbox-installer")
    copy_in(app, bundle_with_wiki(box.built_bundle, tmp_path, "cut", {}))
    try:
        code, out = installer(app, f"update {BOX_BUNDLE}", kill_at=point)
        assert code == 128 + 9, out  # SIGKILLed at the point
        assert update_status(app)["result"] == "interrupted", out
        if point == "update:apply-midway":  # the wiki already runs the new image
            assert started_at(app)[wiki].split()[1] != before_runs[wiki].split()[1], out
        start_unit(app, "arkbox-update-recover.service")  # what boot runs
    finally:
        sh(app, "rm -rf /var/lib/arkbox/test-kill")
    record = update_status(app)
    phase = point.split(":")[1].split("-")[0]
    assert record["result"] == "rolled back", record
    assert record["failure"] == f"cut off in its {phase} phase; rolled back", record
    assert check(app, f"sha256sum /{MANIFEST_PATH}") == manifest_before
    assert check(app, "sha256sum /usr/local/lib/arkbox-installer/arkbox-installer") == \
        installer_before
    assert started_at(app)[wiki].split()[1] == before_runs[wiki].split()[1]
    assert check(app, "ls /var/lib/arkbox/update").split() == []  # nothing kept, nothing half
    assert sh(app, "docker image inspect arkbox/dokuwiki:update-test-cut")[0] != 0
    assert check(app, f"cat {MARKER}").strip() == "written before the update"
    code, out = installer(app, "plan")
    assert code == 0, out


def start_unit(app: ApplianceContainer, unit: str) -> None:
    """systemctl start UNIT (a oneshot: it returns when the unit has run); its journal
    in the failure when it failed."""
    code, out = sh(app, f"systemctl start {unit}")
    if code != 0:
        journal = sh(app, f"journalctl -u {unit} --no-pager -n 80")[1]
        raise AssertionError(f"systemctl start {unit} exited {code}: {out}\n{journal}")


def rig_gateway(app: ApplianceContainer) -> str:
    """This machine's address on the rig's network: the engine's gateway, which it does
    not always name (then the subnet's first address, the one it takes)."""
    named = docker("network", "inspect", app.rig.network_name, "--format",
                   "{{(index .IPAM.Config 0).Gateway}}")
    subnet = docker("network", "inspect", app.rig.network_name, "--format",
                    "{{(index .IPAM.Config 0).Subnet}}")
    return named or str(next(ipaddress.ip_network(subnet).hosts()))


@contextmanager
def published(folder: Path, address: str) -> Iterator[int]:
    """A web server for `folder` on `address` (this machine's side of the rig's network,
    its gateway); its port."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer((address, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_the_unattended_update_fetches_a_signed_bundle_when_its_timer_fires(
        box: Box, tmp_path: Path) -> None:
    """updates: on in the box's config; apply installs the timer; the service it starts
    downloads the bundle from a web server, checks the signature and updates the box."""
    app = box.app
    www = tmp_path / "www"
    www.mkdir()
    signing = tmp_path / "signing"
    public = admin_key_pair(signing, "builds@arkbox-tests")
    bundle = bundle_with_wiki(box.built_bundle, tmp_path, "fetched", {})
    bundle.rename(www / "box-update.tar")
    assert sign_bundle(www / "box-update.tar", signing) == 0
    gateway = rig_gateway(app)
    before_runs = started_at(app)
    wiki = wiki_container(before_runs)
    original = check(app, "cat /etc/arkbox/appliance.yaml")
    try:
        with published(www, gateway) as port:
            config = yaml.safe_load(original)
            config["updates"] = {"enabled": True, "signing_key": public,
                                 "url": f"http://{gateway}:{port}/box-update.tar"}
            (tmp_path / "appliance.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            docker("cp", str(tmp_path / "appliance.yaml"),
                   f"{app.name}:/etc/arkbox/appliance.yaml")
            code, out = installer(app, "apply")
            assert code == 0, out
            assert check(app, "systemctl is-enabled arkbox-update.timer").strip() == "enabled"
            start_unit(app, "arkbox-update.service")  # what the timer starts
        data = json.loads(check(app, "/usr/local/sbin/arkbox-installer status --json "
                                     "2>/dev/null || true"))
        assert data["update_fetch"]["result"] == "updated", data["update_fetch"]
        assert data["update"]["result"] == "ok", data["update"]
        assert data["update"]["images_changed"] == ["dokuwiki"]
        assert started_at(app)[wiki].split()[1] != before_runs[wiki].split()[1]
        assert check(app, f"cat {MARKER}").strip() == "written before the update"
        # The bundle's config has no updates section: the update's apply took the timer.
        assert sh(app, "systemctl cat arkbox-update.timer")[0] != 0
    finally:  # back to the build and its config, however far the test came
        copy_in(app, box.built_bundle)
        code, out = installer(app, f"update {BOX_BUNDLE}")
        assert code == 0, out
        (tmp_path / "appliance.yaml").write_text(original)
        docker("cp", str(tmp_path / "appliance.yaml"), f"{app.name}:/etc/arkbox/appliance.yaml")
        code, out = installer(app, "apply")
        assert code == 0, out
        assert sh(app, "systemctl cat arkbox-update.timer")[0] != 0
