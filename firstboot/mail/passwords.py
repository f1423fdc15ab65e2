"""Mailbox password hashes for Dovecot: Argon2id in the PHC format Dovecot verifies.

A password from a secret is hashed once; later runs keep the stored hash while the
password still verifies against it (a fresh salt every run would rewrite the users
file, and recreate the mail container, on every boot).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

SCHEME = "{ARGON2ID}"
# OWASP's recommended minimum (19 MiB, 2 passes, 1 lane); Dovecot verifies through
# libsodium, which takes one lane only.
MEMORY_KIB = 19456
ITERATIONS = 2
LANES = 1
SALT_BYTES = 16
HASH_BYTES = 32


def _kdf(salt: bytes) -> Argon2id:
    return Argon2id(salt=salt, length=HASH_BYTES, iterations=ITERATIONS, lanes=LANES,
                    memory_cost=MEMORY_KIB)


def hash_password(password: str) -> str:
    """A Dovecot password field: {ARGON2ID}$argon2id$v=19$m=...,t=...,p=1$salt$hash."""
    return SCHEME + _kdf(os.urandom(SALT_BYTES)).derive_phc_encoded(password.encode())


def verifies(password: str, stored: str) -> bool:
    """True when `stored` (one of ours) is a hash of `password`."""
    if not stored.startswith(SCHEME):
        return False
    try:
        Argon2id.verify_phc_encoded(password.encode(), stored.removeprefix(SCHEME))
    except (InvalidKey, ValueError):
        return False
    return True
