"""HTTPS to the box through its published 443, as a browser that resolves the route's
name to this machine would: SNI and the certificate checked for the route's host name
against the root the rig handed out (the test CA's, or the box's fallback certificate).
No unverified TLS."""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

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


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address and port, SNI and the certificate check for `server_name`."""

    def __init__(self, address: str, port: int, server_name: str, *,
                 context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(address, port, context=context, timeout=timeout)
        self._server_name = server_name
        self._context_for_name = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context_for_name.wrap_socket(sock, server_hostname=self._server_name)


def request(port: int, host: str, path: str = "/", *, ca_file: Path,
            method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None, address: str = "127.0.0.1",
            timeout: float = HTTPS_TIMEOUT_S) -> Answer:
    """One HTTPS request to `host` (a route's host name) at address:port; redirects are
    not followed (a 301/302 is an answer a test may want to see)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    connection = _NamedHTTPSConnection(address, port, host, context=context, timeout=timeout)
    try:
        connection.request(method, path, body, {"Host": host, **(headers or {})})
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                      response.read())
    finally:
        connection.close()
