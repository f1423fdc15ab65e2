"""The rig's test ACME CA: Pebble, with pebble-challtestsrv as the DNS its validator asks,
serving its own HTTPS with a throw-away CA (`https_identity`)."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docker.models.containers import Container

from builder.rig.parts import NamedHTTPSConnection, Rig, RigContainer, rig_image
from builder.rig.waits import PortsAccept, RigError


def pebble_image(source_dir: Path, cache_dir: Path) -> str:
    """The rig's test ACME CA (Debian's pebble), built offline like the client (cached)."""
    return rig_image(source_dir, cache_dir, "pebble")


@dataclass(frozen=True)
class HttpsIdentity:
    """A throw-away CA and a server certificate it signed (for Pebble's own HTTPS)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def https_identity(names: Sequence[str], days: int = 30) -> HttpsIdentity:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "arkbox rig test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return HttpsIdentity(
        ca.public_bytes(pem), cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


PEBBLE_ACME_PORT = 14000
PEBBLE_MANAGEMENT_PORT = 15000
CHALLTESTSRV_PORT = 8055
PEBBLE_DNS_PORT = 8053


class TestCAContainer(RigContainer):
    """A test ACME CA: Pebble, with pebble-challtestsrv as the DNS its validator asks.

    Pebble serves its directory over HTTPS with `https` (a throw-away CA and a
    certificate for the aliases, e.g. "pebble"); the appliance trusts that CA
    through tls.ca_bundle. Host names resolve only as `add_a` says, so a test
    decides where the CA's HTTP-01 validation goes. Ready when the directory, the
    management endpoint and the DNS API accept connections.
    """

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(self, rig: Rig, role: str, image: str, aliases: Sequence[str] = (),
                 environment: dict[str, str] | None = None,
                 ports: dict[str, int | None] | None = None,
                 files: dict[str, tuple[bytes, int]] | None = None,
                 ipv4_address: str | None = None, *,
                 https: HttpsIdentity | None = None,  # None: made here for the aliases
                 nonce_reject_percent: int = 5,  # Pebble's default: badNonce for 5%
                 validity_seconds: int | None = None,  # None: Pebble's default (5 years)
                 container: Container | None = None) -> None:
        super().__init__(rig, role, image, aliases, None, None, ports, files, ipv4_address,
                         container=container)
        self.https = https or https_identity(list(self.aliases) or [self.role])
        self.nonce_reject_percent, self.validity_seconds = nonce_reject_percent, validity_seconds
        config: dict[str, Any] = {
            "listenAddress": f"0.0.0.0:{PEBBLE_ACME_PORT}",
            "managementListenAddress": f"0.0.0.0:{PEBBLE_MANAGEMENT_PORT}",
            "certificate": "/etc/pebble/cert.pem", "privateKey": "/etc/pebble/key.pem",
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity_seconds is not None:
            config["certificateValidityPeriod"] = self.validity_seconds
        self.files.update({
            "/etc/pebble/config.json": (json.dumps({"pebble": config}).encode(), 0o644),
            "/etc/pebble/cert.pem": (self.https.cert_pem, 0o644),
            "/etc/pebble/key.pem": (self.https.key_pem, 0o600),
        })
        self.env.update({"PEBBLE_VA_NOSLEEP": "1",
                         "PEBBLE_WFE_NONCEREJECT": str(self.nonce_reject_percent),
                         **(environment or {})})
        # No default answers: a name resolves only once a test adds it.
        self._command = ["sh", "-c",
                        "pebble-challtestsrv -defaultIPv4 '' -defaultIPv6 '' -http01 '' "
                        "-https01 '' -tlsalpn01 '' -dns01 :8053 -management :8055 & "
                        f"exec pebble -config /etc/pebble/config.json "
                        f"-dnsserver 127.0.0.1:{PEBBLE_DNS_PORT}"]
        self.waiting_for(PortsAccept((PEBBLE_ACME_PORT, PEBBLE_MANAGEMENT_PORT,
                                      CHALLTESTSRV_PORT), 60))

    @property
    def directory(self) -> str:
        """The ACME directory URL as the rig's other parts reach it."""
        return f"https://{self.aliases[0]}:{PEBBLE_ACME_PORT}/dir"

    def add_a(self, host: str, address: str) -> None:
        """Make `host` resolve to `address` for Pebble's validator (challtestsrv's API)."""
        body = json.dumps({"host": host.rstrip(".") + ".", "addresses": [address]})
        connection = http.client.HTTPConnection(self.ip(), CHALLTESTSRV_PORT, timeout=10)
        try:
            connection.request("POST", "/add-a", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            if response.status != 200:
                raise RigError(f"pebble-challtestsrv refused {host} -> {address}: "
                               f"HTTP {response.status} {response.read()[:200]!r}")
        finally:
            connection.close()

    def root_pem(self) -> bytes:
        """Pebble's current root (it signs the issued chains), from its management endpoint."""
        context = ssl.create_default_context(cadata=self.https.ca_pem.decode())
        connection = NamedHTTPSConnection(self.ip(), PEBBLE_MANAGEMENT_PORT,
                                           self.aliases[0], context=context, timeout=10)
        try:
            connection.request("GET", "/roots/0")
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200 or b"BEGIN CERTIFICATE" not in body:
            raise RigError(f"pebble's management endpoint gave no root: HTTP {response.status}")
        return body
