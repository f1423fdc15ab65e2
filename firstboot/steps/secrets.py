"""Step `secrets`: every secret the services use, kept under /srv/arkbox/secrets (0700/0600).

Two kinds, both carried by backups (a restored database must keep working with
the passwords it was made with):

* config/...     copies of the secrets the config references for services and
                 mail ({file: secrets/NAME} -> config/secrets/NAME, {env: NAME} ->
                 config/env/NAME), refreshed when the config's copy changes;
* generated/...  internal secrets nobody types (GENERATED below), made once when
                 missing and never changed afterwards.

The backup passphrase and key are not copied: they are what opens the backup,
so they must live outside it. No value is ever logged.
"""

from __future__ import annotations

import os
import secrets as random_source
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from firstboot.core.config import Appliance, SecretRef, SecretUnavailable
from firstboot.core.context import FirstbootContext
from firstboot.core.files import ensure_dir, write_if_changed
from firstboot.core.step import Outcome, StepFailed
from firstboot.mail import dkim
from firstboot.secret_store import generated_path, service_secret_refs, stored_name, stored_path

NAME = "secrets"

DIR_MODE = 0o700
FILE_MODE = 0o600
PASSWORD_BYTES = 32  # 43 URL-safe characters, 256 bits


def applies(config: Appliance) -> bool:
    return True


def password() -> bytes:
    """A random password of URL-safe characters: safe in URLs, env files and configs."""
    return random_source.token_urlsafe(PASSWORD_BYTES).encode()


@dataclass(frozen=True)
class Generated:
    """An internal secret, made on the box when missing."""

    name: str  # file name under generated/
    purpose: str
    make: Callable[[], bytes]
    wanted: Callable[[Appliance], bool] = lambda config: True


# Later issues add theirs here (the backup client key with backups).
GENERATED: tuple[Generated, ...] = (
    Generated("status-page-password", "the admin's login to the status page", password),
    # Kept forever (and restored with the backup): a new key needs new DNS records.
    Generated(dkim.KEY_FILE, "the DKIM key that signs outgoing mail", dkim.make_private_key,
              lambda config: config.mail.enabled),
)


def _source_bytes(config: Appliance, ref: SecretRef) -> bytes | None:
    """The config's current value, or None when it cannot be read here (an unset env var)."""
    location = ref.location(config.base_dir)
    if location is not None:
        try:
            return location.read_bytes()
        except OSError:
            return None
    try:
        return config.secret(ref).encode()
    except SecretUnavailable:
        return None


# ---------------------------------------------------------------- the step


def run(ctx: FirstbootContext) -> Outcome:
    paths = ctx.paths
    ensure_dir(paths.data, 0o755)
    ensure_dir(paths.secrets, DIR_MODE)
    copied: list[str] = []
    generated: list[str] = []
    kept = 0
    for where, ref in service_secret_refs(ctx.config):
        target = stored_path(paths, ref)
        value = _source_bytes(ctx.config, ref)
        if value is None:
            if target.is_file():
                kept += 1  # e.g. {env: ...} set at build time, long gone at boot
                continue
            raise StepFailed(f"{where}: the secret {ref!r} cannot be read on this box",
                             hint="ship it as a file next to the config ({file: secrets/NAME}),"
                             " then rebuild the image")
        _private_dirs(paths.secrets, target.parent)
        if write_if_changed(target, value, FILE_MODE, _root_owner()):
            copied.append(str(stored_name(ref)))
        else:
            kept += 1
    ctx.checkpoint("copied")
    for item in GENERATED:
        if not item.wanted(ctx.config):
            continue
        target = generated_path(paths, item.name)
        if target.is_file() and target.stat().st_size > 0:
            _fix_mode(target)
            kept += 1
            continue
        _private_dirs(paths.secrets, target.parent)
        write_if_changed(target, item.make(), FILE_MODE, _root_owner())
        ctx.log.info("generated %s (%s)", item.name, item.purpose)
        generated.append(item.name)
    for name in copied:
        ctx.log.info("copied %s from the config", name)
    details = {"copied": copied, "generated": generated}
    parts = [f"{len(copied)} copied from the config"] if copied else []
    parts += [f"{len(generated)} generated ({', '.join(generated)})"] if generated else []
    if parts:
        return Outcome.changed_(", ".join(parts) + f", {kept} unchanged", details)
    return Outcome.unchanged(f"{kept} secrets in place", details)


def verify(ctx: FirstbootContext) -> str | None:
    paths = ctx.paths
    if not paths.secrets.is_dir() or paths.secrets.stat().st_mode & 0o077:
        return f"{paths.secrets} is missing or readable by others"
    for where, ref in service_secret_refs(ctx.config):
        target = stored_path(paths, ref)
        problem = _file_problem(target)
        if problem:
            return f"{where}: {problem}"
        value = _source_bytes(ctx.config, ref)
        if value is not None and target.read_bytes() != value:
            return f"{where}: the stored copy differs from the config's"
    for item in GENERATED:
        if item.wanted(ctx.config):
            problem = _file_problem(generated_path(paths, item.name))
            if problem:
                return problem
    return None


def _private_dirs(base: Path, directory: Path) -> None:
    """Make every directory from `base` down to `directory` with mode 0700."""
    current = base
    ensure_dir(current, DIR_MODE)
    for part in directory.relative_to(base).parts:
        current = current / part
        ensure_dir(current, DIR_MODE)


def _file_problem(path: Path) -> str | None:
    if not path.is_file() or path.stat().st_size == 0:
        return f"{path} is missing"
    if path.stat().st_mode & 0o077:
        return f"{path} is readable by others"
    return None


def _fix_mode(path: Path) -> None:
    if path.stat().st_mode & 0o7777 != FILE_MODE:
        path.chmod(FILE_MODE)


def _root_owner() -> tuple[int, int] | None:
    # Only root can give files away; tests run the step as whoever they are.
    return (0, 0) if os.geteuid() == 0 else None
