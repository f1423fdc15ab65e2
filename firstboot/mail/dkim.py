"""DKIM keys: one RSA 2048 key signs every mail domain (one TXT record per domain).

RSA only, not Ed25519+RSA: receivers that verify Ed25519 (RFC 8463) are still few,
and OpenDKIM signs with one key per signature; a second key doubles the DNS records
to publish for little gain. See docs/decisions.md.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_BITS = 2048
KEY_FILE = "dkim.key"  # under /srv/arkbox/secrets/generated (made by the secrets step)
TXT_CHUNK = 255  # the longest character-string a TXT record holds


def make_private_key() -> bytes:
    """A new RSA 2048 key as PKCS#8 PEM (what OpenDKIM and dkimpy read)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_key_b64(private_pem: bytes) -> str:
    """The p= value: the public key as base64 DER SubjectPublicKeyInfo."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def txt_value(private_pem: bytes) -> str:
    """The DKIM TXT record's text for the key (RFC 6376 section 3.6.1)."""
    return f"v=DKIM1; k=rsa; p={public_key_b64(private_pem)}"


def record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def parse_tags(text: str) -> dict[str, str]:
    """tag=value; pairs of a DKIM/DMARC/STS record (whitespace inside values dropped)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if "=" in part:
            name, _, value = part.partition("=")
            tags[name.strip().lower()] = "".join(value.split())
    return tags
