"""`arkbox-installer firstboot` and `apply`: load the config, run the steps, report.

Both commands are the same runner over the same steps; first boot runs from
systemd (progress on the serial console and in the journal), apply is run by
the admin after changing /etc/arkbox/appliance.yaml. A config that does not
load stops both before any step, and is recorded in status.json like any
failure so `arkbox-installer status` and the status page can show it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from firstboot import __version__
from firstboot.core.config import Appliance, ConfigInvalid, format_problems, load_config
from firstboot.core.context import FirstbootContext, Mode, Paths, utc_now
from firstboot.core.errors import EXIT_OK, BadInputError
from firstboot.core.step import Step
from firstboot.runner import Print, Runner, print_line
from firstboot.status import Failure, RunResult, Status
from firstboot.steps import ORDER, load_steps


def decide_mode(config: Appliance) -> tuple[Mode, str]:
    """FRESH, and why, until the `restore` step has looked at the repository (its summary
    says RESTORE or FRESH and why; see firstboot/steps/restore.py)."""
    if config.backup.repository is None:
        return Mode.FRESH, "no backup repository configured"
    if config.backup.restore == "never":
        return Mode.FRESH, "backup.restore: never"
    return Mode.FRESH, f"backup.restore: {config.backup.restore}: the restore step decides"


def converge(
    command: str,
    config_path: Path,
    paths: Paths,
    *,
    steps: Sequence[Step] | None = None,
    out: Print = print_line,
    force_new_repository: bool = False,
) -> int:
    """Run every step for the config at `config_path`; returns the exit code.

    Below a root other than "/" (tests) the steps must be given: the real ones
    run commands (useradd, nft -f) that act on the running system whatever the root.
    """
    if not paths.is_live and steps is None:
        raise ValueError("converge below a test root needs explicit steps")
    if paths.is_live and os.geteuid() != 0:
        raise BadInputError(f"arkbox-installer {command} changes the system: run it as root",
                            hint=f"sudo arkbox-installer {command}")
    title = "first boot" if command == "firstboot" else command
    out(f"arkbox {title} · installer {__version__} · config {config_path}")
    try:
        # The secret files come with the seed, which the first step installs: their
        # absence must not stop the run before it (the seed step names what is missing).
        config = load_config(config_path, secrets_from_seed=True)
    except ConfigInvalid as err:
        _record_bad_config(command, config_path, paths, err)
        out(format_problems(err))
        out("nothing was changed · fix the config, then: arkbox-installer apply")
        return err.exit_code
    mode, reason = decide_mode(config)
    out(f"mode {mode} ({reason}) · sha256 {(config.config_sha256 or '?')[:12]}")
    ctx = FirstbootContext(config=config, paths=paths, mode=mode, mode_reason=reason,
                           force_new_repository=force_new_repository)
    runner = Runner(ctx, steps if steps is not None else load_steps(ORDER), command=command,
                    out=out)
    status = runner.run()
    if status.result is RunResult.OK and command == "firstboot":
        out(f"ready · https://{config.appliance.hostname} · details: arkbox-installer status")
    return runner.exit_code if status.result is RunResult.FAILED else EXIT_OK


def _record_bad_config(command: str, config_path: Path, paths: Paths,
                       err: ConfigInvalid) -> None:
    now = utc_now().isoformat(timespec="seconds")
    problems = format_problems(err)
    status = Status(command=command, installer_version=__version__, started_at=now,
                    config_path=str(config_path), result=RunResult.FAILED, finished_at=now,
                    seconds=0.0)
    status.failures.append(Failure(
        "config", problems,
        f"fix {config_path} (check it with: arkbox-installer validate), then run "
        "arkbox-installer apply, or wait: first boot retries by itself"))
    paths.state.mkdir(parents=True, exist_ok=True)
    status.save(paths.status)
