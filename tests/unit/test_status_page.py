"""The status page without a browser: the password and lock-out logic, the request
handling (login required, headers, /metrics), the HTML and plots from status data, the
proxy's route to it and the step that sets it up."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from firstboot.containers.nginx import StatusPageSite, render_proxy_config
from firstboot.core.config import DEFAULT_CONFIG_PATH, load_config
from firstboot.statuspage import auth, charts, page
from firstboot.statuspage.app import COOKIE, CSP, Request, Response, StatusPageApp
from firstboot.statuspage.metrics import metrics_text
from firstboot.statuspage.server import StatusPageServer

PASSWORD = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def password_hash() -> str:
    return auth.hash_password(PASSWORD)


def status_doc(backups: int = 3, failed: int = 1) -> dict[str, Any]:
    history = [{"archive": f"box-2026-01-0{i + 1}",
                "finished_at": f"2026-01-0{i + 1}T03:00:00+00:00",
                "seconds": 10 + i, "original_size": (i + 1) * 50 * 1024**2,
                "deduplicated_size": 1024**2, "pauses": {"wiki": 0.4, "calendar": 1.5 + i}}
               for i in range(backups)]
    return {
        "ran": True, "result": "ok", "command": "firstboot",
        "started_at": "2026-01-01T00:00:00+00:00",
        "seconds": 48.2, "mode": "FRESH", "installer_version": "0.1.0",
        "steps": [{"name": "firewall", "state": "changed", "summary": "open: 22(admin) 80 443"}],
        "failures": [],
        "certificate": {"source": "acme", "issuer": "CN=Pebble Intermediate CA",
                        "names": ["arkbox.test"], "not_after": "2026-04-01T00:00:00+00:00",
                        "renewal": {"issued": [{"at": "2026-01-01T00:05:00+00:00",
                                                "issuer": "CN=Pebble Intermediate CA",
                                                "not_after": "2026-04-01T00:00:00+00:00"}]}},
        "backup": {"enabled": True, "last": history[-1]["archive"] if history else None,
                   "finished_at": history[-1]["finished_at"] if history else None,
                   "original_size": 150 * 1024**2, "deduplicated_size": 1024**2, "seconds": 12,
                   "history": history, "warnings": ["<b>escaped</b>"],
                   "failed_runs": [{"at": f"2026-01-1{i}T03:00:00+00:00", "message": "refused"}
                                   for i in range(failed)],
                   "drills": [{"started_at": "2026-01-02T04:30:00+00:00", "result": "pass",
                               "archive": "box-2026-01-02", "seconds": 40,
                               "seconds_to_healthy": 21.5, "failure": None},
                              {"started_at": "2026-01-09T04:30:00+00:00", "result": "fail",
                               "archive": "box-2026-01-09", "seconds": 5,
                               "seconds_to_healthy": None, "failure": "wiki unhealthy"}],
                   "last_drill": {"result": "fail", "started_at": "2026-01-09T04:30:00+00:00"}},
        "services": {"containers": [
            {"name": "arkbox-wiki", "health": "healthy", "since": "2026-01-01T00:01:00+00:00",
             "restarts": 0, "published_ports": []},
            {"name": "arkbox-proxy", "health": "running (no check)", "restarts": 2,
             "since": "2026-01-01T00:01:00+00:00", "published_ports": ["443/tcp", "80/tcp"]}]},
        "host": {"disks": [{"path": "/", "used_bytes": 9 * 1024**3, "total_bytes": 10 * 1024**3,
                            "used_percent": 90.0, "inodes_used_percent": 3.0}],
                 "reboot_required": True, "reboot_required_since": "2026-01-03T06:00:00+00:00",
                 "reboot_required_by": ["linux-image-amd64"], "updates_pending": 4,
                 "security_updates_pending": 1},
        "mail_check": {"result": "warn", "checked_at": "2026-01-02T10:00:00+00:00",
                       "findings": [{"check": "dkim arkbox.test", "level": "warn",
                                     "message": "no DKIM record", "fix": "publish it"}]},
        # A part the page has no section for yet (e.g. the alerts, added by another issue).
        "alerts": {"firing": [{"condition": "backup_failed", "since": "2026-01-10"}]},
    }


def make_app(password_hash: str, doc: dict[str, Any] | None = None,
             clock: Clock | None = None) -> StatusPageApp:
    clock = clock or Clock()
    return StatusPageApp("arkbox.test", password_hash, lambda: json.dumps(doc or status_doc()),
                         limiter=auth.LoginLimiter(clock), sessions=auth.Sessions(clock),
                         clock=clock)


def get(app: StatusPageApp, path: str, cookie: str | None = None,
        **headers: str) -> Response:
    wanted = {"x-real-ip": "198.51.100.7", **{k.replace("_", "-"): v for k, v in headers.items()}}
    if cookie:
        wanted["cookie"] = f"{COOKIE}={cookie}"
    return app.handle(Request("GET", path, wanted))


def login(app: StatusPageApp, password: str, client: str = "198.51.100.7") -> Response:
    body = f"password={password.replace(' ', '+')}".encode()
    return app.handle(Request("POST", "/login", {"x-real-ip": client,
                                                 "origin": "https://arkbox.test"}, body))


def cookie_of(response: Response) -> str:
    header = dict(response.headers)["Set-Cookie"]
    assert "Secure" in header and "HttpOnly" in header and "SameSite=Strict" in header
    match = re.match(rf"{COOKIE}=([^;]+);", header)
    assert match
    return match.group(1)


# ---------------------------------------------------------------- password and lock-out


def test_argon2id_hash_verifies_only_its_password(password_hash: str) -> None:
    assert password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert auth.verify_password(PASSWORD, password_hash)
    assert not auth.verify_password("wrong", password_hash)
    assert not auth.verify_password(PASSWORD, "plain text")


def test_stored_hash_is_kept_while_it_verifies_and_a_given_hash_is_used_as_is(
        password_hash: str) -> None:
    assert auth.stored_hash(PASSWORD, password_hash) == password_hash
    renewed = auth.stored_hash("another", password_hash)
    assert renewed != password_hash and auth.verify_password("another", renewed)
    assert auth.stored_hash(password_hash, None) == password_hash


def test_lockout_after_five_failures_then_free_again() -> None:
    clock = Clock()
    limiter = auth.LoginLimiter(clock)
    assert [limiter.failed("192.0.2.1") for _ in range(5)] == [4, 3, 2, 1, 0]
    assert limiter.locked_for("192.0.2.1") == auth.LOCKOUT_S
    assert limiter.locked_for("192.0.2.2") == 0  # per client
    clock.now += auth.LOCKOUT_S
    assert limiter.locked_for("192.0.2.1") == 0
    assert limiter.failed("192.0.2.1") == 4  # counting starts again


def test_failures_outside_the_window_are_forgotten_and_success_clears_them() -> None:
    clock = Clock()
    limiter = auth.LoginLimiter(clock)
    for _ in range(4):
        limiter.failed("192.0.2.1")
    clock.now += auth.FAILURE_WINDOW_S
    assert limiter.failed("192.0.2.1") == 4
    limiter.succeeded("192.0.2.1")
    assert limiter.failed("192.0.2.1") == 4


def test_an_ipv6_client_counts_by_its_64() -> None:
    limiter = auth.LoginLimiter(Clock())
    for host in range(1, 6):
        limiter.failed(f"2001:db8:1:2::{host}")
    assert limiter.locked_for("2001:db8:1:2::99") > 0
    assert limiter.locked_for("2001:db8:1:3::1") == 0


def test_sessions_expire_when_idle_and_at_most_after_their_lifetime() -> None:
    clock = Clock()
    sessions = auth.Sessions(clock)
    token = sessions.start()
    assert sessions.valid(token) and not sessions.valid("forged") and not sessions.valid(None)
    clock.now += auth.SESSION_IDLE_S - 1
    assert sessions.valid(token)  # activity renews the idle time
    clock.now += auth.SESSION_IDLE_S
    assert not sessions.valid(token)
    token = sessions.start()
    for _ in range(auth.SESSION_MAX_S // (auth.SESSION_IDLE_S - 60) + 1):
        clock.now += auth.SESSION_IDLE_S - 60
        sessions.valid(token)
    assert not sessions.valid(token)
    token = sessions.start()
    sessions.end(token)
    assert not sessions.valid(token)


# ---------------------------------------------------------------- requests


@pytest.mark.parametrize("path", ["/status.json", "/plots/backups.svg", "/plots/drills.svg",
                                  "/metrics"])
def test_no_data_without_login(password_hash: str, path: str) -> None:
    response = get(make_app(password_hash), path)
    assert response.status == 401
    assert b"arkbox-wiki" not in response.body and b"box-2026" not in response.body


def test_the_page_sends_to_the_login_form(password_hash: str) -> None:
    app = make_app(password_hash)
    assert get(app, "/").status == 303
    assert dict(get(app, "/").headers)["Location"] == "/login"
    assert get(app, "/", cookie="made-up").status == 303
    form = get(app, "/login")
    assert form.status == 200 and b'type="password"' in form.body


def test_login_then_every_part_then_logout(password_hash: str) -> None:
    app = make_app(password_hash)
    response = login(app, PASSWORD)
    assert response.status == 303 and dict(response.headers)["Location"] == "/"
    token = cookie_of(response)
    html = get(app, "/", cookie=token)
    assert html.status == 200
    for section in page.SECTIONS:
        assert f'id="{section}"'.encode() in html.body
    assert json.loads(get(app, "/status.json", cookie=token).body)["result"] == "ok"
    assert get(app, "/plots/backups.svg", cookie=token).content_type == "image/svg+xml"
    logout = app.handle(Request("POST", "/logout", {"cookie": f"{COOKIE}={token}"}))
    assert logout.status == 303
    assert get(app, "/status.json", cookie=token).status == 401


def test_wrong_password_refused_then_locked_out_even_with_the_right_one(
        password_hash: str) -> None:
    clock = Clock()
    app = make_app(password_hash, clock=clock)
    answers = [login(app, "wrong") for _ in range(5)]
    assert [a.status for a in answers] == [401, 401, 401, 401, 429]
    assert b"4 tries left" in answers[0].body
    locked = login(app, PASSWORD)
    assert locked.status == 429 and "Set-Cookie" not in dict(locked.headers)
    assert dict(locked.headers)["Retry-After"] == str(auth.LOCKOUT_S)
    assert login(app, PASSWORD, client="203.0.113.9").status == 303  # another client
    clock.now += auth.LOCKOUT_S
    assert login(app, PASSWORD).status == 303


def test_a_cross_origin_post_is_refused(password_hash: str) -> None:
    app = make_app(password_hash)
    response = app.handle(Request("POST", "/login", {"origin": "https://evil.test"},
                                  f"password={PASSWORD}".encode()))
    assert response.status == 403


def test_every_answer_carries_the_strict_headers(password_hash: str) -> None:
    app = make_app(password_hash)
    for response in (get(app, "/login"), get(app, "/"), get(app, "/style.css"),
                     login(app, "wrong")):
        headers = dict(response.all_headers())
        assert headers["Content-Security-Policy"] == CSP
        assert "'unsafe-inline'" not in CSP and "script-src" not in CSP  # no script at all
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Frame-Options"] == "DENY"


def test_metrics_with_basic_auth_and_the_same_lockout(password_hash: str) -> None:
    app = make_app(password_hash)

    def basic(password: str) -> str:
        return "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()

    ok = get(app, "/metrics", authorization=basic(PASSWORD))
    assert ok.status == 200 and ok.content_type.startswith("text/plain; version=0.0.4")
    assert b'arkbox_container_restarts{container="arkbox-proxy"} 2' in ok.body
    assert [get(app, "/metrics", authorization=basic("x")).status for _ in range(5)][-1] == 429
    assert get(app, "/metrics", authorization=basic(PASSWORD)).status == 429


def test_the_data_is_collected_once_for_the_page_and_its_plots(password_hash: str) -> None:
    calls = []
    clock = Clock()

    def collect() -> str:
        calls.append(1)
        return json.dumps(status_doc())

    app = StatusPageApp("arkbox.test", password_hash, collect,
                        limiter=auth.LoginLimiter(clock), sessions=auth.Sessions(clock),
                        clock=clock)
    token = cookie_of(login(app, PASSWORD))
    for path in ("/", "/plots/backups.svg", "/plots/drills.svg"):
        get(app, path, cookie=token)
    assert len(calls) == 1
    clock.now += 60
    get(app, "/", cookie=token)
    assert len(calls) == 2


def test_the_server_answers_on_its_unix_socket(tmp_path: Path, password_hash: str) -> None:
    sock = tmp_path / "http.sock"
    server = StatusPageServer(sock, make_app(password_hash), group=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert (sock.stat().st_mode & 0o777) == 0o660
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(sock))
            client.sendall(b"GET /status.json HTTP/1.1\r\nHost: arkbox.test\r\n"
                           b"X-Real-IP: 192.0.2.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 401")
        assert b"Content-Security-Policy: default-src 'none'" in answer
        from firstboot.statuspage.install import probe

        assert probe(sock) is None  # what the step's verify() asks
        assert "no answer on" in str(probe(tmp_path / "missing.sock"))
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- the page from status data


def test_every_section_is_rendered_from_the_status_data() -> None:
    html = page.page_html(status_doc(), "arkbox.test", "now")
    for expected in ("arkbox-wiki", "healthy", "CN=Pebble Intermediate CA", "2026-04-01 00:00",
                     "box-2026-01-03", "failed: refused", "wiki unhealthy", "21.5 s",
                     "no DKIM record", "open: 22(admin) 80 443", "443/tcp, 80/tcp",
                     "4 pending, 1 of them security", "linux-image-amd64", "90.0 %",
                     "backup_failed"):
        assert expected in html, expected
    assert "&lt;b&gt;escaped&lt;/b&gt;" in html and "<b>escaped" not in html
    assert 'id="status-alerts"' in html  # an unknown part gets a section of its own
    assert "<script" not in html and "style=" not in html  # the CSP allows neither


def test_a_box_that_never_ran_still_renders() -> None:
    html = page.page_html({"ran": False}, "arkbox.test", "now")
    assert "has not run on this box yet" in html
    for section in page.SECTIONS:
        assert f'id="{section}"' in html


def series_marks(svg: str, name: str) -> int:
    """The dots of the series called `name` in a pygal SVG."""
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    titles = [t.text for t in root.iterfind(".//s:g[@class='legends']//s:text", ns)]
    index = titles.index(name)
    found = root.iterfind(f".//s:g[@class='series serie-{index} color-{index}']", ns)
    return sum(len(g.findall(".//s:circle", ns)) for g in found)


def test_the_backup_plot_has_one_mark_per_backup_and_failures_marked() -> None:
    svg = charts.backups_svg(status_doc(backups=7, failed=2)["backup"])
    assert series_marks(svg, charts.SIZE_SERIES) == 7
    assert series_marks(svg, charts.FAILED_SERIES) == 2
    assert "<script" not in svg and "http://" not in svg.replace(
        'xmlns="http://www.w3.org/2000/svg"', "").split("-->")[-1]


def test_plots_without_data_render() -> None:
    assert "no backup yet" in charts.backups_svg({})
    assert "no drill yet" in charts.drills_svg([])


def test_metrics_text_format() -> None:
    text = metrics_text(status_doc())
    assert "# TYPE arkbox_backup_last_size_bytes gauge" in text
    assert 'arkbox_disk_used_ratio{path="/"} 0.9' in text
    assert "arkbox_reboot_required 1" in text
    assert "arkbox_drill_last_pass 0" in text
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r"^[a-z_]+(\{[^}]*\})? -?[0-9.e+-]+$", line)


# ---------------------------------------------------------------- proxy and config


def test_the_proxy_routes_the_box_hostname_to_the_socket() -> None:
    conf = render_proxy_config([], ocsp_stapling=False,
                               status_page=StatusPageSite("arkbox.test"))
    block = conf[conf.index("server_name arkbox.test;"):]
    assert "proxy_pass http://unix:/run/arkbox-status-page/http.sock:;" in block
    assert "proxy_set_header X-Real-IP $remote_addr;" in block
    assert "Strict-Transport-Security" in block
    assert "server_name arkbox.test;" not in render_proxy_config([], ocsp_stapling=False)


def test_the_default_config_has_the_page_and_its_password_is_a_secret() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    assert config.status_page is not None
    paths = [".".join(str(p) for p in path) for path, _ in config.secret_refs()]
    assert "status_page.password" in paths


# ---------------------------------------------------------------- the step


def step_ctx(root: Path, with_page: bool = True) -> Any:
    import shutil

    from firstboot.core.context import FirstbootContext, Paths

    recipes = root / "usr/share/arkbox/recipes/proxy"
    if not recipes.exists():
        recipes.mkdir(parents=True)
        shutil.copy(Path(__file__).parents[2] / "image/recipes/proxy/recipe.yaml", recipes)
    config = load_config(DEFAULT_CONFIG_PATH)
    if not with_page:
        config = config.model_copy(update={"status_page": None})
    return FirstbootContext(config=config, paths=Paths(root))


def test_the_step_writes_the_hash_root_only_and_the_unit_once(tmp_path: Path) -> None:
    from firstboot.statuspage import install
    from firstboot.steps import status_page as step

    ctx = step_ctx(tmp_path)
    first = step.run(ctx)
    assert first.changed and "https://arkbox.test/" in first.summary
    stored = install.password_file(ctx.paths)
    assert (stored.stat().st_mode & 0o777) == 0o600
    assert (stored.parent.stat().st_mode & 0o777) == 0o700
    secret = ctx.config.secret(ctx.config.status_page.password)
    assert auth.verify_password(secret, stored.read_text().strip())
    assert secret not in stored.read_text()
    unit = install.unit_path(ctx.paths).read_text()
    assert "status-page serve --hostname arkbox.test --socket-group 33" in unit
    assert "PrivateNetwork=yes" in unit
    assert step.verify(ctx) is None
    assert not step.run(ctx).changed  # same hash kept: no new salt on every boot
    off = step_ctx(tmp_path, with_page=False)
    assert step.run(off).changed
    assert not install.unit_path(ctx.paths).exists() and not stored.exists()
    assert step.verify(off) is None


def test_time_labels_at_most_six_and_one_per_minute() -> None:
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 1, 1, tzinfo=UTC)
    daily = [start + timedelta(days=i) for i in range(60)]
    labels = charts.time_labels(daily)
    assert len(labels) == 6 and labels[0] == daily[0] and labels[-1] == daily[-1]
    close = [start + timedelta(seconds=s) for s in (1, 3, 5)]
    assert len(charts.time_labels(close)) == 1
