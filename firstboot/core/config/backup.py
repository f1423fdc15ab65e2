"""The `backup` section (the appliance's side) and `backup_server` (the server role)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from firstboot.core.config.base import EXAMPLE_ADMIN_KEY, EXAMPLE_HOST_KEY, Section
from firstboot.core.config.network import RepositoryUrl, SshPublicKey
from firstboot.core.config.scalars import (
    ApplianceName,
    Compression,
    KeepCount,
    Port,
    RepositoryPath,
    Schedule,
    Size,
)
from firstboot.core.config.secrets import SecretRef


class Retention(Section):
    """How many archives borg prune keeps per period."""

    daily: KeepCount = Field(default=7, description="Daily archives kept.", examples=[7])
    weekly: KeepCount = Field(default=4, description="Weekly archives kept.", examples=[4])
    monthly: KeepCount = Field(default=6, description="Monthly archives kept.", examples=[6])
    yearly: KeepCount = Field(default=0, description="Yearly archives kept.", examples=[1])


class Backup(Section):
    """Encrypted, deduplicated off-site backups with borg, and restore at first boot."""

    repository: RepositoryUrl | None = Field(
        default=None,
        description="The borg repository on the backup server. No backups when absent.",
        examples=["ssh://borg@backup.arkbox.test:22/./arkbox"],
    )
    passphrase: SecretRef | None = Field(
        default=None,
        description="Where the repository passphrase (repokey-blake2) is kept. Required with "
        "a repository; without it no restore is possible.",
        examples=[{"file": "secrets/borg-passphrase"}],
    )
    ssh_key: SecretRef | None = Field(
        default=None,
        description="Private SSH key (OpenSSH format) for the backup server, so a rebuilt "
        "appliance can reach it at once. Generated at first boot when absent.",
        examples=[{"file": "secrets/backup-ssh-key"}],
    )
    host_key: SshPublicKey | None = Field(
        default=None,
        description="The backup server's SSH host public key, pinned. Trusted on first use "
        "when absent.",
        examples=[EXAMPLE_HOST_KEY],
    )
    schedule: Schedule = Field(
        default="daily",
        description="When backups run: a systemd OnCalendar expression "
        "(check with: systemd-analyze calendar EXPR).",
        examples=["*-*-* 03:00"],
    )
    retention: Retention = Field(
        default_factory=Retention,
        description="Archives kept after each backup.",
        examples=[{"daily": 7, "weekly": 4, "monthly": 6}],
    )
    restore: Literal["auto", "never", "required"] = Field(
        default="auto",
        description="At first boot: auto restores when the repository holds archives, else "
        "starts fresh; never always starts fresh; required waits for the repository "
        "and restores, never starting fresh.",
        examples=["auto"],
    )
    compression: Compression = Field(
        default="lz4",
        description="borg compression; lz4 costs almost nothing.",
        examples=["lz4"],
    )


class BackupClient(Section):
    """An appliance allowed to store its repository on this backup server."""

    name: ApplianceName = Field(
        description="The client's name (its appliance.name).", examples=["arkbox-test"]
    )
    public_key: SshPublicKey = Field(
        description="The client's backup SSH public key (from backup.ssh_key).",
        examples=[EXAMPLE_ADMIN_KEY],
    )
    path: RepositoryPath = Field(
        description="The repository path the client is restricted to, as in its repository URL.",
        examples=["./arkbox"],
    )
    quota: Size | None = Field(
        default=None,
        description="Storage quota of the repository (borg serve --storage-quota).",
        examples=["100G"],
    )


class BackupServer(Section):
    """The backup-server role: one SSH port, each client forced into append-only borg serve."""

    port: Port = Field(default=22, description="The SSH port clients connect to.", examples=[22])
    clients: list[BackupClient] = Field(
        default_factory=list,
        description="Appliances allowed to back up here.",
        examples=[[{"name": "arkbox-test", "public_key": EXAMPLE_ADMIN_KEY, "path": "./arkbox"}]],
    )
