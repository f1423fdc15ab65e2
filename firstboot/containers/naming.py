"""Names and labels of everything arkbox makes in the engine.

Every object carries `arkbox.owner=arkbox` and `arkbox.instance=<prefix>`. The
prefix is "arkbox" on a real box; an installer rooted elsewhere (a test's temp
dir) gets a prefix of its own, so it can never touch a real box's containers nor
another test's, and its objects are easy to find and remove.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

LABEL_OWNER = "arkbox.owner"
OWNER = "arkbox"
LABEL_INSTANCE = "arkbox.instance"
LABEL_ROLE = "arkbox.role"  # service | proxy (mail and others add their own)
LABEL_SERVICE = "arkbox.service"
LABEL_CONFIG_HASH = "arkbox.config-hash"

ROLE_SERVICE = "service"
ROLE_PROXY = "proxy"


@dataclass(frozen=True)
class Naming:
    prefix: str = "arkbox"

    @classmethod
    def for_root(cls, root: Path) -> Naming:
        if root == Path("/"):
            return cls()
        digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
        return cls(f"arkbox-t{digest}")

    def container(self, service: str) -> str:
        return f"{self.prefix}-{service}"

    def network(self, service: str) -> str:
        return f"{self.prefix}-{service}"

    @property
    def proxy_container(self) -> str:
        return f"{self.prefix}-proxy"

    @property
    def proxy_network(self) -> str:
        """The proxy's own network: the one its published ports are reached through."""
        return f"{self.prefix}-proxy"

    def labels(self, role: str, service: str | None = None) -> dict[str, str]:
        labels = {LABEL_OWNER: OWNER, LABEL_INSTANCE: self.prefix, LABEL_ROLE: role}
        if service is not None:
            labels[LABEL_SERVICE] = service
        return labels

    def filters(self, role: str | None = None) -> dict[str, str | list[str] | bool]:
        """docker SDK `filters=` selecting this instance's objects (of one role)."""
        wanted: list[str] = [f"{LABEL_OWNER}={OWNER}", f"{LABEL_INSTANCE}={self.prefix}"]
        if role is not None:
            wanted.append(f"{LABEL_ROLE}={role}")
        return {"label": wanted}
