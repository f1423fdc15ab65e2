"""The bounded waits for containers (health step, dump loader, drill): each goes through
wait.until, returns as soon as all is well and, on time-out, says what it waited for,
for how long, and why it gave up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firstboot.backup import drill, dumps
from firstboot.core.config import DEFAULT_CONFIG_PATH, load_config
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.step import StepFailed
from firstboot.steps import health


@pytest.fixture
def ctx(tmp_path: Path) -> FirstbootContext:
    return FirstbootContext(load_config(DEFAULT_CONFIG_PATH), Paths(tmp_path),
                            _docker=object())  # type: ignore[arg-type]


def reports(*problems: str | None) -> Iterator[health.HealthReport]:
    for problem in problems:
        yield health.HealthReport({"wiki": problem, "db": None}, {}, "CA-issued")


def test_health_returns_once_everything_is_healthy(
        ctx: FirstbootContext, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = reports("starting: health check fails", None)
    monkeypatch.setattr(health, "check_once", lambda ctx: next(answers))
    monkeypatch.setattr(health, "POLL_S", 0.01)
    assert health.wait_until_healthy(ctx).summary() == "2/2 services healthy"


def test_health_gives_up_saying_why_per_service(
        ctx: FirstbootContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "check_once", lambda ctx: next(reports("unhealthy: exit 1")))
    monkeypatch.setattr(health, "POLL_S", 0.01)
    with pytest.raises(StepFailed) as failed:
        health.wait_until_healthy(ctx, timeout_s=0.05)
    assert failed.value.message == (
        "gave up waiting for every container to be healthy and every route to answer "
        "after 0.05 s: 1/2 services healthy:\n  wiki: unhealthy: exit 1")
    assert failed.value.hint and "docker logs" in failed.value.hint


def test_a_dump_waits_for_its_database_and_gives_up_naming_it(
        ctx: FirstbootContext, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["starting: health check fails", None])
    monkeypatch.setattr(dumps, "container_problem", lambda client, name: next(answers))
    monkeypatch.setattr(dumps, "POLL_S", 0.01)
    dumps._wait_healthy(ctx, "arkbox-db")  # healthy on the second look
    monkeypatch.setattr(dumps, "container_problem", lambda client, name: "exited (exit 1)")
    monkeypatch.setattr(dumps, "READY_TIMEOUT_S", 0.05)
    with pytest.raises(StepFailed, match=r"^gave up waiting for arkbox-db to be ready after "
                       r"0.05 s: exited \(exit 1\); cannot load its dump$"):
        dumps._wait_healthy(ctx, "arkbox-db")


def test_a_drill_records_who_came_up_and_who_did_not(
        ctx: FirstbootContext, monkeypatch: pytest.MonkeyPatch) -> None:
    def problem(client: object, name: str) -> str | None:
        return "unhealthy: 500" if name.endswith("-wiki") else None

    monkeypatch.setattr(drill, "container_problem", problem)
    monkeypatch.setattr(drill, "POLL_S", 0.01)
    report = drill.DrillReport(services={n: drill.ServiceResult(n) for n in ("db", "wiki")})
    shown: list[str] = []
    drill._wait_healthy(ctx, report, since=0.0, timeout_s=0.05, progress=shown.append)
    assert report.services["db"].ok and not report.services["wiki"].ok
    assert report.services["wiki"].problem == "unhealthy: 500"
    assert report.failure == "1 service(s) not healthy after 0 s: wiki"
    assert report.hint and any(line.startswith("db: healthy after") for line in shown)
