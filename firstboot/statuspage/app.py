"""What the status page answers: one request in, one response out, no sockets (the server
in server.py adapts it to HTTP, and the unit tests call it directly).

Only the proxy reaches the server (a unix socket), so its X-Real-IP header is the client's
address. Every response carries the security headers; everything but the login form and
the style sheet needs a session cookie (or, for /metrics, HTTP Basic with the same
password, for Prometheus).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from firstboot.core.render import TEMPLATES
from firstboot.statuspage.auth import LoginLimiter, Sessions, verify_password
from firstboot.statuspage.charts import backups_svg, drills_svg
from firstboot.statuspage.metrics import CONTENT_TYPE as METRICS_TYPE
from firstboot.statuspage.metrics import metrics_text
from firstboot.statuspage.page import login_html, page_html

log = logging.getLogger("arkbox.statuspage")

COOKIE = "__Host-arkbox-status"  # __Host-: Secure, Path=/, no Domain (this host only)
CACHE_S = 10.0  # one collection serves the page and its plots
MAX_BODY = 16 * 1024
HTML = "text/html; charset=utf-8"
CSP = ("default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
# The plots are images: their own inline <style> needs no more than this, and no script runs.
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    # Not no-referrer: with it, browsers send "Origin: null" on the login form's POST.
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)


@dataclass
class Request:
    method: str
    path: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes = b""

    @property
    def client(self) -> str:
        return self.headers.get("x-real-ip", "")

    def cookie(self) -> str | None:
        try:
            jar = SimpleCookie(self.headers.get("cookie", ""))
        except CookieError:
            return None
        morsel = jar.get(COOKIE)
        return morsel.value if morsel else None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = HTML
    headers: list[tuple[str, str]] = field(default_factory=list)

    def all_headers(self) -> list[tuple[str, str]]:
        csp = SVG_CSP if self.content_type.startswith("image/svg") else CSP
        return [("Content-Type", self.content_type), ("Content-Security-Policy", csp),
                *SECURITY_HEADERS, *self.headers]


def _redirect(location: str, *headers: tuple[str, str]) -> Response:
    return Response(303, headers=[("Location", location), *headers])


@dataclass
class StatusPageApp:
    hostname: str
    password_hash: str
    collect: Callable[[], str]  # status --json's text
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    sessions: Sessions = field(default_factory=Sessions)
    clock: Callable[[], float] = time.monotonic
    _cached: tuple[float, dict[str, Any]] | None = None
    _collect_lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if request.method == "POST":
            return self._post(request, path)
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", "text/plain", [("Allow", "GET, POST")])
        if path == "/favicon.ico":
            return Response(204, b"", "text/plain")  # none: browsers ask for it anyway
        if path == "/style.css":
            return Response(200, (TEMPLATES / "statuspage" / "style.css").read_bytes(),
                            "text/css; charset=utf-8")
        if path == "/login":
            return Response(200, login_html(self.hostname).encode())
        if path == "/metrics":
            return self._metrics(request)
        if not self.sessions.valid(request.cookie()):
            if path == "/":
                return _redirect("/login")
            return Response(401, b"log in first\n", "text/plain; charset=utf-8")
        return self._authenticated(path)

    def _authenticated(self, path: str) -> Response:
        doc = self.document()
        if path == "/":
            now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            return Response(200, page_html(doc, self.hostname, now).encode())
        if path == "/status.json":
            return Response(200, json.dumps(doc, indent=2, sort_keys=True).encode(),
                            "application/json")
        if path == "/plots/backups.svg":
            return Response(200, backups_svg(doc.get("backup") or {}).encode(), "image/svg+xml")
        if path == "/plots/drills.svg":
            drills = (doc.get("backup") or {}).get("drills") or []
            return Response(200, drills_svg(drills).encode(), "image/svg+xml")
        return Response(404, b"not found\n", "text/plain; charset=utf-8")

    def _post(self, request: Request, path: str) -> Response:
        origin = request.headers.get("origin")
        if origin is not None and origin != f"https://{self.hostname}":
            return Response(403, b"cross-origin request refused\n", "text/plain")
        if path == "/logout":
            self.sessions.end(request.cookie())
            return _redirect("/login", ("Set-Cookie", f"{COOKIE}=; Max-Age=0; Path=/; Secure; "
                                                      "HttpOnly; SameSite=Strict"))
        if path != "/login":
            return Response(404, b"not found\n", "text/plain; charset=utf-8")
        form = parse_qs(request.body.decode(errors="replace"))
        refused = self.check_password(request.client, (form.get("password") or [""])[0])
        if refused is not None:
            return Response(refused[0], login_html(self.hostname, refused[1]).encode(),
                            headers=refused[2])
        token = self.sessions.start()
        log.info("status page: login from %s", request.client)
        return _redirect("/", ("Set-Cookie", f"{COOKIE}={token}; Path=/; Secure; HttpOnly; "
                                             "SameSite=Strict"))

    def check_password(self, client: str,
                       password: str) -> tuple[int, str, list[tuple[str, str]]] | None:
        """None when the password is right; else (status, message, headers). A locked-out
        client is refused before its password is even looked at."""
        wait = self.limiter.locked_for(client)
        if wait > 0:
            return (429, f"Too many failed logins from your address: try again in "
                         f"{wait / 60:.0f} min.", [("Retry-After", f"{wait:.0f}")])
        if verify_password(password, self.password_hash):
            self.limiter.succeeded(client)
            return None
        left = self.limiter.failed(client)
        log.warning("status page: wrong password from %s (%d tries left)", client, left)
        if left == 0:
            return (429, "Wrong password. Too many failed logins from your address: "
                         "locked out for 15 min.", [("Retry-After", "900")])
        return (401, f"Wrong password ({left} tries left before a 15 min lock-out).", [])

    def _metrics(self, request: Request) -> Response:
        # Prometheus sends its credentials unasked; a browser without them is sent to the
        # login form's words, not a Basic prompt (so no challenge until credentials fail).
        challenge = [("WWW-Authenticate", 'Basic realm="arkbox status", charset="UTF-8"')]
        if not self.sessions.valid(request.cookie()):
            password = basic_password(request.headers.get("authorization", ""))
            if password is None:
                return Response(401, b"log in first: /login, or HTTP Basic with the page's "
                                     b"password\n", "text/plain")
            refused = self.check_password(request.client, password)
            if refused is not None:
                return Response(refused[0], refused[1].encode() + b"\n", "text/plain",
                                challenge + refused[2])
        return Response(200, metrics_text(self.document()).encode(), METRICS_TYPE)

    def document(self) -> dict[str, Any]:
        """status --json, collected at most every CACHE_S."""
        with self._collect_lock:
            now = self.clock()
            if self._cached is None or now - self._cached[0] >= CACHE_S:
                self._cached = (now, json.loads(self.collect()))
            return self._cached[1]


def basic_password(header: str) -> str | None:
    """The password of an `Authorization: Basic` header (any user name)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] if ":" in decoded else None
