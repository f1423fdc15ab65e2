"""Real receivers for the alert tests: an SMTP server (aiosmtpd) and an HTTP server, on
loopback sockets, each keeping what it was sent or refusing it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class Inbox:
    """An aiosmtpd handler: keeps each message, or refuses every one with `refuse`."""

    def __init__(self, refuse: str | None = None, refuse_rcpt: str | None = None) -> None:
        self.refuse = refuse
        self.refuse_rcpt = refuse_rcpt
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if self.refuse_rcpt is not None:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse is not None:
            return self.refuse
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        self.messages.append((str(envelope.mail_from), list(envelope.rcpt_tos), content))
        return "250 2.0.0 queued"


def smtp_server(inbox: Inbox) -> Iterator[tuple[Inbox, int]]:
    # The controller's start-up check connects to the port it was given: pick a free one.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


class Hooks:
    """A webhook receiver answering `status` to every POST, keeping path and body."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.posts: list[tuple[str, bytes]] = []


def http_server(hooks: Hooks) -> Iterator[tuple[Hooks, int]]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hooks.posts.append((self.path, body))
            self.send_response(hooks.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hooks, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung destination)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()
