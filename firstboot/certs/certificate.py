"""The box's one TLS certificate on disk: the names it must carry, the live and staged files,
the self-signed fallback, and what `certificate.json` records. Used by the `tls` step (the
fallback at first boot), the renewal and status. The layout:

    /srv/arkbox/tls/live/privkey.pem        the key the proxy serves with (0600)
    /srv/arkbox/tls/live/fullchain.pem      certificate + chain
    /srv/arkbox/tls/live/certificate.json   {"source": "fallback" | "acme", "names": [...],
                                             "not_after": ..., "fingerprint_sha256": ...,
                                             "reason": why it is the fallback}
    /srv/arkbox/tls/staged/                 a new key + chain before they go live; a
                                             complete pair left by a power cut is
                                             installed by the next tls or renew run

A fallback certificate is made again when the host names change or fewer than
30 days are left. A certificate the ACME step installed is left alone while it
is valid, even if it lacks a new name: getting that name is ACME's job.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.files import atomic_write, ensure_dir
from firstboot.mail.records import client_config_hosts

FALLBACK_ORGANIZATION = "arkbox fallback certificate (self-signed)"
VALIDITY = timedelta(days=90)
RENEW_BEFORE = timedelta(days=30)
CLOCK_SKEW = timedelta(hours=1)  # valid a little in the past: clients' clocks differ
COMMON_NAME_MAX = 64  # X.509 upper bound; longer names go in the SAN only
NO_ACME_YET = "no certificate from an ACME CA yet"


def wanted_names(config: Appliance) -> list[str]:
    """Every host name served over TLS: the appliance, each route, the mail server, and per
    mail domain mta-sts.DOMAIN (senders fetch the MTA-STS policy there over HTTPS),
    autoconfig.DOMAIN and autodiscover.DOMAIN (mail clients fetch their settings there)."""
    names = [config.appliance.hostname]
    names += [s.route.hostname for s in config.services.values() if s.route is not None]
    if config.mail.enabled and config.mail.hostname:
        names.append(config.mail.hostname)
    if config.mail.enabled:
        names += [f"mta-sts.{domain}" for domain in config.mail.domains]
        names += [host for domain in config.mail.domains for host in client_config_hosts(domain)]
    return sorted(set(names))


# ---------------------------------------------------------------- paths


@dataclass(frozen=True)
class LiveFiles:
    directory: Path

    @property
    def key(self) -> Path:
        return self.directory / "privkey.pem"

    @property
    def chain(self) -> Path:
        return self.directory / "fullchain.pem"

    @property
    def info(self) -> Path:
        return self.directory / "certificate.json"


def live_files(ctx: FirstbootContext) -> LiveFiles:
    return LiveFiles(ctx.paths.tls / "live")


def staged_files(ctx: FirstbootContext) -> LiveFiles:
    return LiveFiles(ctx.paths.tls / "staged")


def install(live: LiveFiles, staged: LiveFiles, key_pem: bytes, chain_pem: bytes,
            checkpoint: Callable[[str], None] = lambda point: None) -> x509.Certificate:
    """Make key + chain live so that a power cut leaves the old pair or the new, never a mix.

    Both are staged first (the chain last: its presence means the pair is complete),
    then copied over the live files; `finish_staged` completes a copy a power cut cut short.
    """
    ensure_dir(staged.directory, 0o700)
    atomic_write(staged.key, key_pem, 0o600)
    atomic_write(staged.chain, chain_pem, 0o644)
    checkpoint("staged")
    certificate = finish_staged(live, staged)
    assert certificate is not None
    return certificate


def finish_staged(live: LiveFiles, staged: LiveFiles) -> x509.Certificate | None:
    """Install a complete staged pair (see `install`); None when nothing was staged."""
    pair = read_current(staged)
    if pair.certificate is None or pair.problem is not None:
        for path in (staged.key, staged.chain):
            path.unlink(missing_ok=True)  # half-staged: the live pair was never touched
        return None
    ensure_dir(live.directory, 0o755)
    atomic_write(live.key, staged.key.read_bytes(), 0o600)
    atomic_write(live.chain, staged.chain.read_bytes(), 0o644)
    write_info(live, certificate_info(pair.certificate, None))
    staged.chain.unlink()
    staged.key.unlink()
    return pair.certificate


# ---------------------------------------------------------------- the certificate


def make_fallback(names: list[str], now: datetime) -> tuple[bytes, bytes, x509.Certificate]:
    """A self-signed ECDSA P-256 certificate for `names`: (key PEM, certificate PEM, cert)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject_parts = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, FALLBACK_ORGANIZATION)]
    if len(names[0]) <= COMMON_NAME_MAX:
        subject_parts.append(x509.NameAttribute(NameOID.COMMON_NAME, names[0]))
    subject = x509.Name(subject_parts)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM), certificate


