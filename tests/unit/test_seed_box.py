"""The box's side of the seed: each source, the all-or-nothing install, the wipe, the record.

A regular file stands in for the seed partition, a local HTTP server for the provider's
metadata service, a temporary directory for $CREDENTIALS_DIRECTORY.
"""

from __future__ import annotations

import json
import logging
import shutil
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from test_seed_format import CONFIG, VALUES

from firstboot.core import execute
from firstboot.core.config import Appliance, load_config
from firstboot.core.seed import CREDENTIAL, Seed, SeedInvalid, encode
from firstboot.core.step import StepFailed
from firstboot.seed_install import provide_secrets, read_role, verify_installed
from firstboot.seed_record import load_record
from firstboot.seed_sources import (
    CredentialSource,
    Found,
    MetadataSource,
    NoSeed,
    PartitionSource,
    SeedDevice,
    Source,
    credential_directory,
    default_sources,
    delete_argv,
    parse_lsblk,
)
from firstboot.status import Status, status_json
from firstboot.status_view import print_status

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
INSTALLED = {"env:SEEDY_DB_PASSWORD": "env/SEEDY_DB_PASSWORD",
             "file:secrets/borg-passphrase": "secrets/borg-passphrase",
             "file:secrets/db-password": "secrets/db-password"}


def load(folder: Path, extra: str = "") -> Appliance:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "appliance.yaml").write_text(CONFIG + extra)
    return load_config(folder / "appliance.yaml", secrets_from_seed=True)


def seed_bytes(config: Appliance, **changes: Any) -> bytes:
    fields: dict[str, Any] = {"appliance": "seedy", "role": "appliance",
                              "config_sha256": config.config_sha256, "secrets": dict(VALUES)}
    return encode(Seed(**{**fields, **changes}))


def provide(config: Appliance, sources: list[Source], state: Path) -> Any:
    return provide_secrets(config, role="appliance", sources=sources,
                           record_path=state / "seed.json", now=lambda: NOW)


def tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mode for p in sorted(folder.rglob("*"))}


class Refusing:
    """A source that must not be read."""

    kind = "refusing"

    def describe(self) -> str:
        return "refusing"

    def read(self) -> Found | str:
        raise AssertionError("read although every secret was installed")

    def wipe(self, found: Found) -> tuple[str, list[str]]:
        raise AssertionError("wiped")


@pytest.fixture
def box(tmp_path: Path) -> tuple[Appliance, Path]:
    return load(tmp_path / "etc"), tmp_path / "state"


def assert_installed(config: Appliance) -> None:
    base = config.base_dir
    for key, name in INSTALLED.items():
        path = base / name
        assert path.read_bytes() == VALUES[key]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in ("secrets", "env"):
        assert stat.S_IMODE((base / directory).stat().st_mode) == 0o700
    assert verify_installed(config, "appliance") is None


def test_credential_is_read_first_and_left_alone(box: tuple[Appliance, Path],
                                                 tmp_path: Path) -> None:
    config, state = box
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / CREDENTIAL).write_bytes(seed_bytes(config))
    assert verify_installed(config, "appliance") == (
        f"env:SEEDY_DB_PASSWORD is not installed at {config.base_dir}/env/SEEDY_DB_PASSWORD")
    outcome = provide(config, [CredentialSource(credentials), Refusing()], state)
    assert outcome.changed
    assert outcome.summary.startswith("3 secrets from the systemd credential arkbox-seed (")
    assert_installed(config)
    assert (credentials / CREDENTIAL).read_bytes() == seed_bytes(config)  # read only
    record = load_record(state / "seed.json")
    assert record is not None
    assert record["source"] == "credential" and record["installed_at"] == NOW.isoformat()
    assert sorted(record["installed"]) == sorted(INSTALLED.values())
    # A retry (or apply) with everything in place reads no source at all.
    again = provide(config, [Refusing()], state)
    assert not again.changed and again.summary == "3 secrets in place"
    assert again.details["source"] == "credential"


