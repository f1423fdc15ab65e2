"""The appliance config, declared once: `Appliance` and its small top-level sections.

Descriptions and examples here are the documentation: docs/config.md and
config/appliance.schema.json are generated from them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import PrivateAttr

from firstboot.core.config.alerts import Alerts
from firstboot.core.config.backup import Backup, BackupServer
from firstboot.core.config.base import EXAMPLE_ADMIN_KEY, Line, Section, key
from firstboot.core.config.hardening import Hardening
from firstboot.core.config.mail import Mail
from firstboot.core.config.network import Cidr, Email, Hostname, HttpsUrl, HttpUrl, SshKeys
from firstboot.core.config.problems import PathPart, Problem
from firstboot.core.config.scalars import (
    ApplianceName,
    DebianPackage,
    FirewallComment,
    Port,
    ServiceName,
    Size,
    Timezone,
    UnixUser,
)
from firstboot.core.config.secrets import SecretRef, iter_secret_refs
from firstboot.core.config.services import Service
from firstboot.core.config.status_page import StatusPage
from firstboot.core.config.updates import Updates

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
ANYWHERE = ["0.0.0.0/0", "::/0"]
METADATA_USER_DATA = "http://169.254.169.254/latest/user-data"


class Admin(Section):
    """The administrator's login: SSH with keys only, no passwords."""

    user: UnixUser = key("The administrator's user name.", default="admin", example="ops")
    ssh_keys: SshKeys = key(
        "OpenSSH public keys allowed to log in as the administrator; at least one.",
        example=[EXAMPLE_ADMIN_KEY])
    ssh_port: Port = key("The SSH port.", default=22, example=22)
    allow_from: list[Cidr] = key(
        "Networks allowed to reach the SSH port. On a backup server, whose port is open to "
        "its clients, the networks the admin may log in from (sshd's AllowUsers).",
        default_factory=lambda: list(ANYWHERE),
        min_length=1,
        example=["203.0.113.0/24", "2001:db8::/32"])


class Identity(Section):
    """Who the appliance is: name, domain, host name, time zone, administrator."""

    name: ApplianceName = key(
        "Short name; names the image files (out/NAME.qcow2).",
        example="arkbox-test")
    domain: Hostname = key("The organisation's main DNS domain.", example="arkbox.test")
    hostname: Hostname = key(
        "The appliance's own fully-qualified host name; it serves the status page.",
        example="arkbox.test")
    timezone: Timezone = key(
        "IANA time zone of the system.",
        default="Etc/UTC", example="Europe/Paris")
    admin: Admin = key(
        "The administrator's SSH access.",
        example={"user": "ops", "ssh_keys": [EXAMPLE_ADMIN_KEY]})


class Tls(Section):
    """Certificates from an ACME CA, with a self-signed fallback until one is issued."""

    acme_directory: HttpsUrl = key(
        "ACME directory URL (Let's Encrypt; Pebble in tests).",
        default=LETS_ENCRYPT, example=LETS_ENCRYPT)
    contact_email: Email | None = key(
        "Contact address registered with the ACME account.",
        default=None, example="admin@arkbox.test")
    ca_bundle: Line | None = key(
        "PEM file of extra CA certificates trusted for the ACME directory (a test CA like "
        "Pebble), relative to the config file.",
        default=None, min_length=1, example="pebble.minica.pem")
    key_type: Literal["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-4096"] = key(
        "Key type of the certificates.",
        default="ecdsa-p256", example="ecdsa-p256")


class FirewallRule(Section):
    """One extra port opened in the firewall."""

    port: Port = key("The port to open.", example=8443)
    proto: Literal["tcp", "udp"] = key("Protocol.", default="tcp", example="udp")
    allow_from: list[Cidr] = key(
        "Networks allowed to reach the port.",
        default_factory=lambda: list(ANYWHERE), min_length=1, example=["198.51.100.0/24"])
    comment: FirewallComment = key(
        "Why the port is open (kept in the firewall rule).",
        example="WireGuard")


class Firewall(Section):
    """Default drop. Open: admin SSH, 80, 443, and the mail ports when mail is on."""

    allow: list[FirewallRule] = key(
        "Extra ports to open; nothing else is reachable.",
        default_factory=list, example=[{"port": 51820, "proto": "udp", "comment": "WireGuard"}])


class Build(Section):
    """How `arkbox build` makes the image."""

    mirror: HttpUrl = key(
        "Debian mirror for the root fs and the service images.",
        default="http://deb.debian.org/debian", example="http://deb.debian.org/debian")
    suite: Literal["bookworm", "trixie"] = key(
        "Debian release of the image.",
        default="trixie", example="trixie")
    disk_size: Size = key("Size of the disk image.", default="4G", example="8G")
    extra_packages: list[DebianPackage] = key(
        "Extra Debian packages installed on the host system.",
        default_factory=list, example=["htop", "tmux"])
    hardening: Hardening = key(
        "Settings of the image's hardening.",
        default_factory=Hardening, example={"auto_reboot": True, "auto_reboot_time": "03:15"})


