"""Step `tls`: the self-signed fallback certificate, its renewal, and its record for status."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firstboot.certs import certificate
from firstboot.core.config import DEFAULT_CONFIG_PATH, Appliance, load_config
from firstboot.core.context import FirstbootContext, Paths
from firstboot.steps import tls

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF6YilbxuYcReyoVRXRnJrBiinY8edFG7Xgx8AxGsXkQ"
DEFAULT_NAMES = ["arkbox.test", "autoconfig.arkbox.test", "autodiscover.arkbox.test",
                 "cal.arkbox.test", "mail.arkbox.test", "mta-sts.arkbox.test",
                 "webmail.arkbox.test", "wiki.arkbox.test"]


@pytest.fixture(scope="module")
def config() -> Appliance:
    return load_config(DEFAULT_CONFIG_PATH)


def default_with(tmp_path: Path, old: str, new: str) -> Appliance:
    """config/default.yaml with one change, next to (a link to) its secrets."""
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "secrets").symlink_to(DEFAULT_CONFIG_PATH.parent / "secrets")
    (folder / "appliance.yaml").write_text(DEFAULT_CONFIG_PATH.read_text().replace(old, new))
    return load_config(folder / "appliance.yaml")


def ctx_at(config: Appliance, root: Path, when: datetime = NOW) -> FirstbootContext:
    return FirstbootContext(config=config, paths=Paths(root), now=lambda: when)


def live(root: Path) -> Path:
    return root / "srv/arkbox/tls/live"


def served(root: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((live(root) / "fullchain.pem").read_bytes())


def test_names_are_every_route_the_mail_host_and_the_appliance(config: Appliance) -> None:
    assert certificate.wanted_names(config) == DEFAULT_NAMES


def test_first_run_makes_a_fallback_certificate(config: Appliance, tmp_path: Path) -> None:
    ctx = ctx_at(config, tmp_path)
    outcome = tls.run(ctx)
    assert outcome.changed
    assert outcome.summary.startswith("fallback (self-signed) for 8 names, valid until "
                                      "2025-08-30")
    assert outcome.details["source"] == "fallback"
    assert outcome.details["reason"] == "no certificate from an ACME CA yet"
    cert = served(tmp_path)
    assert certificate.cert_names(cert) == DEFAULT_NAMES
    assert cert.issuer == cert.subject  # self-signed
    assert cert.not_valid_after_utc - NOW == timedelta(days=90)
    assert cert.not_valid_before_utc < NOW
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    cert.verify_directly_issued_by(cert)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "arkbox.test"
    key_file = live(tmp_path) / "privkey.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()
    info = json.loads((live(tmp_path) / "certificate.json").read_text())
    assert info == {"source": "fallback", "names": DEFAULT_NAMES,
                    "not_before": cert.not_valid_before_utc.isoformat(),
                    "not_after": cert.not_valid_after_utc.isoformat(),
                    "issuer": cert.issuer.rfc4514_string(),
                    "fingerprint_sha256": cert.fingerprint(hashes.SHA256()).hex(),
                    "reason": "no certificate from an ACME CA yet"}
    assert tls.verify(ctx) is None


def test_rerun_keeps_the_certificate(config: Appliance, tmp_path: Path) -> None:
    tls.run(ctx_at(config, tmp_path))
    before = (live(tmp_path) / "fullchain.pem").read_bytes()
    later = ctx_at(config, tmp_path, NOW + timedelta(days=59))
    assert tls.verify(later) is None
    outcome = tls.run(later)
    assert not outcome.changed
    assert (live(tmp_path) / "fullchain.pem").read_bytes() == before


def test_renewed_when_fewer_than_30_days_are_left(config: Appliance, tmp_path: Path) -> None:
    tls.run(ctx_at(config, tmp_path))
    later = ctx_at(config, tmp_path, NOW + timedelta(days=61))
    assert "in less than 30 days" in (tls.verify(later) or "")
    outcome = tls.run(later)
    assert outcome.changed and "valid until 2025-10-30" in outcome.summary
    assert served(tmp_path).not_valid_after_utc == NOW + timedelta(days=61 + 90)


def test_renewed_when_the_host_names_change(config: Appliance, tmp_path: Path) -> None:
    tls.run(ctx_at(config, tmp_path))
    changed = default_with(tmp_path, "wiki.arkbox.test", "docs.arkbox.test")
    ctx = ctx_at(changed, tmp_path)
    assert tls.verify(ctx) == "the host names changed"
    assert tls.run(ctx).changed
    assert "docs.arkbox.test" in certificate.cert_names(served(tmp_path))
    assert "wiki.arkbox.test" not in certificate.cert_names(served(tmp_path))


def test_a_key_that_does_not_match_is_replaced(config: Appliance, tmp_path: Path) -> None:
    """A power cut between writing the key and the certificate."""
    tls.run(ctx_at(config, tmp_path))
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    (live(tmp_path) / "privkey.pem").write_bytes(other)
    ctx = ctx_at(config, tmp_path)
    assert tls.verify(ctx) == "the key does not match the certificate"
    assert tls.run(ctx).changed
    assert tls.verify(ctx) is None


def acme_certificate(names: list[str], not_after: datetime) -> tuple[bytes, bytes]:
    """A certificate as the ACME step would leave it (issued by someone else)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Pebble Intermediate CA")])
    cert = (x509.CertificateBuilder().subject_name(x509.Name([]))
            .issuer_name(issuer).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            cert.public_bytes(serialization.Encoding.PEM))


def test_a_valid_acme_certificate_is_left_alone(config: Appliance, tmp_path: Path) -> None:
    key, chain = acme_certificate(DEFAULT_NAMES[:-1], NOW + timedelta(days=10))
    live(tmp_path).mkdir(parents=True)
    (live(tmp_path) / "privkey.pem").write_bytes(key)
    (live(tmp_path) / "fullchain.pem").write_bytes(chain)
    ctx = ctx_at(config, tmp_path)
    outcome = tls.run(ctx)
    assert (live(tmp_path) / "fullchain.pem").read_bytes() == chain
    assert outcome.summary.startswith("ACME certificate for 7 names, valid until 2025-06-11")
    assert "lacks wiki.arkbox.test (left to ACME)" in outcome.summary
    assert outcome.details["source"] == "acme" and "reason" not in outcome.details
    assert tls.verify(ctx) is None


def test_an_expired_acme_certificate_falls_back(config: Appliance, tmp_path: Path) -> None:
    key, chain = acme_certificate(DEFAULT_NAMES, NOW - timedelta(hours=1))
    live(tmp_path).mkdir(parents=True)
    (live(tmp_path) / "privkey.pem").write_bytes(key)
    (live(tmp_path) / "fullchain.pem").write_bytes(chain)
    ctx = ctx_at(config, tmp_path)
    assert tls.verify(ctx) == "the ACME certificate expired on 2025-06-01"
    outcome = tls.run(ctx)
    assert outcome.changed and outcome.summary.startswith("fallback (self-signed)")
    assert certificate.is_fallback(served(tmp_path))


def test_long_host_name_goes_in_the_san_only(tmp_path: Path) -> None:
    label = "a" * 60
    name = f"{label}.{label}.example.org"
    path = tmp_path / "appliance.yaml"
    path.write_text(textwrap.dedent(f"""
        appliance:
          name: long
          domain: example.org
          hostname: {name}
          admin: {{ssh_keys: ["{KEY}"]}}
        """))
    tls.run(ctx_at(load_config(path), tmp_path))
    cert = served(tmp_path)
    assert certificate.cert_names(cert) == [name]
    assert not cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
