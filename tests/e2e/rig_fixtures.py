"""Helpers the end-to-end tests share: the built appliance as a rig image, test configs.

Deliberately not a conftest.py (one in tests/e2e would shadow tests/conftest.py).
Everything here stands on builder/rig/parts.py: no second way of running containers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builder.rig.parts import (
    ApplianceContainer,
    Rig,
    RigContainer,
    image_from_rootfs_tar,
    rig_image,
)
from firstboot.core.locations import INSTALLER_PROGRAM as INSTALLER  # noqa: F401  (tests import it from here)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "config/default.yaml"
CACHE_DIR = Path(os.environ.get("ARKBOX_CACHE_DIR", "/var/cache/arkbox"))
# Added to every e2e rig's subnet octet: two checkouts can test side by side on one engine.
SUBNET_SHIFT_ENV = "ARKBOX_TEST_SUBNET_SHIFT"
STATE = "/var/lib/arkbox"
STATUS_JSON = f"{STATE}/status.json"
FULLCHAIN = "/srv/arkbox/tls/live/fullchain.pem"
# A generous bound for systemd to come up in the rig on a busy 2-core CI machine.
BOOT_TIMEOUT_S = 420
# The names the default config routes, and what each application's page must show.
ROUTES = {
    "cal.arkbox.test": ("/.web/", "Radicale Web Interface"),
    "wiki.arkbox.test": ("/", "[DokuWiki]"),
    "webmail.arkbox.test": ("/", "Welcome to Webmail"),
}


def admin_key() -> str:
    """A fresh admin SSH key for this test run (only its public half is needed)."""
    public = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{public.decode()} e2e@arkbox-tests"


def admin_key_pair(where: Path, comment: str) -> str:
    """A fresh admin key: the private half written to `where` (0600) for this test's SSH,
    the public line returned."""
    private = Ed25519PrivateKey.generate()
    where.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.OpenSSH,
                                            serialization.NoEncryption()))
    where.chmod(0o600)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
    return f"{public.decode()} {comment}"


def default_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text())
    # No backup server in these rigs: backups off (test_backup_restore.py has one).
    data.pop("backup", None)
    return data


def config_with(key: str, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """config/default.yaml with the test admin key (and `changes` merged in at the top level)."""
    config = default_config()
    config["appliance"]["admin"]["ssh_keys"] = [key]
    for section, value in (changes or {}).items():
        config[section] = value
    return config


def dump(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def appliance_image(rig: Rig) -> str:
    """The built root fs (one `arkbox build` per test run), imported once by content digest."""
    from built import built_appliance

    return image_from_rootfs_tar(rig.client, built_appliance().rootfs_tar, "arkbox/appliance")


class ClientContainer(RigContainer):
    """A client on the rig's network: curl, nmap, openssl, swaks, ssh, borg (NET_RAW for
    nmap's SYN scans). Ready when it runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.with_capabilities("NET_RAW")


def the_client_image() -> str:
    """The rig's outside client (image/recipes/client), built offline like every service
    image (cached)."""
    return rig_image(ROOT, CACHE_DIR, "client")


def new_rig(purpose: str, octet: int) -> Rig:
    """A rig of its own: unique name, subnets unlikely to collide with other tests' rigs.
    Two checkouts testing side by side on one engine set SUBNET_SHIFT_ENV apart."""
    suffix = uuid.uuid4().hex[:6]
    octet += int(os.environ.get(SUBNET_SHIFT_ENV, "0"))
    return Rig(name=f"arkbox-e2e-{purpose}-{suffix}", ipv4_subnet=f"172.30.{octet}.0/24",
               ipv6_subnet=f"fd42:a7b0:{octet:x}::/64")


@contextmanager
def rig_up(purpose: str, octet: int) -> Iterator[Rig]:
    rig = new_rig(purpose, octet)
    with rig.running():
        yield rig


def add_appliance(rig: Rig, image: str, config: str | None,
                  files: dict[str, tuple[bytes, int]] | None = None,
                  seeded: bool = True, preload_images: bool = True) -> ApplianceContainer:
    """The appliance, booting; with its seed (made from `config`, the secrets of
    config/default.yaml) as a systemd credential unless `seeded` is False; its engine holds
    the service images unless `preload_images` is False (then first boot loads them)."""
    part = ApplianceContainer(rig, "appliance", image, aliases=["arkbox.test"], config=config,
                              seed_config=DEFAULT_CONFIG if seeded else None,
                              files=dict(files or {}), boot_timeout=BOOT_TIMEOUT_S,
                              preload_images=preload_images)
    rig.add(part)
    return part


