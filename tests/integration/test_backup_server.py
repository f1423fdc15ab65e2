"""Real borg over real SSH against the backup-server role built by the builder.

The backup server is the role's root fs tar booted with systemd as PID 1 in the
rig. The appliance side is this test process running the installer's own code
(steps `backup`, `restore`, `restore_dumps` and `run_backup`) below temp roots,
with two small containers standing in for a paused service and a database (the
dump is streamed with `docker exec`, loaded back with `docker exec -i`).
The whole-appliance version of this story is tests/e2e/test_backup_restore.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from backup_server import running_backup_server
from conftest import docker_answers, require, require_tool

from builder.rig.parts import Rig, SystemdContainer
from firstboot.backup import borg, preread
from firstboot.backup.backup import (
    archives_with_sizes,
    check_repository,
    list_archives,
    run_backup,
)
from firstboot.backup.cli import archive_table
from firstboot.backup.client import BackupError, BackupPaths, read_failure
from firstboot.containers.naming import Naming
from firstboot.core.config import Appliance, load_config
from firstboot.core.context import FirstbootContext, Mode, Paths
from firstboot.core.step import StepFailed
from firstboot.steps import backup as backup_step
from firstboot.steps import restore as restore_step
from firstboot.steps import restore_dumps

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
SECRETS = REPO / "config" / "secrets"
BASE_IMAGE_PREFIX = "arkbox/base"
DUMP = ["sh", "-c", "printf 'CREATE TABLE t (v int);\\nINSERT INTO t VALUES (42);\\n'"]
LOAD = ["sh", "-c", "cat > /tmp/loaded.sql"]


@dataclass
class Server:
    rig: Rig
    part: SystemdContainer
    ip: str


def _base_image(client: docker.DockerClient) -> str:
    for image in client.images.list(name=BASE_IMAGE_PREFIX):
        if image.tags:
            return str(image.tags[0])
    require(False, "the arkbox/base image (built by the service images stage)")
    raise AssertionError


def server_in_rig(rig_name: str, ipv4_subnet: str, ipv6_subnet: str) -> Iterator[Server]:
    """A module's backup server in a rig of its own (the subnets the module's own)."""
    require(docker_answers(), "a running Docker Engine")
    require_tool("borg")
    with running_backup_server(rig_name, ipv4_subnet, ipv6_subnet) as part:
        yield Server(part.rig, part, part.ip())


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    yield from server_in_rig("arkbox-bk", "172.30.151.0/24", "fd42:a7b0:c551::/64")


def write_config(directory: Path, server_ip: str, *, passphrase: str | None = None,
                 port: int = 22, restore: str = "auto") -> Appliance:
    """An appliance with a paused service and a dumped database, both stand-ins."""
    secrets = directory / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    for name in ("backup-ssh-key", "borg-passphrase"):
        shutil.copy(SECRETS / name, secrets / name)
        (secrets / name).chmod(0o600)
    if passphrase is not None:
        (secrets / "borg-passphrase").write_text(passphrase + "\n")
    key = (REPO / "config/secrets/backup-ssh-key.pub").read_text().split()[:2]
    (directory / "appliance.yaml").write_text(textwrap.dedent(f"""\
        appliance:
          name: arkbox-test
          domain: arkbox.test
          hostname: arkbox.test
          admin: {{ssh_keys: ["{' '.join(key)}"]}}
        mail: {{enabled: false}}
        services:
          calendar:
            image: "registry.example/radicale:3"
            volumes: {{collections: /var/lib/radicale/collections}}
            backup: {{consistency: pause}}
          db:
            image: "registry.example/postgres:17"
            volumes: {{data: /var/lib/postgresql/data}}
            backup:
              consistency: dump
              dump_command: {json.dumps(DUMP)}
              dump_file: postgres.sql
              restore_command: {json.dumps(LOAD)}
              exclude_volumes: [data]
        backup:
          repository: ssh://borg@{server_ip}:{port}/./arkbox
          passphrase: {{file: secrets/borg-passphrase}}
          ssh_key: {{file: secrets/backup-ssh-key}}
          restore: {restore}
        """))
    return load_config(directory / "appliance.yaml")


@dataclass
class Box:
    ctx: FirstbootContext
    containers: list[str]


def make_box(tmp: Path, server: Server, name: str, **kwargs: object) -> Box:
    root = tmp / name
    config = write_config(tmp / f"{name}-config", server.ip, **kwargs)  # type: ignore[arg-type]
    ctx = FirstbootContext(config=config, paths=Paths(root))
    return Box(ctx, [])


def start_standins(box: Box) -> None:
    """`sleep` containers named as the installer names calendar's and db's."""
    client = box.ctx.docker
    image = _base_image(client)
    naming = Naming.for_root(box.ctx.paths.root)
    for service in ("calendar", "db"):
        container = client.containers.run(image, ["sleep", "infinity"], detach=True,
                                          name=naming.container(service),
                                          labels={"arkbox.test": "backup-server"})
        box.containers.append(container.id or "")


def remove_standins(box: Box) -> None:
    for container_id in box.containers:
        box.ctx.docker.containers.get(container_id).remove(force=True)


def fill_data(root: Path) -> None:
    data = root / "srv/arkbox"
    for sub, mode in (("secrets", 0o700), ("tls/live", 0o755),
                      ("volumes/calendar/collections/user", 0o750), ("volumes/db/data", 0o700)):
        (data / sub).mkdir(parents=True, exist_ok=True)
        (data / sub).chmod(mode)
    (data / "manifest.json").write_text('{"appliance": "arkbox-test", "services": []}\n')
    (data / "secrets/status-page-password").write_text("pw\n")
    (data / "secrets/status-page-password").chmod(0o600)
    (data / "tls/live/privkey.pem").write_bytes(os.urandom(64))
    event = data / "volumes/calendar/collections/user/event.ics"
    event.write_text("BEGIN:VCALENDAR\nSUMMARY:restore me\nEND:VCALENDAR\n")
    os.chown(event, 1234, 2345)
    event.chmod(0o640)
    os.utime(event, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    (data / "volumes/db/data/PG_VERSION").write_text("17\n")  # live: must NOT be archived
    # What a volume may hold beside plain files: names borg's path list must carry
    # intact, a FIFO and a symlink to a device (which borg is not given: --read-special
    # would read them) and a plain symlink.
    user = data / "volumes/calendar/collections/user"
    (user / "événement\nnoté.ics").write_text("unicode and a newline in the name\n")
    os.mkfifo(user / "pipe", 0o620)
    os.chown(user / "pipe", 1234, 2345)
    (user / "log").symlink_to("/dev/null")
    (data / "tls/live/current").symlink_to("privkey.pem")


def tree_facts(data: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[object, ...]]:
    """Every file and directory by content, mode, owner and mtime (ns)."""
    facts: dict[str, tuple[object, ...]] = {}
    for path in sorted(data.rglob("*")):
        relative = path.relative_to(data).as_posix()
        if relative.startswith(skip):
            continue
        st = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        mtime = st.st_mtime_ns if stat.S_ISREG(st.st_mode) else 0
        facts[relative] = (content, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime)
    return facts


def test_backup_then_restore_onto_a_blank_box(server: Server, tmp_path: Path) -> None:
    a = make_box(tmp_path, server, "a")
    b = make_box(tmp_path, server, "b")
    try:
        fill_data(a.ctx.paths.root)
        start_standins(a)
        started = time.monotonic()
        outcome = backup_step.run(a.ctx)  # key, repository (borg init), key export, timer
        assert outcome.changed, outcome.summary
        assert backup_step.verify(a.ctx) is None
        exported = BackupPaths(a.ctx.paths).exported
        assert (exported / "borg-key").read_text().startswith("BORG_KEY ")
        assert (a.ctx.paths.root / "etc/systemd/system/arkbox-backup.timer").exists()
        assert not backup_step.run(a.ctx).changed  # idempotent
        before = backups_in(a)  # the module's other tests share the repository
        carriage = a.ctx.paths.data / "volumes/calendar/collections/user/cr\rname"
        carriage.write_text("borg's text reader would turn the CR into a newline\n")
        report = run_backup(a.ctx)
        backup_s = time.monotonic() - started
        assert set(report.pauses) == {"calendar"} and report.pauses["calendar"] < 10
        assert report.skipped == ["volumes/calendar/collections/user/cr\rname"]
        assert "NOT backed up" in report.summary()
        carriage.unlink()
        # One archive: paused volumes, dump and the rest.
        assert backups_in(a) - before == {report.archive}
        # The calendar container was unpaused afterwards.
        calendar = a.ctx.docker.containers.get(a.containers[0])
        calendar.reload()
        assert calendar.status == "running"

        # B: blank box, same config: the restore step decides RESTORE and restores.
        start_standins(b)
        started = time.monotonic()
        outcome = restore_step.run(b.ctx)
        restore_s = time.monotonic() - started
        assert b.ctx.mode is Mode.RESTORE, outcome.summary
        assert restore_step.verify(b.ctx) is None
        a_data, b_data = a.ctx.paths.data, b.ctx.paths.data
        skip = ("volumes/db/data", "secrets/backup")
        assert tree_facts(b_data, skip) == tree_facts(a_data, skip)
        assert not (b_data / "volumes/db/data/PG_VERSION").exists()
        # The dump is loaded into B's database once its container runs.
        assert restore_dumps.run(b.ctx).changed
        assert restore_dumps.verify(b.ctx) is None
        loaded = b.ctx.docker.containers.get(b.containers[1]).exec_run(
            ["cat", "/tmp/loaded.sql"]).output
        assert b"INSERT INTO t VALUES (42);" in loaded

        # B continues the same repository.
        backup_step.run(b.ctx)
        # No prune here: with the archives the module's other tests made today, the
        # retention (one a day) keeps a set that depends on the order the tests ran in.
        second = run_backup(b.ctx, prune=False)
        assert backups_in(b) - before == {report.archive, second.archive}
        # `list` shows each with its size and files, from the repository (B made only one).
        sized = {str(x["name"]): x["stats"] for x in archives_with_sizes(b.ctx)}
        assert {report.archive, second.archive} <= set(sized)
        assert sized[report.archive]["nfiles"] > 5
        assert sized[report.archive]["original_size"] > len("restore me")
        table = archive_table(archives_with_sizes(b.ctx))
        assert table[0].split()[:2] == ["ARCHIVE", "STARTED"] and len(table) == 1 + len(sized)
        rows = [line.split()[0] for line in table[1:]]
        assert rows.index(report.archive) < rows.index(second.archive)
        print(f"\nbackup (init + first backup) {backup_s:.1f} s; restore {restore_s:.1f} s; "
              f"pause calendar {report.pauses['calendar']:.3f} s")
    finally:
        remove_standins(a)
        remove_standins(b)


def test_restore_refuses_to_mix_into_live_data(server: Server, tmp_path: Path) -> None:
    box = make_box(tmp_path, server, "live")
    fill_data(box.ctx.paths.root)
    before = tree_facts(box.ctx.paths.data)
    outcome = restore_step.run(box.ctx)
    assert box.ctx.mode is Mode.FRESH and "already holds data" in outcome.summary
    assert tree_facts(box.ctx.paths.data) == before


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"passphrase": "not-the-passphrase"}, "wrong passphrase"),
    ({"port": 2}, "cannot be reached"),
])
def test_failures_are_clear_and_touch_nothing(server: Server, tmp_path: Path,
                                              kwargs: dict[str, object], message: str) -> None:
    box = make_box(tmp_path, server, "c", **kwargs)
    # A repository must exist for the passphrase to be wrong: the first test made it, or:
    ensure_repository(server, tmp_path)
    with pytest.raises(StepFailed) as failure:
        restore_step.run(box.ctx)
    assert message in failure.value.message, failure.value.message
    assert failure.value.hint
    assert not box.ctx.paths.data.exists()
    assert not (box.ctx.paths.state / "restore.json").exists()


def ensure_repository(server: Server, tmp_path: Path) -> None:
    box = make_box(tmp_path, server, "init")
    backup_step.run(box.ctx)


def ssh_as_client(server: Server, tmp_path: Path,
                  *command: str) -> subprocess.CompletedProcess[str]:
    key = tmp_path / "key"
    shutil.copy(SECRETS / "backup-ssh-key", key)
    key.chmod(0o600)
    return subprocess.run(
        ["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         f"borg@{server.ip}", *command],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_the_key_gets_no_shell_and_no_other_repository(server: Server, tmp_path: Path) -> None:
    shell = ssh_as_client(server, tmp_path, "id; cat /etc/passwd")
    assert "uid=" not in shell.stdout and "root:" not in shell.stdout
    box = make_box(tmp_path, server, "other")
    env = box.ctx.config.backup.repository
    assert env is not None
    other = env.replace("/./arkbox", "/./elsewhere")
    key = tmp_path / "k"
    shutil.copy(SECRETS / "backup-ssh-key", key)
    key.chmod(0o600)
    result = subprocess.run(
        ["borg", "init", "--encryption=repokey-blake2", other],
        env={**os.environ, "BORG_PASSPHRASE": "x", "BORG_BASE_DIR": str(tmp_path / "base"),
             "BORG_RSH": f"ssh -i {key} -o IdentitiesOnly=yes -o BatchMode=yes "
                         "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"},
        capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "path not allowed" in result.stderr + result.stdout


def test_append_only_holds_against_the_client(server: Server, tmp_path: Path) -> None:
    box = make_box(tmp_path, server, "ao")
    backup_step.run(box.ctx)
    fill_data(box.ctx.paths.root)
    start_standins(box)
    try:
        report = run_backup(box.ctx, prune=False)
    finally:
        remove_standins(box)
    _, before = server.part.exec("du", "-sb", "/srv/borg/arkbox/data")
    from firstboot.backup.client import Borg

    runner = Borg(box.ctx)
    runner.run(("borg", "delete", f"::{report.archive}"), what="delete")
    runner.run(("borg", "compact"), what="compact")
    _, after = server.part.exec("du", "-sb", "/srv/borg/arkbox/data")
    # The client saw the archive go, but nothing was freed: the server can roll back.
    assert int(after.split()[0]) >= int(before.split()[0])
    code, config = server.part.exec("cat", "/srv/borg/arkbox/config")
    assert code == 0 and "append_only = 1" in config
    code, out = server.part.exec("systemctl", "list-timers", "--all", "--no-legend",
                                 "arkbox-borg-check.timer")
    assert "arkbox-borg-check.timer" in out
    code, out = server.part.exec("runuser", "-u", "borg", "--", "/usr/local/sbin/arkbox-borg-check")
    assert code == 0 and "ok: /srv/borg/arkbox" in out, out


def test_interrupted_backups_leave_a_repository_the_next_run_completes(
        server: Server, tmp_path: Path) -> None:
    """Kill `arkbox-installer backup` (and its borg) mid-run, three times; then it just works."""
    box = make_box(tmp_path, server, "cut")
    backup_step.run(box.ctx)
    fill_data(box.ctx.paths.root)
    bulk = box.ctx.paths.data / "volumes/calendar/collections/bulk"
    bulk.mkdir()
    for index in range(40):  # enough to be cut in the middle
        (bulk / f"blob{index}").write_bytes(os.urandom(1 << 20))
    start_standins(box)
    installer = str(Path(sys.executable).parent / "arkbox-installer")
    argv = [installer, "backup", "--no-prune", "--root", str(box.ctx.paths.root),
            "--config", str(box.ctx.config.source_path)]
    try:
        for delay in (1.5, 3.0, 4.5):
            proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            (bulk / f"new{delay}").write_bytes(os.urandom(1 << 20))
        report = run_backup(box.ctx, prune=False)
        calendar = box.ctx.docker.containers.get(box.containers[0])
        calendar.reload()
        assert calendar.status == "running"  # not left paused by a killed run
    finally:
        remove_standins(box)
    assert report.archive in {str(a["name"]) for a in list_archives(box.ctx)}
    check_repository(box.ctx)  # raises when borg check finds a problem


def backups_in(box: Box) -> set[str]:
    """The backups in the repository the module's boxes share (not checkpoints)."""
    return {name for a in list_archives(box.ctx)
            if borg.parse_archive_name(name := str(a["name"])) is not None}


