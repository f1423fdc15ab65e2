"""What every first-boot step gets: the config, where things live, and the engine."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from firstboot.config import Appliance

if TYPE_CHECKING:
    import docker

log = logging.getLogger("arkbox.firstboot")


class Mode(str, Enum):
    FRESH = "FRESH"
    RESTORE = "RESTORE"


@dataclass
class Paths:
    """Every path the installer touches, below `root` ("/" on a real box, a temp dir in tests)."""

    root: Path = Path("/")

    def at(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    @property
    def state(self) -> Path:  # the runner's journal, status.json, the done marker
        return self.at("/var/lib/arkbox")

    @property
    def data(self) -> Path:  # everything a backup carries
        return self.at("/srv/arkbox")

    @property
    def secrets(self) -> Path:
        return self.data / "secrets"

    @property
    def volumes(self) -> Path:
        return self.data / "volumes"

    @property
    def manifest(self) -> Path:  # the resolved environment (services, images, networks)
        return self.data / "manifest.json"

    @property
    def baked_images(self) -> Path:
        return self.at("/usr/share/arkbox/images")

    @property
    def build_manifest(self) -> Path:
        return self.at("/usr/share/arkbox/build-manifest.json")

    @property
    def rendered(self) -> Path:  # generated configs (nftables, nginx, ...)
        return self.at("/etc/arkbox/rendered")


@dataclass
class FirstbootContext:
    config: Appliance
    paths: Paths = field(default_factory=Paths)
    mode: Mode = Mode.FRESH
    _docker: docker.DockerClient | None = None

    @property
    def docker(self) -> docker.DockerClient:
        """The engine client, made on first use so steps that need no engine start fast."""
        if self._docker is None:
            import docker as docker_sdk

            self._docker = docker_sdk.from_env(timeout=120)
        return self._docker