def cert_names(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return sorted(san.value.get_values_for_type(x509.DNSName))


def is_fallback(certificate: x509.Certificate) -> bool:
    organizations = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return any(a.value == FALLBACK_ORGANIZATION for a in organizations)


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class Current:
    """The certificate the proxy serves now, as far as it is readable and consistent."""

    certificate: x509.Certificate | None
    problem: str | None  # why it cannot be served, when it cannot


def read_current(files: LiveFiles) -> Current:
    try:
        chain = files.chain.read_bytes()
        key_pem = files.key.read_bytes()
    except FileNotFoundError:
        return Current(None, "no certificate yet")
    try:
        certificate = x509.load_pem_x509_certificates(chain)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, IndexError, TypeError):
        return Current(None, "the certificate or its key cannot be read")
    if key.public_key() != certificate.public_key():
        # e.g. a power cut between writing the key and the certificate
        return Current(certificate, "the key does not match the certificate")
    return Current(certificate, None)


def why_renew(current: Current, names: list[str], now: datetime) -> str | None:
    """Why a new fallback certificate is needed, or None to keep the current one."""
    if current.problem is not None or current.certificate is None:
        return current.problem or "no certificate yet"
    certificate = current.certificate
    expires = certificate.not_valid_after_utc
    if not is_fallback(certificate):
        if expires <= now:
            return f"the ACME certificate expired on {expires:%Y-%m-%d}"
        return None
    if cert_names(certificate) != names:
        return "the host names changed"
    if expires - now < RENEW_BEFORE:
        return f"it expires on {expires:%Y-%m-%d}, in less than {RENEW_BEFORE.days} days"
    return None


def certificate_info(certificate: x509.Certificate, reason: str | None) -> dict[str, Any]:
    fallback = is_fallback(certificate)
    info: dict[str, Any] = {
        "source": "fallback" if fallback else "acme",
        "names": cert_names(certificate),
        "not_before": certificate.not_valid_before_utc.isoformat(),
        "not_after": certificate.not_valid_after_utc.isoformat(),
        "issuer": certificate.issuer.rfc4514_string(),
        "fingerprint_sha256": fingerprint(certificate),
    }
    if fallback:
        info["reason"] = reason or NO_ACME_YET
    return info


def describe(certificate: x509.Certificate, names: list[str]) -> str:
    until = f"valid until {certificate.not_valid_after_utc:%Y-%m-%d}"
    if is_fallback(certificate):
        return f"fallback (self-signed) for {len(names)} names, {until}: {NO_ACME_YET}"
    missing = sorted(set(names) - set(cert_names(certificate)))
    lacking = f"; lacks {' '.join(missing)} (left to ACME)" if missing else ""
    return f"ACME certificate for {len(cert_names(certificate))} names, {until}{lacking}"


def recorded_reason(files: LiveFiles) -> str | None:
    try:
        reason = json.loads(files.info.read_text()).get("reason")
    except (OSError, ValueError, AttributeError):
        return None
    return reason if isinstance(reason, str) else None


def write_info(files: LiveFiles, info: dict[str, Any]) -> bool:
    text = json.dumps(info, indent=2, sort_keys=True) + "\n"
    try:
        if files.info.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    atomic_write(files.info, text, 0o644)
    return True


def record_reason(files: LiveFiles, reason: str) -> None:
    """Say in certificate.json why the fallback is still served (a renewal's last error)."""
    current = read_current(files)
    if (current.certificate is not None and current.problem is None
            and is_fallback(current.certificate)):
        write_info(files, certificate_info(current.certificate, reason))
