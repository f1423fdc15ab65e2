"""`arkbox seed`: the secrets of one box, resolved on the build machine into a seed.

The image is generic (it carries secret *references* only); each box gets its values
in a seed (format: firstboot/core/seed.py), written to a file here or into a copy of
the raw disk image by builder/seed_disk.py. Never print or log a value.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from builder.published import Finding, published_name, refuse_published
from firstboot.core.config import Appliance
from firstboot.core.config.problems import dotted
from firstboot.core.config.secrets import SecretRef, SecretUnavailable, create_command
from firstboot.core.errors import BadInputError
from firstboot.core.seed import Seed, encode, installed_name, needed_refs, ref_key

ROLES = ("appliance", "backup-server")


def secret_bytes(config: Appliance, ref: SecretRef) -> bytes:
    """A secret's value as the box must install it: a file's bytes exactly (an SSH key
    keeps its final newline), an environment variable's value in UTF-8."""
    location = ref.location(config.base_dir)
    if location is None:
        return config.secret(ref).encode()
    try:
        return location.read_bytes()
    except OSError as err:
        raise SecretUnavailable(f"cannot read secret file {location}: {err.strerror}",
                                hint=f"create it: {create_command(location)}") from err


def _where(config: Appliance) -> dict[str, str]:
    """ref_key -> the first config path that uses it, e.g. backup.passphrase."""
    paths: dict[str, str] = {}
    for path, ref in config.secret_refs():
        paths.setdefault(ref_key(ref), dotted(path))
    return paths


def published_findings(config: Appliance, values: dict[str, bytes]) -> list[Finding]:
    """The secrets (by ref_key -> value) whose value is a published development one."""
    where = _where(config)
    findings = []
    for key, value in sorted(values.items()):
        name = published_name(value.decode("utf-8", errors="replace"))
        if name is not None:
            findings.append(Finding(where.get(key, key), name))
    return findings


def readable_values(config: Appliance, role: str) -> dict[str, bytes]:
    """The values the build can see (readable files, set variables), to refuse published
    ones early; what is missing here only has to be there when the seed is made."""
    values = {}
    for ref in needed_refs(config, role):
        with contextlib.suppress(SecretUnavailable):
            values[ref_key(ref)] = secret_bytes(config, ref)
    return values


def make_seed(config: Appliance, role: str, *, allow_published: bool = False) -> bytes:
    """The encoded seed of one box of `role` built from `config` (loaded from its file).

    Raises BadInputError when a secret cannot be read, lies outside the config's
    directory, or is a published development value (unless allowed, see published.py).
    """
    if role not in ROLES:
        raise BadInputError(f"unknown role {role!r}", hint=f"one of {', '.join(ROLES)}")
    digest = config.config_sha256
    if digest is None:
        raise BadInputError("the config was not loaded from a file; a seed is bound to one",
                            hint="arkbox seed CONFIG --out FILE")
    values = {}
    for ref in needed_refs(config, role):
        installed_name(ref)  # refuses a file the box could not install below /etc/arkbox
        values[ref_key(ref)] = secret_bytes(config, ref)
    refuse_published(config, published_findings(config, values), allow=allow_published)
    seed = Seed(appliance=config.appliance.name, role=role, config_sha256=digest,
                secrets=values)
    return encode(seed)


def write_seed_file(data: bytes, out: Path) -> Path:
    """Write `data` to `out`, 0600 from the first byte, atomically (a temp file renamed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp makes it 0600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out
