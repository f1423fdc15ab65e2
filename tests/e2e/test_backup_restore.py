"""Issue 5, end to end: back up appliance A to the backup-server role, destroy A, and boot a
blank appliance B with the same config: it restores itself, unattended.

Both appliances are the built NAME-rootfs.tar booted with systemd (builder/rig/parts.py); the
backup server is the backup-server role's root fs tar, built by the same builder. Real
borg, over real SSH, append-only and restricted to one repository by the server.
Data is written through the applications where that is cheap (CalDAV over HTTPS
through the proxy, SQL through psql in the database container) and compared on B
by content, mode, owner and mtime; the database by its rows; the TLS key by digest.
Issue 7: a message submitted on A (587, STARTTLS + AUTH) is in B's mailbox, byte for
byte with the rest of the mailbox tree, fetched over IMAPS; the DKIM key and the DKIM
record `dns --json` prints are the same on B. The mail store is a part of its own,
read with arkbox-mail paused; its pause is reported like a service's.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from restore_checks import (
    Outside,
    assert_event_stored,
    assert_same_data,
    assert_same_mail,
    data_facts,
    learned_counts,
    mail_facts,
    send_mail_and_wait,
    teach_spam_filter,
    wait_first_boot_or_failure,
    write_data,
)
from rig_fixtures import (
    DEFAULT_CONFIG,
    STATE,
    STATUS_JSON,
    ClientContainer,
    add_client,
    admin_key,
    appliance_image,
    check,
    installer,
    rig_up,
    the_client_image,
)

from builder.rig.parts import (
    ApplianceContainer,
    BackupServerContainer,
    Rig,
    image_from_rootfs_tar,
)
from firstboot.backup.borg import parse_archive_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def full_config(key: str) -> str:
    """config/default.yaml as built (backups on), with this run's admin key."""
    config: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["appliance"]["admin"]["ssh_keys"] = [key]
    return yaml.safe_dump(config, sort_keys=False)


def add_backup_server(rig: Rig) -> BackupServerContainer:
    from built import built_backup_server

    image = image_from_rootfs_tar(rig.client, built_backup_server(), "arkbox/backup-server-role")
    part = BackupServerContainer(rig, "backup", image, aliases=("backup.arkbox.test",))
    rig.add(part)
    return part


def boot(rig: Rig, role: str, image: str, config: str) -> tuple[ApplianceContainer, dict[str, Any]]:
    part = ApplianceContainer(rig, role, image, aliases=["arkbox.test"], config=config,
                         seed_config=DEFAULT_CONFIG)
    started = time.monotonic()
    rig.add(part)
    status = wait_first_boot_or_failure(part, timeout=900)
    print(f"\n{role}: boot to first boot done {time.monotonic() - started:.0f} s")
    return part, status


def step(status: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in status["steps"] if s["name"] == name)
    return found


def in_rig(app: ApplianceContainer, client: ClientContainer) -> Outside:
    """Requests from the rig's client to the appliance's own 443."""
    return Outside(lambda script: check(client, script), f"{app.ip()}:443")


def destroy(rig: Rig, part: ApplianceContainer) -> None:
    """A lost VPS: the box's container and volumes go, the backup server stays."""
    removed = part.destroy_keep_backups()
    assert removed["containers"] == 1 and removed["volumes"] >= 1, removed
    label = {"label": f"arkbox.rig={rig.name}"}
    assert [c.name for c in rig.client.containers.list(all=True, filters=label)
            if c.name == part.name] == []
    assert f"{part.name}-docker" not in {v.name for v in rig.client.volumes.list(filters=label)}
    assert rig.client.containers.get(f"{rig.name}-backup").status == "running"


def test_blank_box_restores_itself_and_continues_the_history() -> None:
    key = admin_key()
    config = full_config(key)
    with rig_up("backup", 161) as rig:
        image = appliance_image(rig)
        add_backup_server(rig)
        client = add_client(rig, the_client_image())
        a, status_a = boot(rig, "a", image, config)
        assert status_a["result"] == "ok", status_a["failures"]
        assert "FRESH" in step(status_a, "restore")["summary"], step(status_a, "restore")
        assert step(status_a, "backup")["state"] == "changed"
        check(a, "test -s /srv/arkbox/secrets/backup/borg-key.txt")
        check(a, "systemctl is-enabled arkbox-backup.timer")

        # Data through the applications; a message through the mail server.
        write_data(a, in_rig(a, client))
        subject = send_mail_and_wait(a)
        learned_a = teach_spam_filter(a)
        mail_a = mail_facts(a)

        started = time.monotonic()
        out = a.backup_now()  # raises with its output when it fails
        backup_s = time.monotonic() - started
        print(f"A: {out.strip().splitlines()[-1]} ({backup_s:.1f} s)")
        last = a.read_json(f"{STATE}/backups.json")["backups"][-1]
        assert "mail" in last["pauses"], last  # arkbox-mail paused while borg read it
        print(f"A: mail store paused {last['pauses']['mail']:.3f} s")
        assert check(a, "docker inspect -f '{{.State.Status}}' arkbox-mail").strip() == "running"
        facts_a = data_facts(a)
        assert_event_stored(a)
        destroy(rig, a)

        b, status_b = boot(rig, "b", image, config)
        assert status_b["result"] == "ok", status_b["failures"]
        restore = step(status_b, "restore")
        assert restore["state"] == "changed" and "RESTORE" in restore["summary"], restore
        assert step(status_b, "restore_dumps")["state"] == "changed", step(status_b,
                                                                             "restore_dumps")
        assert_same_data(b, in_rig(b, client), facts_a)
        assert_same_mail(b, mail_a, subject)
        assert learned_counts(b) == learned_a  # what rspamd learned came back with the mail
        assert check(b, f"cat {STATUS_JSON}")

        code, out = installer(b, "backup")
        assert code == 0, out
        code, out = installer(b, "list")
        assert code == 0, out
        names = [parse_archive_name(line.split()[0]) for line in out.splitlines() if line.strip()]
        backups = [n for n in names if n is not None]
        assert len(backups) == 2, out  # A's backup and B's, in the same repository
        code, out = installer(b, "check")
        assert code == 0, out
