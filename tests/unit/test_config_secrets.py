"""Secret references: never inline, resolved at use, files checked at load, never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from firstboot.core.config import ConfigInvalid, SecretRef, SecretUnavailable, load_config

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF6YilbxuYcReyoVRXRnJrBiinY8edFG7Xgx8AxGsXkQ ops@laptop"
PASSPHRASE = "correct horse battery staple"


def _config(tmp_path: Path, passphrase: str) -> Path:
    config = tmp_path / "appliance.yaml"
    config.write_text(
        f"""\
appliance:
  name: t
  domain: arkbox.test
  hostname: arkbox.test
  admin: {{ssh_keys: [{KEY}]}}
backup:
  repository: ssh://borg@backup.arkbox.test:22/./arkbox
  passphrase: {passphrase}
  host_key: "{KEY}"  # pinned: these tests are about the secrets' warnings only
"""
    )
    return config


def _secret_file(tmp_path: Path, mode: int, content: str = PASSPHRASE + "\n") -> Path:
    (tmp_path / "secrets").mkdir(exist_ok=True)
    secret = tmp_path / "secrets" / "borg-passphrase"
    secret.write_text(content)
    secret.chmod(mode)
    return secret


def test_file_secret_resolves_relative_to_the_config(tmp_path: Path) -> None:
    _secret_file(tmp_path, 0o600)
    appliance = load_config(_config(tmp_path, "{file: secrets/borg-passphrase}"))
    ref = appliance.backup.passphrase
    assert ref is not None
    assert appliance.secret(ref) == PASSPHRASE  # the trailing newline is not part of it
    assert appliance.warnings == []


def test_env_secret_resolves_at_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARKBOX_TEST_PASSPHRASE", PASSPHRASE)
    appliance = load_config(_config(tmp_path, "{env: ARKBOX_TEST_PASSPHRASE}"))
    assert appliance.warnings == []
    ref = appliance.backup.passphrase
    assert ref is not None
    assert ref.resolve(tmp_path) == PASSPHRASE
    monkeypatch.delenv("ARKBOX_TEST_PASSPHRASE")
    with pytest.raises(SecretUnavailable) as caught:
        ref.resolve(tmp_path)
    assert caught.value.exit_code == 2
    assert "ARKBOX_TEST_PASSPHRASE" in str(caught.value)


def test_unset_env_secret_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARKBOX_TEST_UNSET", raising=False)
    appliance = load_config(_config(tmp_path, "{env: ARKBOX_TEST_UNSET}"))
    [warning] = appliance.warnings
    assert warning.path == "backup.passphrase.env"
    assert warning.line == 8


def test_widely_readable_secret_file_is_a_warning_not_an_error(tmp_path: Path) -> None:
    secret = _secret_file(tmp_path, 0o644)
    appliance = load_config(_config(tmp_path, "{file: secrets/borg-passphrase}"))
    [warning] = appliance.warnings
    assert str(warning) == (
        'line 8  backup.passphrase.file: secret file "secrets/borg-passphrase" can be read by '
        "other users (mode 0644)"
    )
    assert warning.hint == f"chmod 0600 {secret}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_secret_file_is_an_error(tmp_path: Path) -> None:
    _secret_file(tmp_path, 0o000)
    with pytest.raises(ConfigInvalid) as caught:
        load_config(_config(tmp_path, "{file: secrets/borg-passphrase}"))
    [problem] = caught.value.problems
    assert "cannot read secret file" in problem.message


def test_missing_secret_file_is_an_error_unless_not_checked(tmp_path: Path) -> None:
    config = _config(tmp_path, "{file: secrets/borg-passphrase}")
    with pytest.raises(ConfigInvalid) as caught:
        load_config(config)
    [problem] = caught.value.problems
    assert problem.path == "backup.passphrase.file"
    assert "does not exist" in problem.message
    assert load_config(config, check_secrets=False).backup.passphrase is not None


def test_inline_secret_is_refused_and_never_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        load_config(_config(tmp_path, f'"{PASSPHRASE}"'))
    [problem] = caught.value.problems
    assert problem.path == "backup.passphrase"
    assert problem.hint is not None and "{file:" in problem.hint
    for shown in (str(caught.value), repr(caught.value.problems), caught.value.message):
        assert PASSPHRASE not in shown


def test_secret_ref_repr_shows_where_not_what(tmp_path: Path) -> None:
    _secret_file(tmp_path, 0o600)
    ref = SecretRef(file="secrets/borg-passphrase")
    assert repr(ref) == "SecretRef(file='secrets/borg-passphrase')"
    assert str(ref) == repr(ref)
    ref.resolve(tmp_path)
    assert PASSPHRASE not in repr(ref)


def test_secret_ref_needs_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        SecretRef.model_validate({"file": "a", "env": "B"})
    with pytest.raises(ValueError, match="exactly one"):
        SecretRef.model_validate({})


# ---------------------------------------------------------------- on the box (issue 14)


def test_env_secret_falls_back_to_its_file_next_to_the_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARKBOX_T_PASS", raising=False)
    ref = SecretRef(env="ARKBOX_T_PASS")
    with pytest.raises(SecretUnavailable, match="no file env/ARKBOX_T_PASS next to the config"):
        ref.resolve(tmp_path)
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "ARKBOX_T_PASS").write_text(PASSPHRASE + "\n")
    assert ref.resolve(tmp_path) == PASSPHRASE
    monkeypatch.setenv("ARKBOX_T_PASS", "from the environment")
    assert ref.resolve(tmp_path) == "from the environment"


def test_unset_env_warns_only_when_its_file_is_absent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARKBOX_T_PASS", raising=False)
    config = _config(tmp_path, "{env: ARKBOX_T_PASS}")
    warned = [w.message for w in load_config(config).warnings]
    assert "environment variable ARKBOX_T_PASS is not set here" in warned
    # Before the seed step: the seed brings env/NAME, no warning.
    assert load_config(config, secrets_from_seed=True).warnings == []
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "ARKBOX_T_PASS").write_text(PASSPHRASE)
    assert load_config(config).warnings == []


def test_secrets_from_seed_lets_only_absent_files_pass(tmp_path: Path) -> None:
    config = _config(tmp_path, "{file: secrets/borg-passphrase}")
    with pytest.raises(ConfigInvalid, match="does not exist"):
        load_config(config)
    assert load_config(config, secrets_from_seed=True).backup.passphrase is not None
    _secret_file(tmp_path, 0o600, content="")
    with pytest.raises(ConfigInvalid) as caught:  # an empty file is still wrong
        load_config(config, secrets_from_seed=True)
    assert "is empty" in str(caught.value.problems)
