"""The rig's container classes (builder/rig/parts.py) as a test session uses them: a first
boot that fails makes the wait raise with the failing step at once, leaving a `with`
removes what the container made, and a pytest session interrupted (SIGINT) in the middle
of an appliance's first boot leaves no container, network or volume behind."""

from __future__ import annotations

import os
import sys
import textwrap
import time
import uuid
from pathlib import Path

import docker
import pytest
from rig_fixtures import (
    BOOT_TIMEOUT_S,
    DEFAULT_CONFIG,
    SUBNET_SHIFT_ENV,
    admin_key,
    appliance_image,
    config_with,
    dump,
    new_rig,
)
from try_fixtures import assert_nothing_left, engine_objects, interrupt_when, labelled

from builder.rig.parts import ApplianceContainer, FirstBootFailed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIRST_BOOT_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def image(docker_engine: None) -> str:
    return appliance_image(new_rig("images", 96))


def bad_config() -> str:
    """config/default.yaml with a route port that is no port: first boot's config step
    refuses it within seconds."""
    config = config_with(admin_key())
    config["services"]["calendar"]["route"]["port"] = "not-a-port"
    return dump(config)


def test_a_failed_first_boot_raises_at_once_with_the_step_and_its_message(image: str) -> None:
    rig = new_rig("failboot", 97)
    with rig.running():
        with ApplianceContainer(rig, "appliance", image, aliases=["arkbox.test"],
                                config=bad_config(), boot_timeout=BOOT_TIMEOUT_S) as box:
            started = time.monotonic()
            with pytest.raises(FirstBootFailed) as failed:
                box.wait_first_boot(timeout=FIRST_BOOT_TIMEOUT_S)
            waited = time.monotonic() - started
            message = str(failed.value)
            print(f"\nraised after {waited:.1f} s: {message}")
            assert f"first boot of {box.name} failed" in message, message
            assert "config: " in message and "services.calendar.route.port" in message, message
            assert failed.value.hint and "arkbox-installer validate" in failed.value.hint
            assert waited < FIRST_BOOT_TIMEOUT_S / 10, "a failed run is not waited out"
            during = labelled(rig.client, rig.name)
            assert during["containers"] == 1 and during["volumes"] >= 1, during
        # Leaving the `with` removed the container and its volumes; the rig keeps its network.
        assert labelled(rig.client, rig.name) == {"containers": 0, "networks": 1, "volumes": 0}


# The test the interrupted session runs: an appliance booting in a rig of its own,
# interrupted while its first boot runs (the marker line says when).
CHILD_TEST = '''
import os
import time
from pathlib import Path

from builder.rig.parts import ApplianceContainer, Rig
from builder.rig.waits import SystemdState

RUNNING = frozenset({"initializing", "starting", "running", "degraded"})


def first_boot_result(box: ApplianceContainer) -> object:
    try:
        return box.status_json().get("result")
    except ValueError:  # status.json half written
        return None


def test_boot() -> None:
    rig = Rig(name=os.environ["RIG"], ipv4_subnet=os.environ["IPV4"],
              ipv6_subnet=os.environ["IPV6"])
    with rig.running():
        # Seeded: a first boot without its secrets would fail within seconds.
        box = ApplianceContainer(rig, "appliance", os.environ["IMAGE"], aliases=["arkbox.test"],
                                 config=open(os.environ["CONFIG"]).read(),
                                 seed_config=Path(os.environ["SEED_CONFIG"]))
        box.waiting_for(SystemdState(300, interval=1, states=RUNNING))
        with box:
            while (result := first_boot_result(box)) not in {"running", "ok", "failed"}:
                time.sleep(0.5)
            assert result == "running", box.status_json()
            print("FIRST BOOT RUNNING", flush=True)
            box.wait_first_boot(timeout=900)
'''


def test_interrupting_a_session_mid_first_boot_leaves_nothing_behind(
        image: str, tmp_path: Path) -> None:
    client = docker.from_env(timeout=300)
    octet = 98 + int(os.environ.get(SUBNET_SHIFT_ENV, "0"))
    rig_name = f"arkbox-e2e-interrupt-{uuid.uuid4().hex[:6]}"
    (tmp_path / "test_child.py").write_text(textwrap.dedent(CHILD_TEST))
    config = tmp_path / "appliance.yaml"
    config.write_text(dump(config_with(admin_key())))
    before = engine_objects(client)
    assert labelled(client, rig_name) == {"containers": 0, "networks": 0, "volumes": 0}
    at_signal: dict[str, int] = {}
    os.environ.update(RIG=rig_name, IPV4=f"172.30.{octet}.0/24",
                      IPV6=f"fd42:a7b0:{octet:x}::/64", IMAGE=image, CONFIG=str(config),
                      SEED_CONFIG=str(DEFAULT_CONFIG))
    try:
        text = interrupt_when(
            [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:randomly", "-p",
             "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path / "test_child.py")],
            lambda lines: any("FIRST BOOT RUNNING" in line for line in lines), 600,
            before_signal=lambda: at_signal.update(labelled(client, rig_name)),
            expect_code=2)  # pytest's exit code for an interrupted session
    finally:
        for name in ("RIG", "IPV4", "IPV6", "IMAGE", "CONFIG", "SEED_CONFIG"):
            os.environ.pop(name, None)
    assert "KeyboardInterrupt" in text, text[-2000:]
    # It was interrupted with its whole rig up, in the middle of first boot…
    assert at_signal["containers"] == 1 and at_signal["networks"] == 1, at_signal
    assert at_signal["volumes"] >= 1, at_signal
    # …and left nothing of it behind.
    assert_nothing_left(client, before, rig_name)
