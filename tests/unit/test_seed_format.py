"""core/seed.py: the seed's format, its digest, and the refusal of another box's seed."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import pytest

from firstboot.core.config import Appliance, SecretRef, load_config
from firstboot.core.seed import (
    Seed,
    SeedInvalid,
    check_fits,
    decode,
    encode,
    installed_name,
    needed_refs,
    ref_key,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF6YilbxuYcReyoVRXRnJrBiinY8edFG7Xgx8AxGsXkQ"
CONFIG = f"""
appliance:
  name: seedy
  domain: arkbox.test
  hostname: arkbox.test
  admin: {{ssh_keys: ["{KEY}"]}}
services:
  db:
    image: "registry.example/postgres:17"
    environment:
      POSTGRES_PASSWORD: {{env: SEEDY_DB_PASSWORD}}
    secret_files:
      /run/secrets/db: {{file: secrets/db-password}}
backup:
  repository: ssh://borg@backup.arkbox.test:22/./seedy
  passphrase: {{file: secrets/borg-passphrase}}
  ssh_key: {{file: secrets/db-password}}
"""
VALUES = {"env:SEEDY_DB_PASSWORD": b"env-value-7f3a", "file:secrets/borg-passphrase":
          b"borg-value-91c2\n", "file:secrets/db-password": b"db-value-\x00\xff-bytes"}


@pytest.fixture
def config(tmp_path: Path) -> Appliance:
    path = tmp_path / "appliance.yaml"
    path.write_text(CONFIG)
    return load_config(path, secrets_from_seed=True)


def seed_for(config: Appliance, **changes: object) -> Seed:
    fields: dict[str, object] = {"appliance": "seedy", "role": "appliance",
                                 "config_sha256": config.config_sha256, "secrets": dict(VALUES)}
    fields.update(changes)
    return Seed(**fields)  # type: ignore[arg-type]


def fits(seed: Seed, config: Appliance) -> None:
    check_fits(seed, appliance="seedy", role="appliance", config_sha256=config.config_sha256
               or "", needed=needed_refs(config, "appliance"), source="test source")


def test_needed_refs_are_each_secret_once_and_none_for_a_backup_server(
        config: Appliance) -> None:
    assert [ref_key(r) for r in needed_refs(config, "appliance")] == sorted(VALUES)
    assert needed_refs(config, "backup-server") == []


def test_installed_names_are_below_the_config_directory() -> None:
    assert installed_name(SecretRef(env="X_Y")) == PurePosixPath("env/X_Y")
    assert installed_name(SecretRef(file="secrets/a")) == PurePosixPath("secrets/a")
    for outside in ("/etc/shadow", "../x", "secrets/../../x"):
        with pytest.raises(SeedInvalid, match="outside the config's directory"):
            installed_name(SecretRef(file=outside))


def test_roundtrip_keeps_every_byte(config: Appliance) -> None:
    seed = seed_for(config)
    data = encode(seed)
    assert decode(data, "here") == seed
    # a partition pads the seed with NULs
    assert decode(data + b"\0" * 4096, "here") == seed
    fits(decode(data, "here"), config)


def test_truncated_seed_is_refused_naming_the_source(config: Appliance) -> None:
    data = encode(seed_for(config))
    with pytest.raises(SeedInvalid, match=r"^partition X: the seed is truncated or damaged"):
        decode(data[: len(data) // 2], "partition X")
    with pytest.raises(SeedInvalid, match="empty, no seed in it"):
        decode(b"\0" * 512, "partition X")


def test_damaged_value_breaks_the_digest(config: Appliance) -> None:
    raw = json.loads(encode(seed_for(config)))
    raw["secrets"]["file:secrets/borg-passphrase"] = "b3RoZXI="  # another value
    with pytest.raises(SeedInvalid, match="truncated or damaged") as caught:
        decode(json.dumps(raw).encode(), "cred")
    assert "arkbox seed CONFIG" in (caught.value.hint or "")
    raw = json.loads(encode(seed_for(config)))
    raw["sha256"] = "0" * 64
    with pytest.raises(SeedInvalid, match="truncated or damaged"):
        decode(json.dumps(raw).encode(), "cred")


def test_wrong_format_is_refused(config: Appliance) -> None:
    raw = json.loads(encode(seed_for(config)))
    raw["format"] = "arkbox-seed/0"
    wrong = r"not an arkbox-seed/1 seed \(format 'arkbox-seed/0'\)"
    with pytest.raises(SeedInvalid, match=wrong):
        decode(json.dumps(raw).encode(), "cred")
    with pytest.raises(SeedInvalid, match="not an arkbox-seed/1 seed"):
        decode(b'{"instance-id": "i-1"}', "cred")
    with pytest.raises(SeedInvalid, match=r"not an arkbox-seed/1 seed \(format None\)"):
        decode(b"[1, 2]", "cred")
    with pytest.raises(SeedInvalid, match="truncated or damaged"):
        decode(b"#cloud-config\nusers: []\n", "cred")


@pytest.mark.parametrize(("change", "message"), [
    ({"appliance": "other"}, "the seed is for appliance 'other', this box is appliance 'seedy'"),
    ({"role": "backup-server"}, "the seed is for backup-server 'seedy'"),
    ({"config_sha256": "ab" * 32}, "made from another version of the config"),
])
def test_another_box_or_config_is_refused(config: Appliance, change: dict[str, object],
                                          message: str) -> None:
    with pytest.raises(SeedInvalid, match=message) as caught:
        fits(decode(encode(seed_for(config, **change)), "x"), config)
    assert str(caught.value).startswith("test source: ")
    assert caught.value.hint


def test_a_missing_secret_is_named(config: Appliance) -> None:
    secrets = {k: v for k, v in VALUES.items() if k != "env:SEEDY_DB_PASSWORD"}
    with pytest.raises(SeedInvalid, match=r"^test source: the seed lacks env:SEEDY_DB_PASSWORD$"):
        fits(seed_for(config, secrets=secrets), config)


def test_repr_and_errors_hide_the_values(config: Appliance) -> None:
    seed = seed_for(config)
    shown = repr(seed) + str(seed)
    assert "file:secrets/borg-passphrase" in shown
    for value in VALUES.values():
        assert value.decode(errors="replace") not in shown
    raw = json.loads(encode(seed))
    raw["appliance"] = "changed"
    with pytest.raises(SeedInvalid) as caught:
        decode(json.dumps(raw).encode(), "cred")
    for value in VALUES.values():
        assert value.decode(errors="replace") not in f"{caught.value} {caught.value.hint}"
