"""The seed: the secrets of one box, kept out of the (generic) image and handed to it at
first boot. `arkbox seed` writes it on the build machine; the installer's `seed` step
reads it from a systemd credential, a partition or the provider's metadata service.

On disk it is one JSON document (a partition pads it with NUL bytes):

    {"format": "arkbox-seed/1", "appliance": NAME, "role": ROLE,
     "config_sha256": HEX, "secrets": {"file:secrets/x": BASE64, "env:NAME": BASE64},
     "sha256": HEX}

`sha256` covers every other field, so a truncated or damaged seed is refused; the
config digest binds the seed to the one config the image carries, so another box's
seed is refused. The seed is not encrypted: whoever can write it controls the box's
secrets anyway, and it travels over the operator's own channel (see docs/seed.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import PurePosixPath

from firstboot.core.config import Appliance
from firstboot.core.config.secrets import ENV_DIR, SecretRef
from firstboot.core.errors import BadInputError

FORMAT = "arkbox-seed/1"
CREDENTIAL = "arkbox-seed"  # systemd credential name (fw_cfg opt/io.systemd.credentials/…)
PARTITION_LABEL = "arkbox-seed"  # GPT partition name of a seed partition
MAX_BYTES = 1 << 20  # a seed is a few KiB; anything near this is not a seed


class SeedInvalid(BadInputError):
    """A seed that cannot be used: unreadable, damaged, or made for another box."""


def ref_key(ref: SecretRef) -> str:
    """The key a secret reference has in a seed: "file:PATH" or "env:NAME"."""
    return f"env:{ref.env}" if ref.env is not None else f"file:{ref.file}"


def installed_name(ref: SecretRef) -> PurePosixPath:
    """Where a secret goes on the box, relative to the config's directory."""
    if ref.env is not None:
        return PurePosixPath(ENV_DIR, ref.env)
    assert ref.file is not None
    path = PurePosixPath(ref.file)
    if path.is_absolute() or ".." in path.parts:
        raise SeedInvalid(
            f"secret file {ref.file!r} is outside the config's directory",
            hint="keep secret files next to the config (e.g. secrets/NAME), so the box "
            "installs them at the same place below /etc/arkbox",
        )
    return path


def needed_refs(config: Appliance, role: str) -> list[SecretRef]:
    """The secrets a box of this role needs, each once. The backup-server role needs none
    of the appliance's (it stores ciphertext only), so its seed carries none."""
    if role != "appliance":
        return []
    unique: dict[str, SecretRef] = {}
    for _where, ref in config.secret_refs():
        unique.setdefault(ref_key(ref), ref)
    return [unique[key] for key in sorted(unique)]


@dataclass(frozen=True)
class Seed:
    appliance: str
    role: str
    config_sha256: str
    secrets: dict[str, bytes]  # ref_key -> value; never log the values

    def __repr__(self) -> str:  # the values stay out of tracebacks and logs
        return (f"Seed(appliance={self.appliance!r}, role={self.role!r}, "
                f"secrets={sorted(self.secrets)})")


def _body(seed: Seed) -> dict[str, object]:
    return {
        "format": FORMAT,
        "appliance": seed.appliance,
        "role": seed.role,
        "config_sha256": seed.config_sha256,
        "secrets": {key: base64.b64encode(value).decode("ascii")
                    for key, value in sorted(seed.secrets.items())},
    }


def _digest(body: dict[str, object]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def encode(seed: Seed) -> bytes:
    body = _body(seed)
    data = json.dumps({**body, "sha256": _digest(body)}, sort_keys=True, indent=1).encode()
    if len(data) > MAX_BYTES:
        raise SeedInvalid(f"the seed would be {len(data)} bytes; at most {MAX_BYTES} fit",
                          hint="secrets are passwords and keys; a large file is not one")
    return data + b"\n"


def decode(data: bytes, source: str) -> Seed:
    """Parse and verify a seed read from `source` (named in every error)."""
    damaged = f"{source}: the seed is truncated or damaged"
    remake = "write it again: arkbox seed CONFIG --out FILE (or --into DISK.raw)"
    text = data.rstrip(b"\0").strip()
    if not text:
        raise SeedInvalid(f"{source}: empty, no seed in it", hint=remake)
    try:
        raw = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SeedInvalid(damaged, hint=remake) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else None
        raise SeedInvalid(f"{source}: not an {FORMAT} seed (format {found!r})", hint=remake)
    claimed = raw.pop("sha256", None)
    if claimed != _digest(raw):
        raise SeedInvalid(damaged, hint=remake)
    try:
        secrets = {str(key): base64.b64decode(value, validate=True)
                   for key, value in raw["secrets"].items()}
        return Seed(appliance=str(raw["appliance"]), role=str(raw["role"]),
                    config_sha256=str(raw["config_sha256"]), secrets=secrets)
    except (KeyError, AttributeError, TypeError, binascii.Error):
        raise SeedInvalid(damaged, hint=remake) from None


def check_fits(seed: Seed, *, appliance: str, role: str, config_sha256: str,
               needed: list[SecretRef], source: str) -> None:
    """Refuse a seed made for another box or config, or one that lacks a secret."""
    if seed.appliance != appliance or seed.role != role:
        raise SeedInvalid(
            f"{source}: the seed is for {seed.role} {seed.appliance!r}, "
            f"this box is {role} {appliance!r}",
            hint="give this box its own seed: arkbox seed CONFIG (the config it was built from)",
        )
    if seed.config_sha256 != config_sha256:
        raise SeedInvalid(
            f"{source}: the seed was made from another version of the config "
            f"(sha256 {seed.config_sha256[:12]}…, this image has {config_sha256[:12]}…)",
            hint="make the seed from the config this image was built from",
        )
    missing = sorted(ref_key(ref) for ref in needed if ref_key(ref) not in seed.secrets)
    if missing:
        raise SeedInvalid(f"{source}: the seed lacks {', '.join(missing)}",
                          hint="make the seed again where every secret is readable")
