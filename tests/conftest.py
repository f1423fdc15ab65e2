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