class SeedSettings(Section):
    """Where first boot looks for this box's seed (its secrets, made by `arkbox seed`). The
    systemd credential arkbox-seed and a partition named arkbox-seed are always looked at,
    in that order; see docs/seed.md."""

    metadata: bool = key(
        "Last, read the seed from the provider's metadata service (EC2-style user-data). "
        "Off by default: user-data cannot be wiped from the box, and anything on it that "
        "reaches the link-local address can read it.",
        default=False, example=True)
    metadata_url: HttpUrl = key(
        "The URL of the user-data, read with a plain GET (no IMDSv2 token).",
        default=METADATA_USER_DATA, example=METADATA_USER_DATA)


def _mail_off() -> Mail:
    return Mail(enabled=False)


class Appliance(Section):
    """A whole appliance: what `arkbox build` turns into a server image."""

    appliance: Identity = key(
        "Who the appliance is.",
        example={"name": "arkbox-test", "domain": "arkbox.test", "hostname": "arkbox.test",
                 "admin": {"ssh_keys": [EXAMPLE_ADMIN_KEY]}})
    tls: Tls = key(
        "TLS certificates.",
        default_factory=Tls, example={"contact_email": "admin@arkbox.test"})
    mail: Mail = key(
        "The mail server; off when absent.",
        default_factory=_mail_off,
        example={"hostname": "mail.arkbox.test", "domains": ["arkbox.test"]})
    services: dict[ServiceName, Service] = key(
        "The applications, by service name.",
        default_factory=dict,
        example={"wiki": {"recipe": "dokuwiki",
                          "route": {"hostname": "wiki.arkbox.test", "port": 80}}})
    backup: Backup = key(
        "Off-site backups and restore; off when no repository is given.",
        default_factory=Backup,
        example={"repository": "ssh://borg@backup.arkbox.test:22/./arkbox",
                 "passphrase": {"file": "secrets/borg-passphrase"}})
    alerts: Alerts = key(
        "Alerts by email, webhooks and backup pings; email to tls.contact_email by default.",
        default_factory=Alerts, example={"email": {"to": ["admin@arkbox.test"]}, "webhooks": [
            {"url": "https://hooks.example.org/arkbox"}]})
    firewall: Firewall = key(
        "Extra firewall openings.",
        default_factory=Firewall,
        example={"allow": [{"port": 51820, "proto": "udp", "comment": "WireGuard"}]})
    status_page: StatusPage | None = key(
        "The admin's status page (HTTPS, password); off when absent.",
        default=None, example={"password": {"file": "secrets/status-page-password"}})
    updates: Updates = key(
        "Unattended updates from signed bundles; off unless enabled.",
        default_factory=Updates,
        example={"enabled": True, "url": "https://builds.example.org/arkbox-test-update.tar",
                 "signing_key": EXAMPLE_ADMIN_KEY})
    build: Build = key("Image build settings.", default_factory=Build, example={"disk_size": "8G"})
    seed: SeedSettings = key(
        "Where first boot looks for the box's seed.",
        default_factory=SeedSettings, example={"metadata": True})
    backup_server: BackupServer | None = key(
        "Settings of the backup-server role built from this config.",
        default=None, example={"port": 22, "clients": []})

    _source: Path | None = PrivateAttr(default=None)
    _sha256: str | None = PrivateAttr(default=None)
    _warnings: list[Problem] = PrivateAttr(default_factory=list)

    def bind_source(self, source: Path, sha256: str, warnings: list[Problem]) -> None:
        """Remember the file this config was loaded from (done by `load_config`)."""
        self._source = source
        self._sha256 = sha256
        self._warnings = list(warnings)

    @property
    def source_path(self) -> Path | None:
        """The config file, when loaded from one."""
        return self._source

    @property
    def base_dir(self) -> Path:
        """The directory secret and CA file references are relative to."""
        return self._source.parent if self._source is not None else Path.cwd()

    @property
    def config_sha256(self) -> str | None:
        """sha256 of the config file's bytes, when loaded from one."""
        return self._sha256

    @property
    def warnings(self) -> list[Problem]:
        """What deserves attention although the config is valid (e.g. a 0644 secret file)."""
        return list(self._warnings)

    def secret(self, ref: SecretRef) -> str:
        """Read a secret referenced by this config. Never log the result."""
        return ref.resolve(self.base_dir)

    def secret_refs(self) -> Iterator[tuple[tuple[PathPart, ...], SecretRef]]:
        """Every secret reference, with its path (e.g. for the build to embed them)."""
        return iter_secret_refs(self)
