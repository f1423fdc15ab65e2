"""Step `secrets`: copies of the config's service secrets and generated ones, 0700/0600."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from firstboot import secret_store
from firstboot.core.config import DEFAULT_CONFIG_PATH, Appliance, SecretRef, load_config
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.step import StepFailed
from firstboot.steps import secrets

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF6YilbxuYcReyoVRXRnJrBiinY8edFG7Xgx8AxGsXkQ"


SAMPLE = f"""
appliance:
  name: sample
  domain: arkbox.test
  hostname: arkbox.test
  admin: {{ssh_keys: ["{KEY}"]}}
mail:
  hostname: mail.arkbox.test
  domains: [arkbox.test]
  mailboxes:
    - {{address: admin@arkbox.test, password: {{file: secrets/admin-mail-password}}}}
services:
  calendar:
    image: "registry.example/radicale:3"
    secret_files:
      /etc/radicale/users: {{file: secrets/radicale-users}}
  webmail:
    image: "registry.example/roundcube:1"
    environment:
      DB_PASSWORD: {{file: secrets/db-password}}
      DES_KEY: {{file: secrets/des-key}}
  db:
    image: "registry.example/postgres:17"
    secret_files:
      /run/secrets/db-password: {{file: secrets/db-password}}
backup:
  repository: ssh://borg@backup.arkbox.test:22/./arkbox
  passphrase: {{file: secrets/borg-passphrase}}
  ssh_key: {{file: secrets/backup-ssh-key}}
"""
SECRET_FILES = {
    "admin-mail-password": "mail-pw\n",
    "radicale-users": "admin:$2y$05$abcdefghijklmnopqrstuv\n",
    "db-password": "db-pw\n",
    "des-key": "des-key-of-24-characters\n",
    "borg-passphrase": "never-copied\n",
    "backup-ssh-key": "never-copied-either\n",
}


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A config and its secrets, as /etc/arkbox holds them."""
    folder = tmp_path / "etc-arkbox"
    (folder / "secrets").mkdir(parents=True)
    (folder / "appliance.yaml").write_text(SAMPLE)
    for name, value in SECRET_FILES.items():
        (folder / "secrets" / name).write_text(value)
        (folder / "secrets" / name).chmod(0o600)
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def ctx_for(config_dir: Path, root: Path) -> FirstbootContext:
    return FirstbootContext(config=load_config(config_dir / "appliance.yaml"), paths=Paths(root))


def stored(root: Path) -> dict[str, bytes]:
    base = root / "srv/arkbox/secrets"
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def test_stored_names_mirror_the_references() -> None:
    assert secret_store.stored_name(SecretRef(file="secrets/db")).as_posix() == "config/secrets/db"
    assert secret_store.stored_name(SecretRef(file="/etc/x/pw")).as_posix() == "config/abs/etc/x/pw"
    assert secret_store.stored_name(SecretRef(env="DB_PW")).as_posix() == "config/env/DB_PW"
    with pytest.raises(StepFailed, match="outside the config's directory"):
        secret_store.stored_name(SecretRef(file="../elsewhere"))


def test_only_service_and_mail_secrets_are_copied(config_dir: Path) -> None:
    config = load_config(config_dir / "appliance.yaml")
    wheres = [where for where, _ in secret_store.service_secret_refs(config)]
    # webmail's and db's password are one file: copied once
    assert wheres == [
        "services.calendar.secret_files./etc/radicale/users",
        "services.webmail.environment.DB_PASSWORD",
        "services.webmail.environment.DES_KEY",
        "mail.mailboxes.0.password",
    ]  # never backup.passphrase or backup.ssh_key: they open the backup


def test_the_default_config_secrets_are_all_copied() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    refs = secret_store.service_secret_refs(config)
    names = {str(secret_store.stored_name(ref)) for _, ref in refs}
    assert "config/secrets/webmail-db-password" in names
    assert not any("borg" in name or "backup" in name for name in names)


