"""Issue 15 item 4: the unattended update fetches a bundle over real HTTP, checks its
signature with the real ssh-keygen, and only then hands it to `update`; `arkbox
sign-update` makes that signature; the step installs the timer; a failure alerts.

`update` itself is a stand-in here (it is proven in tests/unit/test_update_apply.py and
on a booted box in tests/e2e/test_update.py).
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_update_bundle import bundle

from builder.sign_update import sign_bundle
from firstboot.alerts.conditions import CLEAR, Raised, update_failed
from firstboot.alerts.facts import BoxFacts
from firstboot.core.config import DEFAULT_CONFIG_PATH, load_config
from firstboot.core.config.alerts import Thresholds
from firstboot.core.config.base import EXAMPLE_ADMIN_KEY
from firstboot.core.config.updates import Updates
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.errors import ArkboxError, BadInputError
from firstboot.core.locks import held_or_refused
from firstboot.status_view import fetch_line
from firstboot.steps import updates as updates_step
from firstboot.updates import timer
from firstboot.updates.fetch import DOWNLOAD_DIR, FETCH_LOCK, fetch_and_update
from firstboot.updates.record import fetch_record

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@dataclass
class Published:
    """What the test's web server serves, and what it was asked."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # path, If-None-Match


@pytest.fixture
def web() -> Iterator[tuple[Published, int]]:
    published = Published()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            published.requests.append((self.path, self.headers.get("If-None-Match")))
            body = published.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield published, server.server_address[1]
    server.shutdown()
    server.server_close()


def key_pair(where: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "builds@test",
                    "-f", str(where)], check=True, timeout=30)
    return where.with_suffix(".pub").read_text().strip()


@dataclass
class Publisher:
    bundle: Path
    key: Path
    public_key: str
    port: int
    published: Published

    def settings(self, public_key: str | None = None) -> Updates:
        return Updates(enabled=True, url=f"http://127.0.0.1:{self.port}/box-update.tar",
                       signing_key=public_key or self.public_key)

    def publish(self, tar: Path, signature: Path | None = None) -> None:
        self.published.files["/box-update.tar"] = tar.read_bytes()
        sig = signature or tar.with_name(tar.name + ".sig")
        if sig.exists():
            self.published.files["/box-update.tar.sig"] = sig.read_bytes()


@pytest.fixture
def publisher(tmp_path: Path, web: tuple[Published, int]) -> Publisher:
    published, port = web
    key = tmp_path / "keys" / "signing"
    key.parent.mkdir()
    public = key_pair(key)
    tar = bundle(tmp_path / "build")
    assert sign_bundle(tar, key) == 0
    return Publisher(tar, key, public, port, published)


class Updater:
    """The stand-in for update(): what it was handed, and the exit code it returns."""

    def __init__(self, code: int = 0) -> None:
        self.code = code
        self.seen: list[str] = []

    def __call__(self, path: Path) -> int:
        self.seen.append(hashlib.sha256(path.read_bytes()).hexdigest())
        return self.code


def state(tmp_path: Path) -> Paths:
    paths = Paths(tmp_path / "box")
    paths.state.mkdir(parents=True)
    return paths


def test_a_signed_bundle_is_fetched_checked_and_handed_to_update(
        tmp_path: Path, publisher: Publisher) -> None:
    paths, updater, lines = state(tmp_path), Updater(), []
    publisher.publish(publisher.bundle)
    assert fetch_and_update(publisher.settings(), paths, updater, lines.append) == 0
    assert updater.seen == [hashlib.sha256(publisher.bundle.read_bytes()).hexdigest()]
    assert any("signed by the key in updates.signing_key" in line for line in lines)
    record = fetch_record(paths)
    assert record is not None and record["result"] == "updated" and record["etag"]
    assert not (paths.state / DOWNLOAD_DIR).exists()  # the download never stays
    # The next run asks with the ETag: the server says 304, nothing is downloaded.
    assert fetch_and_update(publisher.settings(), paths, updater, lines.append) == 0
    assert len(updater.seen) == 1
    assert publisher.published.requests[-1] == ("/box-update.tar", record["etag"])
    record = fetch_record(paths)
    assert record is not None and record["result"] == "unchanged"
    assert "unattended update: unchanged" in fetch_line(record).plain


def test_a_bundle_signed_by_another_key_is_never_opened(tmp_path: Path,
                                                        publisher: Publisher) -> None:
    other = key_pair(tmp_path / "keys" / "other")
    paths, updater = state(tmp_path), Updater()
    publisher.publish(publisher.bundle)
    with pytest.raises(BadInputError, match=r"not signed by updates\.signing_key") as caught:
        fetch_and_update(publisher.settings(other), paths, updater, lambda _: None)
    assert caught.value.exit_code == 2
    assert updater.seen == []
    record = fetch_record(paths)
    assert record is not None and (record["result"], record["exit_code"]) == ("refused", 2)
    assert record["etag"] is None  # asked for whole again next time
    assert not (paths.state / DOWNLOAD_DIR).exists()


def test_a_bundle_changed_after_it_was_signed_is_refused(tmp_path: Path,
                                                         publisher: Publisher) -> None:
    paths, updater = state(tmp_path), Updater()
    other = bundle(tmp_path / "other-build", installer=b"\x7fELF not what was signed")
    publisher.publish(other, publisher.bundle.with_name("box-update.tar.sig"))
    with pytest.raises(BadInputError, match="not signed"):
        fetch_and_update(publisher.settings(), paths, updater, lambda _: None)
    assert updater.seen == []


