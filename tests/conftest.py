"""Shared test plumbing: in CI a missing tool fails the run; elsewhere it skips the test."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, what: str) -> None:
    """Skip outside CI when `what` is missing; fail in CI, where a missing tool is a defect."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing in CI: scripts/setup must install it")
    pytest.skip(f"{what} is missing (run scripts/setup)")


def require_tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None
    )
    require(path is not None, f"the `{name}` command")
    assert path is not None
    return path


def docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_engine() -> None:
    require(docker_answers(), "a running Docker Engine (`docker info`)")


# ---------------------------------------------------------------- test order
#
# pytest-randomly shuffles modules and the tests in them (its seed is in the header:
# `Using --randomly-seed=N`; pass that option to repeat an order, `-p no:randomly` to
# turn shuffling off). The end-to-end modules are not shuffled: each
# stands on one slow box, and a failure there must be repeatable without knowing a seed.
# They run in the order written, or reversed within each module when
# ARKBOX_TEST_E2E_ORDER=reversed (scripts/test sets it), which proves, at no extra cost,
# that no e2e test needs another to have run first. See docs/testing.md.

E2E_ORDER_ENV = "ARKBOX_TEST_E2E_ORDER"
_COLLECTED = pytest.StashKey[int]()
_counter = iter(range(1 << 62))


def pytest_itemcollected(item: pytest.Item) -> None:
    item.stash[_COLLECTED] = next(_counter)  # the order written, before any shuffling


def _is_e2e(item: pytest.Item) -> bool:
    return "e2e" in item.path.parent.parts[-1:]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order = os.environ.get(E2E_ORDER_ENV, "written")
    if order not in {"written", "reversed"}:
        raise pytest.UsageError(f"{E2E_ORDER_ENV}={order!r}: use 'written' or 'reversed'")
    slots: dict[str, list[int]] = {}  # module -> where its items stand now
    for index, item in enumerate(items):
        if _is_e2e(item):
            slots.setdefault(str(item.path), []).append(index)
    for places in slots.values():
        module_items = sorted((items[i] for i in places), key=lambda it: it.stash[_COLLECTED],
                              reverse=order == "reversed")
        for place, item in zip(places, module_items, strict=True):
            items[place] = item


def pytest_report_header(config: pytest.Config) -> str:
    return f"e2e tests: in each module in the order {os.environ.get(E2E_ORDER_ENV, 'written')}"
