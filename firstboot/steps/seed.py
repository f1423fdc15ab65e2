"""Step `seed`: the box's secrets, from its seed, before anything else runs.

The image carries the config with secret references only; each box gets its secrets in a
seed (`arkbox seed`), read from the systemd credential arkbox-seed, a partition named
arkbox-seed, or (when the config allows) the provider's user-data, then wiped where the
box can. When every secret is already installed (a retry, `apply`), nothing is read.
The work is in firstboot/seed_sources.py and firstboot/seed_install.py.
"""

from __future__ import annotations

from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.step import Outcome
from firstboot.seed_install import provide_secrets, read_role, verify_installed
from firstboot.seed_sources import default_sources

NAME = "seed"


def applies(config: Appliance) -> bool:
    # The role may need none of them (a backup server); run() says so.
    return any(True for _ in config.secret_refs())


def run(ctx: FirstbootContext) -> Outcome:
    return provide_secrets(
        ctx.config,
        role=read_role(ctx.paths.build_manifest),
        sources=default_sources(ctx.config, ctx.run),
        record_path=ctx.paths.seed_record,
        now=ctx.now,
        checkpoint=ctx.checkpoint,
    )


def verify(ctx: FirstbootContext) -> str | None:
    return verify_installed(ctx.config, read_role(ctx.paths.build_manifest))