def add_client(rig: Rig, image: str) -> ClientContainer:
    part = ClientContainer(rig, "client", image)
    rig.add(part)
    return part


@dataclass(frozen=True)
class Scan:
    open: set[int]
    closed: set[int]
    raw: str


def nmap(client: ClientContainer, target: str, family: int, ports: str = "-") -> Scan:
    """A SYN scan of `target` from the client; `ports` as nmap's -p (all 65535 by default)."""
    argv = ["nmap", "-Pn", "-sS", "-n", f"-p{ports}", "--min-rate", "8000",
            "--max-retries", "1", "-oG", "-", target]
    if family == 6:
        argv.insert(1, "-6")
    code, out = client.exec(*argv)
    assert code == 0, out
    found: dict[str, set[int]] = {"open": set(), "closed": set()}
    for port, state in re.findall(r"(\d+)/(open|closed|filtered)/tcp", out):
        if state in found:
            found[state].add(int(port))
    return Scan(found["open"], found["closed"], out)


def sh(part: ApplianceContainer | ClientContainer, script: str) -> tuple[int, str]:
    return part.exec("sh", "-c", script)


def check(part: ApplianceContainer | ClientContainer, script: str) -> str:
    code, out = sh(part, script)
    assert code == 0, f"{script!r} exited {code}:\n{out}"
    return out


def installer(app: ApplianceContainer, command: str, kill_at: str = "") -> tuple[int, str]:
    """`app.installer` with COMMAND split as a shell would (optionally with the kill hook)."""
    return app.installer(*shlex.split(command),
                         environment={"ARKBOX_TEST_KILL_AT": kill_at} if kill_at else None)


def status(app: ApplianceContainer) -> dict[str, Any]:
    return app.status_json()


def step_states(data: dict[str, Any]) -> dict[str, str]:
    return {step["name"]: step["state"] for step in data["steps"]}


def containers(app: ApplianceContainer) -> dict[str, str]:
    """arkbox's containers inside the appliance: name -> full ID."""
    out = check(app, "docker ps -a --no-trunc --filter label=arkbox.owner=arkbox "
                     "--format '{{.Names}} {{.ID}}'")
    return dict(line.split() for line in out.splitlines() if line.strip())


def container_specs(app: ApplianceContainer) -> dict[str, tuple[str, str, str]]:
    """name -> (config hash label, image ID, state): what must match between two boxes."""
    out = check(app, "for c in $(docker ps -aq --filter label=arkbox.owner=arkbox); do "
                     "docker inspect --format '{{.Name}} {{index .Config.Labels "
                     "\"arkbox.config-hash\"}} {{.Image}} {{.State.Status}}' $c; done")
    specs = {}
    for line in out.splitlines():
        name, config_hash, image, state = line.split()
        specs[name.lstrip("/")] = (config_hash, image, state)
    return specs


# Rendered from the config alone, so equal on any two boxes with the same config.
# (The TLS key and certificate, and nginx's copy of them, are made per box.)
DETERMINISTIC_FILES = (
    "/etc/arkbox/rendered/nftables.conf",
    "/etc/arkbox/rendered/nginx/conf.d/arkbox.conf",
    "/srv/arkbox/manifest.json",
)


def checksums(app: ApplianceContainer,
              paths: tuple[str, ...] = DETERMINISTIC_FILES) -> dict[str, str]:
    out = check(app, "sha256sum " + " ".join(paths))
    return {path: digest for digest, path in (line.split() for line in out.splitlines())}


def tree_checksums(app: ApplianceContainer, root: str) -> dict[str, str]:
    """sha256 of every file below `root` (for one box compared with itself)."""
    out = check(app, f"find {root} -type f -print0 | sort -z | xargs -0r sha256sum")
    return {path: digest for digest, path in (line.split(maxsplit=1) for line in out.splitlines())}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load_json(text: str) -> Any:
    return json.loads(text)


def default_sigint() -> None:
    """preexec_fn for a child that is to be interrupted as from a terminal: also when
    pytest itself runs in the background, where SIGINT is ignored and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