def test_first_run_copies_and_generates(config_dir: Path, root: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    ctx = ctx_for(config_dir, root)
    with caplog.at_level(logging.DEBUG):
        outcome = secrets.run(ctx)
    assert outcome.changed
    assert outcome.summary == "4 copied from the config, 2 generated (status-page-password, " \
                              "dkim.key), 0 unchanged"
    files = stored(root)
    assert sorted(files) == [
        "config/secrets/admin-mail-password",
        "config/secrets/db-password",
        "config/secrets/des-key",
        "config/secrets/radicale-users",
        "generated/dkim.key",
        "generated/status-page-password",
    ]
    for name in ("radicale-users", "db-password"):
        assert files[f"config/secrets/{name}"] == (config_dir / "secrets" / name).read_bytes()
    assert len(files["generated/status-page-password"]) == 43
    assert files["generated/dkim.key"].startswith(b"-----BEGIN PRIVATE KEY-----")
    base = root / "srv/arkbox/secrets"
    assert base.stat().st_mode & 0o777 == 0o700
    for path in base.rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path
    # no value reaches the log
    for value in files.values():
        assert value.decode().strip() not in caplog.text
    assert secrets.verify(ctx) is None
    assert secret_store.read_stored(ctx.paths, SecretRef(file="secrets/db-password")) == "db-pw"


def test_second_run_changes_nothing_and_keeps_generated_values(config_dir: Path,
                                                               root: Path) -> None:
    ctx = ctx_for(config_dir, root)
    secrets.run(ctx)
    before = stored(root)
    outcome = secrets.run(ctx)
    assert not outcome.changed and outcome.summary == "6 secrets in place"
    assert stored(root) == before


def test_a_changed_config_secret_is_copied_again(config_dir: Path, root: Path) -> None:
    ctx = ctx_for(config_dir, root)
    secrets.run(ctx)
    (config_dir / "secrets/des-key").write_text("a-new-des-key-of-24-chars\n")
    assert secrets.verify(ctx) == ("services.webmail.environment.DES_KEY: the stored copy "
                                   "differs from the config's")
    outcome = secrets.run(ctx)
    assert outcome.summary.startswith("1 copied from the config")
    assert stored(root)["config/secrets/des-key"] == b"a-new-des-key-of-24-chars\n"


def test_loose_modes_are_noticed_and_fixed(config_dir: Path, root: Path) -> None:
    ctx = ctx_for(config_dir, root)
    secrets.run(ctx)
    generated = root / "srv/arkbox/secrets/generated/status-page-password"
    generated.chmod(0o644)
    assert secrets.verify(ctx) == f"{generated} is readable by others"
    secrets.run(ctx)
    assert generated.stat().st_mode & 0o777 == 0o600
    assert secrets.verify(ctx) is None


def env_config(tmp_path: Path) -> Path:
    path = tmp_path / "env.yaml"
    path.write_text(textwrap.dedent(f"""
        appliance:
          name: envy
          domain: example.org
          hostname: box.example.org
          admin: {{ssh_keys: ["{KEY}"]}}
        services:
          app:
            image: "registry.example/app:1.0"
            environment:
              API_TOKEN: {{env: ARKBOX_TEST_API_TOKEN}}
        """))
    return path


def test_an_env_secret_gone_at_boot_keeps_its_stored_copy(tmp_path: Path, root: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARKBOX_TEST_API_TOKEN", "t0ken")
    config = load_config(env_config(tmp_path))
    ctx = FirstbootContext(config=config, paths=Paths(root))
    secrets.run(ctx)
    assert stored(root)["config/env/ARKBOX_TEST_API_TOKEN"] == b"t0ken"
    monkeypatch.delenv("ARKBOX_TEST_API_TOKEN")
    assert not secrets.run(ctx).changed
    assert secrets.verify(ctx) is None


def test_an_env_secret_never_stored_fails_with_a_hint(tmp_path: Path, root: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARKBOX_TEST_API_TOKEN", raising=False)
    config = load_config(env_config(tmp_path))
    with pytest.raises(StepFailed, match=r"services\.app\.environment\.API_TOKEN") as failed:
        secrets.run(FirstbootContext(config=config, paths=Paths(root)))
    assert "{file: secrets/NAME}" in (failed.value.hint or "")


def test_passwords_are_random_and_url_safe() -> None:
    first, second = secrets.password(), secrets.password()
    assert first != second and len(first) == 43
    assert all(c.isalnum() or c in "-_" for c in first.decode())


def test_sample_config_is_untouched(config_dir: Path, root: Path) -> None:
    before = {p.name: p.read_bytes() for p in (config_dir / "secrets").iterdir()}
    secrets.run(ctx_for(config_dir, root))
    assert {p.name: p.read_bytes() for p in (config_dir / "secrets").iterdir()} == before


def test_applies_always(config_dir: Path) -> None:
    config: Appliance = load_config(config_dir / "appliance.yaml")
    assert secrets.applies(config)
