"""The `backup` section (the appliance's side) and `backup_server` (the server role)."""

from __future__ import annotations

from typing import Literal

from firstboot.core.config.base import EXAMPLE_ADMIN_KEY, EXAMPLE_HOST_KEY, Section, key
from firstboot.core.config.network import RepositoryUrl, SshPublicKey
from firstboot.core.config.scalars import (
    ApplianceName,
    Compression,
    KeepCount,
    Parallelism,
    Port,
    Quota,
    RepositoryPath,
    Schedule,
    ScheduleOrOff,
)
from firstboot.core.config.secrets import SecretRef


class Retention(Section):
    """How many archives borg prune keeps per period."""

    daily: KeepCount = key("Daily archives kept.", default=7, example=7)
    weekly: KeepCount = key("Weekly archives kept.", default=4, example=4)
    monthly: KeepCount = key("Monthly archives kept.", default=6, example=6)
    yearly: KeepCount = key("Yearly archives kept.", default=0, example=1)


class Backup(Section):
    """Encrypted, deduplicated off-site backups with borg, and restore at first boot."""

    repository: RepositoryUrl | None = key(
        "The borg repository on the backup server. No backups when absent.",
        default=None, example="ssh://borg@backup.arkbox.test:22/./arkbox")
    passphrase: SecretRef | None = key(
        "Where the repository passphrase (repokey-blake2) is kept. Required with a repository; "
        "without it no restore is possible.",
        default=None, example={"file": "secrets/borg-passphrase"})
    ssh_key: SecretRef | None = key(
        "Private SSH key (OpenSSH format) for the backup server, so a rebuilt appliance can "
        "reach it at once. Generated at first boot when absent.",
        default=None, example={"file": "secrets/backup-ssh-key"})
    host_key: SshPublicKey | None = key(
        "The backup server's SSH host public key, pinned. Trusted on first use when absent "
        "(validate and build warn: whoever answers first is believed).",
        default=None, example=EXAMPLE_HOST_KEY)
    schedule: Schedule = key(
        "When backups run: a systemd OnCalendar expression (check with: systemd-analyze "
        "calendar EXPR).",
        default="daily", example="*-*-* 03:00")
    retention: Retention = key(
        "Archives kept after each backup.",
        default_factory=Retention, example={"daily": 7, "weekly": 4, "monthly": 6})
    restore: Literal["auto", "never", "required"] = key(
        "At first boot: auto restores when the repository holds archives, else starts fresh; "
        "never always starts fresh; required waits for the repository and restores, never "
        "starting fresh: use it on a box that replaces another (docs/backup.md).",
        default="auto", example="auto")
    restore_parallelism: Parallelism | None = key(
        "How many borg extracts a restore runs at once (the rest of the box, and each "
        "paused service's volumes on its own). Absent: the box's core count.",
        default=None, example=2)
    compression: Compression = key(
        "borg compression; lz4 costs almost nothing.",
        default="lz4", example="lz4")
    drill: ScheduleOrOff = key(
        "When a restore drill runs on its own (arkbox-installer drill: the latest backup "
        "restored into a throwaway directory and its services started, the live box "
        "untouched): weekly (Sunday 04:30, after the night's backup), another systemd "
        "OnCalendar expression, or off.",
        default="weekly", example="weekly")


# A client's repository quota unless set: one client cannot fill the server's disk. borg
# counts G as 10^9 bytes; an append-only repository keeps pruned data until compaction.
DEFAULT_CLIENT_QUOTA = "100G"


class BackupClient(Section):
    """An appliance allowed to store its repository on this backup server."""

    name: ApplianceName = key("The client's name (its appliance.name).", example="arkbox-test")
    public_key: SshPublicKey = key(
        "The client's backup SSH public key (from backup.ssh_key).",
        example=EXAMPLE_ADMIN_KEY)
    path: RepositoryPath = key(
        "The repository path the client is restricted to, as in its repository URL: "
        "./NAME below the borg home /srv/borg (or that directory's absolute path). No two "
        "clients share a directory, nor has one its repository inside another's.",
        example="./arkbox")
    quota: Quota | None = key(
        "Storage quota of the repository (borg serve --storage-quota, at least 10M); "
        "backup_server.default_quota when absent.",
        default=None, example="250G")


class BackupServer(Section):
    """The backup-server role: one SSH port, each client forced into append-only borg serve."""

    port: Port = key("The SSH port clients connect to.", default=22, example=22)
    default_quota: Quota = key(
        "Storage quota of each client's repository unless the client sets its own, so one "
        "client cannot fill the server (borg serve --storage-quota; borg counts G as 10^9 "
        "bytes, and pruned archives count until the operator compacts). Keep the sum below "
        "the server's disk.",
        default=DEFAULT_CLIENT_QUOTA, example="500G")
    clients: list[BackupClient] = key(
        "Appliances allowed to back up here.",
        default_factory=list,
        example=[{"name": "arkbox-test", "public_key": EXAMPLE_ADMIN_KEY, "path": "./arkbox"}])
