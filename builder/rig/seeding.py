"""How the rig hands an appliance container its seed: as a systemd credential from the
"container manager" (systemd as PID 1 imports $CREDENTIALS_DIRECTORY's files as system
credentials, as it imports qemu's fw_cfg ones in a VM), so the box reads it exactly as
on a VPS. The seed is made the way an operator makes one (`arkbox seed`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from builder.seed import make_seed
from firstboot.core.config import load_config
from firstboot.core.seed import CREDENTIAL

# Outside /run (a tmpfs mounted at start would hide it); laid in before the container starts.
CREDENTIALS_IN_CONTAINER = "/.arkbox-rig-credentials"


def seed_for(config_text: str, written_for: Path) -> bytes:
    """The seed of a box booted with `config_text`, its secret references read next to
    `written_for` (the config file the text was made from, e.g. config/default.yaml)."""
    with tempfile.TemporaryDirectory(prefix="arkbox-rig-seed-") as tmp:
        path = Path(tmp) / written_for.name
        path.write_text(config_text)
        config = load_config(path, check_secrets=False)
    sha256 = config.config_sha256
    assert sha256 is not None
    # The text's digest (what the box checks), with references resolved where they were written.
    config.bind_source(written_for.resolve(), sha256, config.warnings)
    return make_seed(config, "appliance")


SEED_FILE = f"{CREDENTIALS_IN_CONTAINER}/{CREDENTIAL}"


def environment_for(files: dict[str, tuple[bytes, int]]) -> dict[str, str]:
    """The environment systemd finds the credentials by, when a seed is among `files`."""
    return {"CREDENTIALS_DIRECTORY": CREDENTIALS_IN_CONTAINER} if SEED_FILE in files else {}
