"""Pieces of the services step that need no engine: the http health check, times, summaries."""

from __future__ import annotations

import http.server
import subprocess
import threading
from collections.abc import Iterator

import pytest

from firstboot.containers.engine import parse_engine_time
from firstboot.containers.plan import Plan
from firstboot.containers.services import ServicesReport
from firstboot.containers.spec import http_check_script
from firstboot.core.config.services import Healthcheck


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response({"/ok": 200, "/moved": 302}.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def local_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.mark.parametrize(("path", "healthy"), [("/ok", True), ("/moved", True),
                                               ("/missing", False)])
def test_http_check_script_really_checks(local_server: int, path: str, healthy: bool) -> None:
    script = http_check_script(path, local_server, Healthcheck(http=path))
    result = subprocess.run(["bash", "-c", script], capture_output=True, timeout=10)
    assert (result.returncode == 0) is healthy


def test_http_check_script_fails_on_a_closed_port() -> None:
    script = http_check_script("/", 1, Healthcheck(http="/"))
    assert subprocess.run(["bash", "-c", script], capture_output=True, timeout=10).returncode != 0


def test_engine_times_with_nanoseconds_parse() -> None:
    parsed = parse_engine_time("2026-11-26T12:31:40.123456789Z")
    assert parsed is not None and parsed.microsecond == 123456 and parsed.utcoffset() is not None
    assert parse_engine_time("0001-01-01T00:00:00Z") is None  # never started


def test_summary_says_exactly_what_changed() -> None:
    report = ServicesReport(Plan(create=("notes",), recreate=("wiki",), keep=("db", "webmail")),
                            reasons={"wiki": "image changed"}, restarted=["db"])
    assert report.summary(4) == ("created notes; recreated wiki (image changed); "
                                 "restarted db (secret changed); 1 unchanged")
    assert report.changed
    quiet = ServicesReport(Plan(keep=("db", "wiki")))
    assert quiet.summary(2) == "2/2 services unchanged" and not quiet.changed
    assert quiet.details()["unchanged"] == ["db", "wiki"]