def test_a_backup_stopped_while_a_service_is_paused_unpauses_it(server: Server,
                                                               tmp_path: Path) -> None:
    """SIGTERM (systemctl stop, shutdown) to every process of the run while calendar is
    paused: calendar runs again at once, no archive is made, status says why."""
    box = make_box(tmp_path, server, "term")
    backup_step.run(box.ctx)
    fill_data(box.ctx.paths.root)
    bulk = box.ctx.paths.data / "volumes/calendar/collections/bulk"
    bulk.mkdir()
    for index in range(60):  # a read long enough to be caught paused
        (bulk / f"blob{index}").write_bytes(os.urandom(1 << 20))
    # As if a backup had read it already: no pre-read (firstboot.backup.preread), so borg
    # reads all of it while calendar is paused.
    preread.record_since(BackupPaths(box.ctx.paths), time.time_ns(), "none")
    start_standins(box)
    installer = str(Path(sys.executable).parent / "arkbox-installer")
    argv = [installer, "backup", "--no-prune", "--root", str(box.ctx.paths.root),
            "--config", str(box.ctx.config.source_path)]
    calendar = box.ctx.docker.containers.get(box.containers[0])
    before = backups_in(box)
    try:
        proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            calendar.reload()
            if calendar.attrs["State"]["Paused"]:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the backup never paused calendar")
        os.killpg(proc.pid, signal.SIGTERM)  # as systemd signals the whole unit
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr
        calendar.reload()
        assert calendar.status == "running" and not calendar.attrs["State"]["Paused"]
        assert backups_in(box) == before  # nothing committed
        failure = read_failure(box.ctx.paths)
        assert failure is not None and "interrupted" in failure["message"], failure
        assert not (box.ctx.paths.data / ".backup").exists()  # its FIFOs removed
        report = run_backup(box.ctx, prune=False)  # the next run just works
        assert backups_in(box) == before | {report.archive}
    finally:
        remove_standins(box)