def test_partition_stand_in_is_read_then_zeroed(box: tuple[Appliance, Path],
                                                tmp_path: Path) -> None:
    config, state = box
    device = tmp_path / "vda4"
    device.write_bytes(seed_bytes(config) + b"\0" * 65536)
    size = device.stat().st_size
    sources: list[Source] = [CredentialSource(None),
                             PartitionSource(lambda: [SeedDevice(device)])]
    outcome = provide(config, sources, state)
    assert_installed(config)
    assert device.stat().st_size == size and device.read_bytes() == bytes(size)
    record = load_record(state / "seed.json")
    assert record is not None and record["source"] == "partition"
    assert record["wiped"] == f"{device} zeroed"
    assert outcome.details["where"] == f"the partition arkbox-seed ({device})"


def test_partition_wipe_deletes_it_from_the_table_and_grows_root(
        box: tuple[Appliance, Path], tmp_path: Path) -> None:
    config, state = box
    device = tmp_path / "vda4"
    device.write_bytes(seed_bytes(config))
    ran: list[tuple[str, ...]] = []

    def run(argv: tuple[str, ...], **kwargs: Any) -> execute.Completed:
        assert kwargs["timeout"] > 0
        ran.append(tuple(argv))
        return execute.Completed(tuple(argv), 0)

    source = PartitionSource(lambda: [SeedDevice(device, Path("/dev/vda"), 4)], run)
    outcome = provide(config, [source], state)
    assert ran == [("sfdisk", "--no-reread", "--delete", "/dev/vda", "4"),
                   ("partx", "--delete", "--nr", "4", "/dev/vda"),
                   ("systemd-repart", "--dry-run=no"),
                   ("/usr/lib/systemd/systemd-growfs", "/")]
    assert "removed from /dev/vda's partition table; root grown" in outcome.summary
    assert device.read_bytes() == bytes(device.stat().st_size)


def test_a_failed_table_delete_is_a_warning_in_the_record(box: tuple[Appliance, Path],
                                                          tmp_path: Path) -> None:
    config, state = box
    device = tmp_path / "vda4"
    device.write_bytes(seed_bytes(config))

    def run(argv: tuple[str, ...], **kwargs: Any) -> execute.Completed:
        raise execute.CommandError(list(argv), 127, "", "install fdisk")

    provide(config, [PartitionSource(lambda: [SeedDevice(device, Path("/dev/vda"), 4)], run)],
            state)
    record = load_record(state / "seed.json")
    assert record is not None and record["wiped"] == f"{device} zeroed"
    assert "stays in the table" in record["warnings"][0]
    assert "sfdisk --delete /dev/vda 4" in record["warnings"][0]
    assert_installed(config)


def test_lsblk_output_names_the_seed_partition_and_its_disk() -> None:
    text = json.dumps({"blockdevices": [
        {"name": "/dev/vda", "partlabel": None, "pkname": None, "type": "disk"},
        {"name": "/dev/vda3", "partlabel": "root-x86-64", "pkname": "/dev/vda", "type": "part"},
        {"name": "/dev/vda4", "partlabel": "arkbox-seed", "pkname": "/dev/vda", "type": "part"},
        {"name": "/dev/sr0", "partlabel": "arkbox-seed", "pkname": None, "type": "rom"},
    ]})
    assert parse_lsblk(text) == [SeedDevice(Path("/dev/vda4"), Path("/dev/vda"), 4)]
    assert parse_lsblk('{"blockdevices": []}') == []


def test_two_seed_partitions_are_refused(box: tuple[Appliance, Path], tmp_path: Path) -> None:
    config, state = box
    devices = [SeedDevice(tmp_path / "a"), SeedDevice(tmp_path / "b")]
    with pytest.raises(SeedInvalid, match="more than one partition is named arkbox-seed"):
        provide(config, [PartitionSource(lambda: devices)], state)


