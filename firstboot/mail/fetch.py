"""The HTTPS requests of `check mail`: to one address, with the name the sites are served
under (SNI and Host), the certificate checked (or, on purpose, not). Plain sockets and
ssl: one small request and its answer, with a time-out."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

TIMEOUT_S = 8.0
HTTPS_PORT = 443
MAX_ANSWER = 256 * 1024  # bytes; what the doctor fetches is a few KiB
UNVERIFIED = "-"  # a request's ca_file for "do not check the certificate"


@dataclass(frozen=True)
class HttpsRequest:
    """GET `path` (POST `body` as XML when given) from `address`, for the site `host`."""

    address: str
    host: str
    path: str
    ca_file: str | None  # the CAs to trust (None: the system's; UNVERIFIED: no check)
    body: bytes | None = None


def https_fetch(request: HttpsRequest) -> str:
    """The answer's body when its status is 200; ValueError for another status, OSError
    (ssl.SSLCertVerificationError among them) when it cannot be had."""
    if request.ca_file == UNVERIFIED:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=request.ca_file)
    with socket.create_connection((request.address, HTTPS_PORT), timeout=TIMEOUT_S) as raw, \
            context.wrap_socket(raw, server_hostname=request.host) as tls:
        tls.sendall(_request_bytes(request))
        data = b""
        while (chunk := tls.recv(65536)) and len(data) <= MAX_ANSWER:
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 200 " not in f"{status} ":
        raise ValueError(f"HTTP {status}")
    return body.decode(errors="replace")


def _request_bytes(request: HttpsRequest) -> bytes:
    if request.body is None:
        return f"GET {request.path} HTTP/1.0\r\nHost: {request.host}\r\n\r\n".encode()
    return (f"POST {request.path} HTTP/1.0\r\nHost: {request.host}\r\n"
            "Content-Type: text/xml; charset=utf-8\r\n"
            f"Content-Length: {len(request.body)}\r\n\r\n").encode() + request.body
