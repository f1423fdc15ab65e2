"""Published development secrets: the digest list matches config/secrets/, and a box for a
real domain is refused with one of them (named, with the fix, never showing the value)."""

import base64
import hashlib
import logging
from pathlib import Path

import pytest

from builder import published
from firstboot.core.config import load_config
from firstboot.core.errors import BadInputError

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ROOT / "config/secrets"
VALUES = {p.name: p.read_text() for p in SECRETS.iterdir()
          if p.name != "README.md" and not p.name.endswith(".pub")}


def test_digest_lists_match_config_secrets() -> None:
    assert VALUES, "config/secrets/ holds the development secrets"
    expected = {name: hashlib.sha256(text.removesuffix("\n").encode()).hexdigest()
                for name, text in VALUES.items()}
    assert expected == published.PUBLISHED_SECRET_SHA256
    keys = {p.name: hashlib.sha256(base64.b64decode(p.read_text().split()[1])).hexdigest()
            for p in SECRETS.glob("*.pub")}
    assert keys == published.PUBLISHED_PUBLIC_KEY_SHA256


def test_a_published_value_is_recognised_with_or_without_its_newline() -> None:
    value = VALUES["borg-passphrase"].removesuffix("\n")
    assert published.published_name(value) == "borg-passphrase"
    assert published.published_name(value + "\n") == "borg-passphrase"
    assert published.published_name(value + "x") is None
    assert published.published_name("") is None


def config_with_domain(tmp_path: Path, domain: str, source: str = "config/default.yaml") -> Path:
    text = (ROOT / source).read_text()
    assert "domain: arkbox.test" in text
    path = tmp_path / "appliance.yaml"
    path.write_text(text.replace("domain: arkbox.test", f"domain: {domain}"))
    (tmp_path / "secrets").symlink_to(SECRETS)
    return path


def test_refused_for_a_real_domain_naming_config_path_and_fix(tmp_path: Path) -> None:
    path = config_with_domain(tmp_path, "example.org")
    config = load_config(path)
    finding = published.Finding("backup.passphrase", "borg-passphrase")
    with pytest.raises(BadInputError) as err:
        published.refuse_published(config, [finding], allow=False)
    text = f"{err.value.message} {err.value.hint}"
    assert str(path) in text and "backup.passphrase" in text
    assert "openssl rand -base64 32 > secrets/borg-passphrase" in text
    assert published.OVERRIDE_FLAG in text
    assert not any(v.strip() in text for v in VALUES.values())


@pytest.mark.parametrize("domain", ["arkbox.test", "box.lab.test"])
def test_allowed_under_test(tmp_path: Path, domain: str) -> None:
    config = load_config(config_with_domain(tmp_path, domain))
    assert published.is_test_domain(config)
    published.refuse_published(
        config, [published.Finding("backup.passphrase", "borg-passphrase")], allow=False)


@pytest.mark.parametrize("domain",
                         ["example.org", "test.example.org", "mytest.org", "box.test.org"])
def test_not_test_domains(tmp_path: Path, domain: str) -> None:
    assert not published.is_test_domain(load_config(config_with_domain(tmp_path, domain)))


def test_the_flag_allows_with_a_loud_warning(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(config_with_domain(tmp_path, "example.org"))
    with caplog.at_level(logging.WARNING):
        published.refuse_published(
            config, [published.Finding("backup.passphrase", "borg-passphrase")], allow=True)
    assert "PUBLISHED" in caplog.text and published.OVERRIDE_FLAG in caplog.text
    assert "backup.passphrase" in caplog.text
    assert not any(v.strip() in caplog.text for v in VALUES.values())


def test_no_findings_nothing_to_refuse(tmp_path: Path) -> None:
    config = load_config(config_with_domain(tmp_path, "example.org"))
    published.refuse_published(config, [], allow=False)


def test_the_example_backup_server_no_longer_authorizes_the_published_key() -> None:
    example = load_config(ROOT / "config/examples/backup-server.yaml")
    assert published.authorized_published_keys(example) == []
    published_key = (SECRETS / "backup-ssh-key.pub").read_text().split()[1]
    assert published_key not in (ROOT / "config/examples/backup-server.yaml").read_text()
    # The development server of the default appliance does, and says where.
    dev = load_config(ROOT / "config/default-backup-server.yaml")
    assert published.authorized_published_keys(dev) == [
        published.Finding("backup_server.clients[0].public_key", "backup-ssh-key.pub")]