def test_a_flipped_byte_on_the_server_is_found_by_verify_data(server: Server,
                                                             tmp_path: Path) -> None:
    """It damages the repository the other tests use, and mends it after itself."""
    box = make_box(tmp_path, server, "tamper")
    backup_step.run(box.ctx)
    check_repository(box.ctx, verify_data=True)  # clean before
    code, out = server.part.exec("sh", "-c", "ls -S /srv/borg/arkbox/data/*/* | head -1")
    segment = out.strip()
    assert code == 0 and segment, out
    _, size = server.part.exec("stat", "-c", "%s", segment)
    offset = int(size) // 2
    _, byte = server.part.exec("sh", "-c", f"od -An -tu1 -j {offset} -N 1 {segment}")
    flipped = int(byte.strip()) ^ 0xFF

    def write_byte(value: int) -> None:
        code, out = server.part.exec("sh", "-c", f"printf '\\{value:03o}' | dd of={segment} "
                                     f"bs=1 seek={offset} conv=notrunc status=none")
        assert code == 0, out

    write_byte(flipped)
    try:
        with pytest.raises(BackupError) as failure:
            check_repository(box.ctx, verify_data=True)
    finally:
        write_byte(int(byte.strip()))  # the tests after this one use the repository
    print(f"\ntampered {segment} at {offset}: {failure.value.message.splitlines()[0]}")
    assert "damaged" in failure.value.message and failure.value.hint
    check_repository(box.ctx, verify_data=True)  # mended: clean again
