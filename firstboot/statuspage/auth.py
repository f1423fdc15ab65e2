"""The status page's login: the admin's password (Argon2id), sessions, and a per-client
lock-out after repeated failures. Pure and clock-injected, so the tests drive time.

Like the mail logins (Dovecot's anvil, Postfix's auth rate), failures are counted per
client address (an IPv6 client by its /64, which one client usually holds whole).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

# OWASP's recommended minimum for Argon2id (19 MiB, 2 passes, 1 lane), as for the mailboxes.
MEMORY_KIB = 19456
ITERATIONS = 2
LANES = 1
SALT_BYTES = 16
HASH_BYTES = 32
PHC_PREFIX = "$argon2id$"

MAX_FAILURES = 5  # within FAILURE_WINDOW_S, then the client is locked out
FAILURE_WINDOW_S = 15 * 60
LOCKOUT_S = 15 * 60
SESSION_IDLE_S = 30 * 60
SESSION_MAX_S = 12 * 3600

Clock = Callable[[], float]


def hash_password(password: str) -> str:
    """An Argon2id hash in PHC form ($argon2id$v=19$m=...,t=...,p=...$salt$hash)."""
    kdf = Argon2id(salt=os.urandom(SALT_BYTES), length=HASH_BYTES, iterations=ITERATIONS,
                   lanes=LANES, memory_cost=MEMORY_KIB)
    return kdf.derive_phc_encoded(password.encode())


def verify_password(password: str, stored: str) -> bool:
    """True when `stored` (an Argon2id PHC string) is a hash of `password`."""
    if not stored.startswith(PHC_PREFIX):
        return False
    try:
        Argon2id.verify_phc_encoded(password.encode(), stored)
    except (InvalidKey, ValueError):
        return False
    return True


def stored_hash(secret: str, previous: str | None) -> str:
    """What to keep on the box for the secret `status_page.password`: the secret itself when
    it is already a hash; else the previous hash while the password still verifies against
    it (no new salt, no rewrite on every boot), else a new hash."""
    if secret.startswith(PHC_PREFIX):
        return secret
    if previous is not None and verify_password(secret, previous):
        return previous
    return hash_password(secret)


def client_key(address: str) -> str:
    """The unit that failures are counted by: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class LoginLimiter:
    """Failures per client; MAX_FAILURES within the window lock the client out for a while."""

    clock: Clock = time.monotonic
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _locked_until: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def locked_for(self, address: str) -> float:
        """Seconds the client must still wait (0: it may try)."""
        key, now = client_key(address), self.clock()
        with self._lock:
            until = self._locked_until.get(key, 0.0)
            if until <= now:
                self._locked_until.pop(key, None)
                return 0.0
            return until - now

    def failed(self, address: str) -> int:
        """Record a failure; the tries left before the lock-out (0: locked out now)."""
        key, now = client_key(address), self.clock()
        with self._lock:
            recent = [t for t in self._failures.get(key, []) if now - t < FAILURE_WINDOW_S]
            recent.append(now)
            if len(recent) >= MAX_FAILURES:
                self._locked_until[key] = now + LOCKOUT_S
                self._failures.pop(key, None)
                return 0
            self._failures[key] = recent
            # Forget clients that went quiet (the map must not grow without bound).
            for other in [k for k, v in self._failures.items() if now - v[-1] >= FAILURE_WINDOW_S]:
                del self._failures[other]
            return MAX_FAILURES - len(recent)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(client_key(address), None)


@dataclass
class Sessions:
    """Logged-in browsers: a random token in the cookie; only its sha256 is kept, in memory
    (a restart of the server logs everyone out, which is the safe way round)."""

    clock: Clock = time.monotonic
    _sessions: dict[str, tuple[float, float]] = field(default_factory=dict)  # started, seen
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> str:
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._expire(now)
            self._sessions[_digest(token)] = (now, now)
        return token

    def valid(self, token: str | None) -> bool:
        """True for a live session (and it counts as activity)."""
        if not token:
            return False
        now, key = self.clock(), _digest(token)
        with self._lock:
            self._expire(now)
            found = next((k for k in self._sessions if hmac.compare_digest(k, key)), None)
            if found is None:
                return False
            self._sessions[found] = (self._sessions[found][0], now)
            return True

    def end(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(_digest(token), None)

    def _expire(self, now: float) -> None:
        for key, (started, seen) in list(self._sessions.items()):
            if now - seen >= SESSION_IDLE_S or now - started >= SESSION_MAX_S:
                del self._sessions[key]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