class UserData(BaseHTTPRequestHandler):
    body: bytes | None = None

    def do_GET(self) -> None:  # the name http.server calls
        if self.path != "/latest/user-data" or self.body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metadata() -> Iterator[tuple[str, type[UserData]]]:
    handler = type("Handler", (UserData,), {"body": None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/latest/user-data", handler
    finally:
        server.shutdown()
        server.server_close()


def no_disks(argv: tuple[str, ...], **kwargs: Any) -> execute.Completed:
    assert argv[0] == "lsblk"
    return execute.Completed(tuple(argv), 0, '{"blockdevices": []}')


def test_metadata_only_when_turned_on(tmp_path: Path,
                                      metadata: tuple[str, type[UserData]]) -> None:
    url, handler = metadata
    off = load(tmp_path / "off")
    assert [s.kind for s in default_sources(off, no_disks, env={})] == ["credential",
                                                                       "partition"]
    config = load(tmp_path / "etc", f"seed: {{metadata: true, metadata_url: '{url}'}}\n")
    handler.body = seed_bytes(config)
    sources = default_sources(config, no_disks, env={})
    assert [s.kind for s in sources] == ["credential", "partition", "metadata"]
    outcome = provide(config, sources, tmp_path / "state")
    assert_installed(config)
    record = load_record(tmp_path / "state/seed.json")
    assert record is not None and record["source"] == "metadata"
    assert "remove it there" in record["warnings"][0]
    assert outcome.details["wiped"] == "not wiped: user-data is the provider's"


def test_no_seed_names_every_place_looked(tmp_path: Path,
                                          metadata: tuple[str, type[UserData]]) -> None:
    url, _handler = metadata  # no user-data: 404
    config = load(tmp_path / "etc", f"seed: {{metadata: true, metadata_url: '{url}'}}\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    sources = default_sources(config, no_disks, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    with pytest.raises(NoSeed) as caught:
        provide(config, sources, tmp_path / "state")
    assert str(caught.value) == (
        "no seed: looked in the systemd credential arkbox-seed (not passed), partition "
        f"arkbox-seed (none on the disks), metadata URL {url} (no user-data (HTTP 404)); not "
        "installed: env:SEEDY_DB_PASSWORD, file:secrets/borg-passphrase, "
        "file:secrets/db-password")
    assert caught.value.exit_code == 2
    assert (caught.value.hint or "").startswith("make one: arkbox seed CONFIG --out FILE")
    assert "docs/seed.md" in (caught.value.hint or "")
    assert not (tmp_path / "etc/secrets").exists() and not (tmp_path / "state").exists()


def test_metadata_that_does_not_answer_is_bounded(tmp_path: Path) -> None:
    # A port nothing listens on: refused at once; the timeout bounds a silent one.
    source = MetadataSource("http://127.0.0.1:9/latest/user-data", timeout_s=2)
    result = source.read()
    assert isinstance(result, str) and result.startswith("no answer within 2 s")


@pytest.mark.parametrize(("change", "message"), [
    ({"appliance": "other"}, "the seed is for appliance 'other'"),
    ({"config_sha256": "ab" * 32}, "another version of the config"),
    ({"secrets": {k: v for k, v in VALUES.items() if k.startswith("file:")}},
     "the seed lacks env:SEEDY_DB_PASSWORD"),
])
def test_a_seed_that_does_not_fit_writes_nothing(tmp_path: Path, change: dict[str, Any],
                                                 message: str) -> None:
    config = load(tmp_path / "etc")
    device = tmp_path / "vda4"
    data = seed_bytes(config, **change)
    device.write_bytes(data)
    before = tree(tmp_path / "etc")
    with pytest.raises(SeedInvalid, match=message) as caught:
        provide(config, [PartitionSource(lambda: [SeedDevice(device)])], tmp_path / "state")
    assert str(caught.value).startswith(f"the partition arkbox-seed ({device}): ")
    assert tree(tmp_path / "etc") == before
    assert device.read_bytes() == data  # not wiped: the operator may want to look at it
    assert not (tmp_path / "state").exists()


def test_a_truncated_partition_is_refused_by_name(box: tuple[Appliance, Path],
                                                  tmp_path: Path) -> None:
    config, state = box
    device = tmp_path / "vda4"
    device.write_bytes(seed_bytes(config)[:300])
    with pytest.raises(SeedInvalid, match=r"\(.*vda4\): the seed is truncated or damaged"):
        provide(config, [PartitionSource(lambda: [SeedDevice(device)])], state)
    assert not (config.base_dir / "secrets").exists()


def test_first_source_present_wins_even_when_bad(box: tuple[Appliance, Path],
                                                 tmp_path: Path) -> None:
    config, state = box
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / CREDENTIAL).write_bytes(b"{not json")
    with pytest.raises(SeedInvalid, match=r"systemd credential arkbox-seed .*damaged"):
        provide(config, [CredentialSource(credentials), Refusing()], state)


def test_install_is_all_or_nothing(box: tuple[Appliance, Path], tmp_path: Path) -> None:
    config, state = box
    # The last secret (by key) cannot be renamed into place: a directory is in the way.
    blocker = config.base_dir / "secrets/db-password"
    blocker.mkdir(parents=True)
    before = tree(config.base_dir)
    device = tmp_path / "vda4"
    device.write_bytes(seed_bytes(config))
    with pytest.raises(StepFailed, match=r"Is a directory .*db-password.*nothing was installed"):
        provide(config, [PartitionSource(lambda: [SeedDevice(device)])], state)
    assert tree(config.base_dir) == before  # env/ removed again, no temp names left
    assert device.read_bytes() == seed_bytes(config)


def test_an_installed_secret_is_kept(box: tuple[Appliance, Path], tmp_path: Path) -> None:
    config, state = box
    kept = config.base_dir / "secrets/borg-passphrase"
    kept.parent.mkdir(mode=0o700)
    kept.write_bytes(b"set by the admin")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / CREDENTIAL).write_bytes(seed_bytes(config))
    outcome = provide(config, [CredentialSource(credentials)], state)
    assert ", 1 kept;" in outcome.summary
    assert kept.read_bytes() == b"set by the admin"
    assert sorted(outcome.details["installed"]) == ["env/SEEDY_DB_PASSWORD",
                                                    "secrets/db-password"]


def test_a_backup_server_needs_no_seed(box: tuple[Appliance, Path]) -> None:
    config, state = box
    outcome = provide_secrets(config, role="backup-server", sources=[Refusing()],
                              record_path=state / "seed.json", now=lambda: NOW)
    assert outcome.summary == "no secrets needed (backup-server)"
    assert verify_installed(config, "backup-server") is None


def test_role_comes_from_the_build_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "build-manifest.json"
    manifest.write_text(json.dumps({"role": "backup-server", "name": "x"}))
    assert read_role(manifest) == "backup-server"
    with pytest.raises(StepFailed, match=r"build manifest .* is missing"):
        read_role(tmp_path / "nothing.json")


def test_no_value_in_logs_record_or_outcome(box: tuple[Appliance, Path], tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    config, state = box
    device = tmp_path / "vda4"
    device.write_bytes(seed_bytes(config))
    caplog.set_level(logging.DEBUG)
    outcome = provide(config, [PartitionSource(lambda: [SeedDevice(device)])], state)
    shown = caplog.text + (state / "seed.json").read_text() + repr(outcome)
    assert "installed 3 secrets" in caplog.text
    for value in VALUES.values():
        assert value.rstrip(b"\n").decode(errors="replace") not in shown


def test_status_shows_the_seed(box: tuple[Appliance, Path], tmp_path: Path) -> None:
    config, state = box
    device = tmp_path / "vda4"
    device.write_bytes(seed_bytes(config))
    provide(config, [PartitionSource(lambda: [SeedDevice(device)])], state)
    seed = load_record(state / "seed.json")
    status = Status(command="firstboot", installer_version="0", started_at=NOW.isoformat())
    data = json.loads(status_json(status, seed=seed))
    assert data["seed"]["source"] == "partition" and data["seed"]["wiped"].endswith("zeroed")
    console = Console(record=True, width=200)
    print_status(status, console, seed=seed)
    text = console.export_text()
    assert "seed: partition · the partition arkbox-seed" in text
    assert "3 secrets installed" in text and f"wiped: {device} zeroed" in text
    assert load_record(state / "missing.json") is None


@pytest.mark.skipif(shutil.which("sfdisk") is None, reason="sfdisk (fdisk) is not installed")
def test_table_delete_argv_works_on_a_real_gpt(tmp_path: Path) -> None:
    """The sfdisk line of the wipe, run on a disk image file: the seed partition goes, the
    root partition stays (partx only speaks to the kernel, so it is not run here)."""
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(8 << 20))
    layout = "label: gpt\nsize=4MiB, name=root\nsize=2MiB, name=arkbox-seed\n"
    execute.run(("sfdisk", "--no-reread", str(disk)), input_data=layout, timeout=30)
    table, _kernel = delete_argv(SeedDevice(tmp_path / "disk2", disk, 2))
    execute.run(table, timeout=30)
    shown = json.loads(execute.run(("sfdisk", "--json", str(disk)), timeout=30).stdout)
    assert [p.get("name") for p in shown["partitiontable"]["partitions"]] == ["root"]


def test_disks_that_cannot_be_listed_are_said_in_the_no_seed_message(
        box: tuple[Appliance, Path]) -> None:
    config, state = box

    def failing(argv: tuple[str, ...], **kwargs: Any) -> execute.Completed:
        raise execute.CommandError(list(argv), 32, "lsblk: failed to access sysfs")

    with pytest.raises(NoSeed, match=r"partition arkbox-seed \(cannot list the disks: `lsblk"):
        provide(config, default_sources(config, failing, env={}), state)


def test_a_power_cut_before_the_wipe_is_finished_by_the_next_run(
        box: tuple[Appliance, Path], tmp_path: Path) -> None:
    config, state = box
    device = tmp_path / "vda4"
    device.write_bytes(seed_bytes(config))
    sources: list[Source] = [PartitionSource(lambda: [SeedDevice(device)])]
    provide(config, sources, state)
    (state / "seed.json").unlink()  # as if cut after the install, before wipe and record
    device.write_bytes(seed_bytes(config))
    outcome = provide(config, sources, state)
    assert outcome.changed and outcome.summary == f"3 secrets in place; {device} zeroed"
    assert device.read_bytes() == bytes(device.stat().st_size)
    assert_installed(config)
    # Secrets put in place by hand, no seed anywhere: noted once, no failure.
    (state / "seed.json").unlink()
    again = provide(config, [CredentialSource(None)], state)
    assert not again.changed and again.details["source"] == "none"
    assert provide(config, [Refusing()], state).details["source"] == "none"


def test_the_credential_is_read_from_systemds_store_when_the_unit_has_none(
        tmp_path: Path) -> None:
    # systemd in a container makes no per-unit credential directory: the seed is only
    # in the system store, where the machine (fw_cfg, container manager) put it.
    unit, system = tmp_path / "unit", tmp_path / "system"
    unit.mkdir()
    system.mkdir()
    env = {"CREDENTIALS_DIRECTORY": str(unit)}
    assert credential_directory(env, system) == unit  # nothing anywhere: the unit's
    (system / CREDENTIAL).write_bytes(b"{}")
    assert credential_directory(env, system) == system
    assert credential_directory({}, system) == system
    (unit / CREDENTIAL).write_bytes(b"{}")
    assert credential_directory(env, system) == unit
    assert credential_directory({}, tmp_path / "none") is None
