"""`arkbox update CONFIG --host HOST`: hand a box its build's update bundle over the admin SSH.

Copies `OUT/NAME-update.tar` to the box (scp, as the config's admin, to its SSH port),
runs `sudo arkbox-installer update` there with its progress shown here, removes the copy,
and exits with the box's exit code (docs/updates.md). The box does every check itself.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.pipeline.update_bundle import bundle_name
from firstboot.core.config import load_config
from firstboot.core.errors import BadInputError
from firstboot.core.execute import CommandError, run
from firstboot.core.locations import INSTALLER_PROGRAM

# In the admin's home (scp's relative paths are), not a shared /var/tmp.
REMOTE_BUNDLE = "arkbox-update.tar"
COPY_TIMEOUT_S = 3600.0  # 1 GB over a slow uplink
# The box's own apply timeout plus its backup and the checks.
UPDATE_TIMEOUT_S = 7200.0
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "-o", "ServerAliveInterval=30")


@dataclass(frozen=True)
class Target:
    """Where and as whom: the config's admin and port, the operator's key and known hosts."""

    user: str
    host: str
    port: int
    identity: Path | None = None
    known_hosts: Path | None = None
    accept_new_host_key: bool = False

    def options(self) -> tuple[str, ...]:
        key = ("-i", str(self.identity)) if self.identity is not None else ()
        known = (("-o", f"UserKnownHostsFile={self.known_hosts}")
                 if self.known_hosts is not None else ())
        # A box seen for the first time: its key is recorded (trust on first use, asked
        # for by name); a changed key still fails, as ssh always does.
        new = ("-o", "StrictHostKeyChecking=accept-new") if self.accept_new_host_key else ()
        return (*key, *known, *new, *SSH_OPTIONS)

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def ssh_argv(target: Target, remote: str) -> tuple[str, ...]:
    return ("ssh", "-p", str(target.port), *target.options(), f"{target.user}@{target.host}",
            remote)


def scp_argv(target: Target, local: Path, remote: str) -> tuple[str, ...]:
    return ("scp", "-q", "-P", str(target.port), *target.options(), str(local),
            f"{target.user}@{target.host}:{remote}")


def update_host(config_path: Path, host: str, out_dir: Path, *, identity: Path | None = None,
                known_hosts: Path | None = None, accept_new_host_key: bool = False,
                allow_downgrade: bool = False, out: Callable[[str], None] = print) -> int:
    config = load_config(config_path)
    bundle = out_dir / bundle_name(config.appliance.name)
    if not bundle.is_file():
        raise BadInputError(f"no update bundle {bundle}",
                            hint=f"arkbox build {config_path} --out {out_dir}")
    admin = config.appliance.admin
    target = Target(admin.user, host, admin.ssh_port, identity, known_hosts,
                    accept_new_host_key)
    out(f"copying {bundle.name} ({bundle.stat().st_size >> 20} MiB) to {target}")
    try:
        run(scp_argv(target, bundle, REMOTE_BUNDLE), timeout=COPY_TIMEOUT_S,
            hint=f"check that {target} takes the admin key and that its host key is known "
                 f"(ssh -p {target.port} {target.user}@{host}; or --accept-new-host-key)")
        command = " ".join(("sudo", INSTALLER_PROGRAM, "update",
                            f'"$HOME"/{shlex.quote(REMOTE_BUNDLE)}',
                            *(("--allow-downgrade",) if allow_downgrade else ())))
        result = run(ssh_argv(target, command), check=False, timeout=UPDATE_TIMEOUT_S,
                     on_line=out)
    except CommandError as err:
        out(f"✗ {err.message}" + (f"\n  hint: {err.hint}" if err.hint else ""))
        return 1
    finally:
        _remove_copy(target)
    if result.returncode == 255:  # ssh's own failure, not the installer's
        out(f"✗ ssh to {target} failed: see the lines above")
        return 1
    return result.returncode


def _remove_copy(target: Target) -> None:
    # Out of reach now: the copy stays in the admin's home, named in the output above.
    with contextlib.suppress(CommandError):
        run(ssh_argv(target, f"rm -f {shlex.quote(REMOTE_BUNDLE)}"), check=False, timeout=60)
