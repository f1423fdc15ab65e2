"""HTTPS to the box through its published 443, as a browser that resolves the route's
name to this machine would: SNI and the certificate checked for the route's host name
against the root the rig handed out (the test CA's, or the box's fallback certificate).
No unverified TLS."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from builder.rig.parts import NamedHTTPSConnection

HTTPS_TIMEOUT_S = 30


@dataclass(frozen=True)
class Answer:
    """What the box answered: status, headers (names lower-case) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def request(port: int, host: str, path: str = "/", *, ca_file: Path,
            method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None, address: str = "127.0.0.1",
            timeout: float = HTTPS_TIMEOUT_S) -> Answer:
    """One HTTPS request to `host` (a route's host name) at address:port; redirects are
    not followed (a 301/302 is an answer a test may want to see)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    connection = NamedHTTPSConnection(address, port, host, context=context, timeout=timeout)
    try:
        connection.request(method, path, body, {"Host": host, **(headers or {})})
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                      response.read())
    finally:
        connection.close()
