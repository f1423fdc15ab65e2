"""The status page's HTTP server: a unix socket in the directory the proxy mounts, so
nothing but nginx (as its user) can connect; `arkbox-installer status-page serve`, run by
arkbox-status-page.service.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socketserver
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from firstboot.statuspage.app import MAX_BODY, Request, Response, StatusPageApp

log = logging.getLogger("arkbox.statuspage")
REQUEST_TIMEOUT_S = 30


class _Handler(BaseHTTPRequestHandler):
    server: StatusPageServer
    protocol_version = "HTTP/1.1"
    server_version = "arkbox-status"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_S

    def address_string(self) -> str:  # a unix socket has no peer address; nginx says it
        return self.headers.get("X-Real-IP", "proxy") if self.headers else "proxy"

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._answer(b"")

    def do_HEAD(self) -> None:
        self._answer(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(Response(413, b"too large\n", "text/plain"))
            return
        self._answer(self.rfile.read(length))

    def _answer(self, body: bytes) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(self.command, self.path, headers, body)
        try:
            response = self.server.app.handle(request)
        except Exception:
            log.exception("status page: %s %s failed", self.command, self.path)
            response = Response(500, b"the status page failed: see journalctl -u "
                                     b"arkbox-status-page\n", "text/plain")
        self._send(response)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.all_headers():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)


class StatusPageServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, socket_path: Path, app: StatusPageApp, group: int | None) -> None:
        self.app = app
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()  # left by the previous run (a socket file outlives it)
        old = os.umask(0o117)  # the socket is born 0660, never briefly open to all
        try:
            super().__init__(str(socket_path), _Handler)
        finally:
            os.umask(old)
        if group is not None:
            os.chown(socket_path, os.getuid(), group)


def serve(socket_path: Path, app: StatusPageApp, group: int | None) -> None:
    with StatusPageServer(socket_path, app, group) as server:
        log.info("status page for %s on %s", app.hostname, socket_path)
        server.serve_forever()