def test_a_missing_signature_or_server_fails_with_what_to_check(
        tmp_path: Path, publisher: Publisher) -> None:
    paths, updater = state(tmp_path), Updater()
    publisher.published.files["/box-update.tar"] = publisher.bundle.read_bytes()  # no .sig
    with pytest.raises(ArkboxError, match=r"box-update.tar.sig: the server answered HTTP 404"):
        fetch_and_update(publisher.settings(), paths, updater, lambda _: None)
    record = fetch_record(paths)
    assert record is not None and record["result"] == "failed"
    closed = Updates(enabled=True, url="http://127.0.0.1:9/box-update.tar",
                     signing_key=publisher.public_key)
    with pytest.raises(ArkboxError, match="could not download") as caught:
        fetch_and_update(closed, paths, updater, lambda _: None)
    assert "check updates.url" in (caught.value.hint or "")
    assert updater.seen == []


def test_an_update_that_failed_is_the_fetch_result_too(tmp_path: Path,
                                                       publisher: Publisher) -> None:
    paths = state(tmp_path)
    publisher.publish(publisher.bundle)
    assert fetch_and_update(publisher.settings(), paths, Updater(1), lambda _: None) == 1
    record = fetch_record(paths)
    assert record is not None and record["result"] == "failed"
    assert record["etag"] is None  # failed before any change (no rollback): asked again
    (paths.state / "update.json").write_text('{"result": "rolled back"}')
    assert fetch_and_update(publisher.settings(), paths, Updater(1), lambda _: None) == 1
    record = fetch_record(paths)
    assert record is not None and record["etag"]  # rolled back: waits for a new bundle


def test_fetch_refuses_when_updates_are_off(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="unattended updates are off"):
        fetch_and_update(Updates(), state(tmp_path), Updater(), lambda _: None)


# ------------------------------------------------------------------ arkbox sign-update


def test_sign_update_checks_the_bundle_and_the_configs_key(tmp_path: Path,
                                                           publisher: Publisher) -> None:
    config = tmp_path / "appliance.yaml"
    config.write_text(
        "appliance:\n  name: box\n  domain: arkbox.test\n  hostname: arkbox.test\n"
        f"  admin:\n    ssh_keys: [{EXAMPLE_ADMIN_KEY}]\n"
        "updates:\n  enabled: true\n  url: https://builds.example.org/box-update.tar\n"
        f"  signing_key: {publisher.public_key}\n")
    assert sign_bundle(publisher.bundle, publisher.key, config) == 0
    other = tmp_path / "keys" / "other"
    key_pair(other)
    with pytest.raises(BadInputError, match=r"not signed by updates\.signing_key"):
        sign_bundle(publisher.bundle, other, config)
    cut = tmp_path / "cut" / "box-update.tar"
    cut.parent.mkdir()
    cut.write_bytes(publisher.bundle.read_bytes()[:4096])
    with pytest.raises(BadInputError):
        sign_bundle(cut, publisher.key)
    assert not cut.with_name("box-update.tar.sig").exists()  # nothing signed


# ------------------------------------------------------------------ the step, the alert


def test_the_step_installs_the_timer_when_on_and_removes_it_when_off(
        tmp_path: Path, publisher: Publisher) -> None:
    config = load_config(DEFAULT_CONFIG_PATH).model_copy(
        update={"updates": publisher.settings()})
    paths = Paths(tmp_path / "root")
    ctx = FirstbootContext(config=config, paths=paths)
    units = paths.at("/etc/systemd/system")
    assert updates_step.run(ctx).changed
    assert "OnCalendar=Sun *-*-* 05:30" in (units / timer.TIMER).read_text()
    assert "update --fetch" in (units / timer.SERVICE).read_text()
    assert updates_step.verify(ctx) is None
    assert not updates_step.run(ctx).changed
    off = FirstbootContext(config=load_config(DEFAULT_CONFIG_PATH), paths=paths)
    assert updates_step.verify(off) is not None  # the timer is still there
    assert updates_step.run(off).changed
    assert not (units / timer.TIMER).exists() and updates_step.verify(off) is None


def test_a_failed_update_or_fetch_raises_the_alert_and_a_good_one_clears_it() -> None:
    limits = Thresholds()
    rolled_back = {"result": "rolled back", "version": ["0.1.0", "0.2.0"],
                   "started_at": NOW.isoformat(), "failure": "health: wiki unhealthy; "
                   "rolled back", "hint": "see docker logs arkbox-wiki"}
    verdict = update_failed(BoxFacts(now=NOW, last_update=rolled_back), limits)["update_failed"]
    assert isinstance(verdict, Raised)
    assert "arkbox 0.2.0" in verdict.title and "wiki unhealthy" in verdict.title
    assert verdict.fix.startswith("see docker logs arkbox-wiki")
    refused = {"result": "refused", "at": NOW.isoformat(),
               "message": "the fetched bundle is not signed by updates.signing_key"}
    verdict = update_failed(BoxFacts(now=NOW, last_update={"result": "ok"},
                                     last_fetch=refused), limits)["update_failed"]
    assert isinstance(verdict, Raised) and "not signed" in verdict.title
    fine = BoxFacts(now=NOW, last_update={"result": "ok"}, last_fetch={"result": "unchanged"})
    assert update_failed(fine, limits) == {"update_failed": CLEAR}
    assert update_failed(BoxFacts(now=NOW), limits) == {"update_failed": CLEAR}


def test_a_second_fetch_while_one_runs_is_refused(tmp_path: Path, publisher: Publisher) -> None:
    paths, updater = state(tmp_path), Updater()
    publisher.publish(publisher.bundle)
    with held_or_refused(paths.state / FETCH_LOCK, ArkboxError("held by the test")), \
            pytest.raises(ArkboxError, match="another fetch of the update bundle"):
        fetch_and_update(publisher.settings(), paths, updater, lambda _: None)
    assert updater.seen == [] and fetch_record(paths) is None
