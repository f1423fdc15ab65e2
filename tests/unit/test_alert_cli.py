"""Issue 16 through the installer's command line: `alert test` reports each destination
with its exit code, `alert check` delivers, and `status` (screen and --json) shows what
fires, since when, and the last delivery, never a webhook's secret URL."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alert_receivers import Hooks, http_server

from firstboot.alerts.state import AlertState, Firing, save_state
from firstboot.core.config import DEFAULT_CONFIG_PATH
from firstboot.core.context import Paths
from firstboot.status import Failure, RunResult, Status

INSTALLER = [sys.executable, "-m", "firstboot"]
TOKEN = "s3cr3t-token-4711"


def installer(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INSTALLER, *argv], capture_output=True, text=True, timeout=60)


@pytest.fixture
def hooks() -> Iterator[tuple[Hooks, int]]:
    yield from http_server(Hooks(200))


@pytest.fixture
def hooks_500() -> Iterator[tuple[Hooks, int]]:
    yield from http_server(Hooks(500))


def box(tmp_path: Path, *urls: str) -> Path:
    """The default config with its email off (no server here) and these webhooks, kept as
    secrets like a token-bearing URL should be."""
    etc = tmp_path / "root/etc/arkbox"
    etc.mkdir(parents=True)
    shutil.copytree(DEFAULT_CONFIG_PATH.parent / "secrets", etc / "secrets")
    hooks = ""
    for number, url in enumerate(urls):
        (etc / "secrets" / f"hook{number}").write_text(url + "\n")
        (etc / "secrets" / f"hook{number}").chmod(0o600)
        hooks += f"    - url_secret: {{file: secrets/hook{number}}}\n"
    config = etc / "appliance.yaml"
    config.write_text(DEFAULT_CONFIG_PATH.read_text()
                      + "\nalerts:\n  email: {enabled: false}\n  webhooks:\n" + hooks)
    return config


def test_alert_test_reports_each_destination_and_its_exit_code(
        tmp_path: Path, hooks: tuple[Hooks, int], hooks_500: tuple[Hooks, int]) -> None:
    received, good = hooks
    _, bad = hooks_500
    config = box(tmp_path, f"http://127.0.0.1:{good}/{TOKEN}",
                 f"http://127.0.0.1:{bad}/{TOKEN}")
    shown = installer("alert", "test", "--config", str(config), "--root",
                      str(tmp_path / "root"))
    assert shown.returncode == 1, shown.stderr
    assert f"✓ webhook 1: http://127.0.0.1:{good}/…" in shown.stdout
    assert f"✗ webhook 2: http://127.0.0.1:{bad}/…" in shown.stdout
    assert "answered HTTP 500" in shown.stdout
    assert "- email: alert emails are off" in shown.stdout
    assert TOKEN not in shown.stdout + shown.stderr
    assert json.loads(received.posts[0][1])["event"] == "test"


def test_alert_test_succeeds_when_every_destination_takes_it(
        tmp_path: Path, hooks: tuple[Hooks, int]) -> None:
    _, port = hooks
    config = box(tmp_path, f"http://127.0.0.1:{port}/ok")
    shown = installer("alert", "test", "--config", str(config), "--root",
                      str(tmp_path / "root"))
    assert shown.returncode == 0, shown.stdout + shown.stderr


def test_status_shows_what_fires_since_when_and_the_last_delivery(tmp_path: Path) -> None:
    box(tmp_path, f"http://127.0.0.1:9/{TOKEN}")
    paths = Paths(tmp_path / "root")
    Status("apply", "0", "2026-12-05T10:00:00+00:00", result=RunResult.OK).save(paths.status)
    state = AlertState(firing={"backup_failed": Firing(
        "the backup failed: the server did not answer", "run: arkbox-installer backup",
        "2026-12-05T03:00:00+00:00")}, last_check=datetime(2026, 12, 5, 12, tzinfo=UTC)
        .isoformat())
    state.record({"at": "2026-12-05T03:00:05+00:00", "destination": "webhook 1",
                  "shown": "http://127.0.0.1:9/…", "kind": "firing", "alert": "backup_failed",
                  "ok": False, "error": "cannot reach http://127.0.0.1:9/…: Connection refused"})
    save_state(paths, state)
    screen = installer("status", "--root", str(paths.root))
    assert "alerts: 1 firing" in screen.stdout
    assert "backup_failed since 2026-12-05 03:00:00" in screen.stdout
    assert "fix: run: arkbox-installer backup" in screen.stdout
    assert "last delivery: firing backup_failed to http://127.0.0.1:9/…" in screen.stdout
    data = json.loads(installer("status", "--json", "--root", str(paths.root)).stdout)
    alerts = data["alerts"]
    assert alerts["firing"][0]["since"] == "2026-12-05T03:00:00+00:00"
    assert alerts["last_delivery"]["ok"] is False
    assert alerts["destinations"] == [{"name": "webhook 1", "shown": "http://127.0.0.1:9/…",
                                       "problem": None}]
    assert TOKEN not in screen.stdout + json.dumps(data)


def test_alert_check_queues_a_refused_delivery_and_still_exits_0(
        tmp_path: Path, hooks_500: tuple[Hooks, int]) -> None:
    received, port = hooks_500
    config = box(tmp_path, f"http://127.0.0.1:{port}/{TOKEN}")
    root = tmp_path / "root"
    Status("apply", "0", "2026-12-05T10:00:00+00:00", result=RunResult.FAILED,
           failures=[Failure("mail", "postfix did not start", "docker logs arkbox-mail")]
           ).save(Paths(root).status)
    first = installer("alert", "check", "--json", "--config", str(config), "--root", str(root))
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert "run_failed" in report["firing"] and report["queued"] >= 1
    assert any("answered HTTP 500" in str(r["error"]) for r in report["results"])
    assert any(json.loads(body)["alert"] == "run_failed" for _, body in received.posts)
    again = json.loads(installer("alert", "check", "--json", "--config", str(config),
                                 "--root", str(root)).stdout)
    assert again["events"] == []  # still failing: not sent again
    assert TOKEN not in first.stdout + first.stderr
