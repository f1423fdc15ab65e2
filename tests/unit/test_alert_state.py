"""Issue 16: the alert state's transitions (once when a condition starts, once when it
clears, never every run), hold times, unknown verdicts, the digest, the saved file,
the config's alert rules and the timer the `alerts` step installs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import docker
import docker.errors
import pytest

from firstboot.alerts import timer
from firstboot.alerts.conditions import CLEAR, UNKNOWN, Raised
from firstboot.alerts.destinations import (
    destinations,
    email_route,
    email_unavailable_reason,
    shown_url,
)
from firstboot.alerts.facts import DiskUse
from firstboot.alerts.gather import _first_boot_done, container_problem, disk_use
from firstboot.alerts.state import (
    AlertState,
    digest_event,
    load_state,
    save_state,
    state_path,
    transition,
)
from firstboot.core.config import DEFAULT_CONFIG_PATH, ConfigInvalid, load_config
from firstboot.core.context import FirstbootContext, Paths
from firstboot.steps import alerts as alerts_step

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
BROKEN = Raised("the backup failed", "run: arkbox-installer backup")


def test_an_alert_fires_once_and_resolves_once() -> None:
    state = AlertState()
    (event,) = transition(state, {"backup_failed": BROKEN}, NOW)
    assert (event.kind, event.alert, event.since) == ("firing", "backup_failed",
                                                      NOW.isoformat())
    for minutes in (5, 10, 15):  # still failing: nothing more to say
        assert transition(state, {"backup_failed": BROKEN}, NOW + timedelta(minutes=minutes)) \
            == []
    (resolved,) = transition(state, {"backup_failed": CLEAR}, NOW + timedelta(hours=1))
    assert resolved.kind == "resolved" and resolved.title == "the backup failed"
    assert resolved.since == NOW.isoformat() and state.firing == {}
    assert transition(state, {"backup_failed": CLEAR}, NOW + timedelta(hours=2)) == []


def test_a_firing_alert_keeps_its_start_but_takes_the_new_wording() -> None:
    state = AlertState()
    transition(state, {"disk:/:space": Raised("86 %", "du")}, NOW)
    transition(state, {"disk:/:space": Raised("91 %", "du")}, NOW + timedelta(hours=1))
    assert state.firing["disk:/:space"].title == "91 %"
    assert state.firing["disk:/:space"].since == NOW.isoformat()


def test_a_held_condition_fires_only_after_holding_that_long() -> None:
    sick = Raised("wiki unhealthy", "docker logs", hold=timedelta(minutes=5))
    state = AlertState()
    assert transition(state, {"service:wiki": sick}, NOW) == []
    assert transition(state, {"service:wiki": sick}, NOW + timedelta(minutes=4)) == []
    (event,) = transition(state, {"service:wiki": sick}, NOW + timedelta(minutes=5))
    assert event.kind == "firing" and event.since == NOW.isoformat()
    # A blip shorter than the hold never fires, and starts over afterwards.
    blip = AlertState()
    transition(blip, {"service:db": sick}, NOW)
    transition(blip, {"service:db": CLEAR}, NOW + timedelta(minutes=2))
    assert blip.pending == {}
    assert transition(blip, {"service:db": sick}, NOW + timedelta(minutes=6)) == []


def test_unknown_keeps_the_state_and_a_vanished_alert_resolves() -> None:
    state = AlertState()
    transition(state, {"certificate": BROKEN, "service:wiki": BROKEN}, NOW)
    assert transition(state, {"certificate": UNKNOWN, "service": UNKNOWN}, NOW) == []
    assert set(state.firing) == {"certificate", "service:wiki"}
    # The service left the config: its alert is resolved, not stuck.
    events = transition(state, {"certificate": UNKNOWN, "service:proxy": CLEAR}, NOW)
    assert [(e.kind, e.alert) for e in events] == [("resolved", "service:wiki")]


def test_the_daily_digest_lists_what_still_fires_once_a_day() -> None:
    state = AlertState()
    assert digest_event(state, NOW) is None  # nothing fires: no digest
    transition(state, {"backup_failed": BROKEN}, NOW)
    assert digest_event(state, NOW) is None  # just sent on its own
    first = digest_event(state, NOW + timedelta(hours=24))
    assert first is not None and "the backup failed" in first.fix
    assert digest_event(state, NOW + timedelta(hours=47)) is None
    assert digest_event(state, NOW + timedelta(hours=48)) is not None


def test_the_state_survives_a_save_and_a_broken_file_starts_afresh(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    state = AlertState()
    transition(state, {"backup_failed": BROKEN}, NOW)
    save_state(paths, state)
    assert state_path(paths).stat().st_mode & 0o777 == 0o644
    assert load_state(paths).firing["backup_failed"].since == NOW.isoformat()
    state_path(paths).write_text("{not json")
    assert load_state(paths).firing == {}


def test_disk_use_and_first_boot_are_read_from_the_box(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    (found,) = disk_use(Paths(tmp_path))  # / and /srv are one filesystem here: once
    assert isinstance(found, DiskUse) and found.mount == "/"
    assert 0 <= found.space_percent <= 100
    paths = Paths(tmp_path)
    assert _first_boot_done(paths) is None
    paths.done_marker.parent.mkdir(parents=True)
    paths.done_marker.write_text("2026-12-01T10:00:00+00:00\n")
    assert _first_boot_done(paths) == datetime(2026, 12, 1, 10, tzinfo=UTC)


def write_config(tmp_path: Path, alerts: str) -> Path:
    """The default config (mail on, no relay) with an alerts section."""
    (tmp_path / "secrets").symlink_to(DEFAULT_CONFIG_PATH.parent / "secrets")
    target = tmp_path / "appliance.yaml"
    target.write_text(DEFAULT_CONFIG_PATH.read_text() + "\n" + alerts)
    return target


def test_the_default_config_mails_the_contact_address_through_its_own_server() -> None:
    route = email_route(load_config(DEFAULT_CONFIG_PATH))
    assert route is not None
    assert route.local and route.recipients == ("admin@arkbox.test",)


def test_alerts_to_a_foreign_address_need_a_way_out(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid) as refused:
        load_config(write_config(tmp_path, "alerts:\n  email: {to: [me@elsewhere.org]}\n"))
    assert "cannot leave the box" in str(refused.value.problems)


def test_a_foreign_contact_address_turns_alert_email_off_but_a_relay_carries_it(
        tmp_path: Path) -> None:
    foreign = write_config(tmp_path, "").read_text().replace(
        "contact_email: admin@arkbox.test", "contact_email: ops@elsewhere.org")
    (tmp_path / "appliance.yaml").write_text(foreign)
    config = load_config(tmp_path / "appliance.yaml")  # valid: ACME needs no mailbox here
    assert email_route(config) is None
    reason = email_unavailable_reason(config)
    assert reason is not None and "relays for nobody" in reason
    relayed = foreign.replace("  dmarc_report_to:", "  relay: {host: smtp.relay.example, "
                              "username: u, password: {file: secrets/admin-mail-password}}\n"
                              "  dmarc_report_to:")
    (tmp_path / "appliance.yaml").write_text(relayed)
    route = email_route(load_config(tmp_path / "appliance.yaml"))
    assert route is not None and (route.host, route.security) == ("smtp.relay.example",
                                                                  "starttls")


def test_a_password_is_never_sent_in_plain_text(tmp_path: Path) -> None:
    alerts = ("alerts:\n  email:\n    smtp: {host: 10.0.0.5, port: 25, security: none, "
              "username: u, password: {file: secrets/admin-mail-password}}\n")
    with pytest.raises(ConfigInvalid) as refused:
        load_config(write_config(tmp_path, alerts))
    assert "never sent in plain text" in str(refused.value.problems)


def test_a_webhook_takes_url_or_url_secret_and_shows_neither_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid) as refused:
        load_config(write_config(tmp_path, "alerts:\n  webhooks: [{}]\n"))
    assert "exactly one of url or url_secret" in str(refused.value.problems)
    assert shown_url("https://hc-ping.com/7f0c-uuid/fail?x=1") == "https://hc-ping.com/…"
    assert [d.name for d in destinations(load_config(DEFAULT_CONFIG_PATH))] == ["email"]


def test_the_step_installs_the_alert_timer(tmp_path: Path) -> None:
    ctx = FirstbootContext(config=load_config(DEFAULT_CONFIG_PATH), paths=Paths(tmp_path))
    assert alerts_step.verify(ctx) == "arkbox-alerts.service is missing"
    outcome = alerts_step.run(ctx)
    assert outcome.changed and alerts_step.verify(ctx) is None
    units = tmp_path / "etc/systemd/system"
    assert "ExecStart=/usr/local/sbin/arkbox-installer alert check" in (
        units / timer.SERVICE).read_text()
    assert "OnUnitActiveSec=300s" in (units / timer.TIMER).read_text()
    assert not alerts_step.run(ctx).changed


class InspectOnly:
    """The one engine call container_problem makes (docker inspect), answering with
    recorded inspect data: the input here is the engine's JSON, not our code."""

    def __init__(self, states: dict[str, dict[str, object]]) -> None:
        self.api = self
        self.states = states

    def inspect_container(self, name: str) -> dict[str, object]:
        if name not in self.states:
            raise docker.errors.NotFound(f"no such container: {name}")
        return self.states[name]


def test_container_health_is_read_from_the_engine_without_running_a_check() -> None:
    client = InspectOnly({
        "ok": {"State": {"Status": "running", "Health": {"Status": "healthy"}}},
        "starting": {"State": {"Status": "running", "Health": {"Status": "starting"}}},
        "sick": {"State": {"Status": "running", "Health": {"Status": "unhealthy", "Log": [
            {"ExitCode": 1, "Output": "curl: (7) Failed to connect\n"}]}}},
        "stopped": {"State": {"Status": "exited", "ExitCode": 137}},
    })
    engine = cast(docker.DockerClient, client)
    assert container_problem(engine, "ok") is None
    assert container_problem(engine, "starting") is None
    assert container_problem(engine, "sick") == (
        "unhealthy (last check exit 1: curl: (7) Failed to connect)")
    assert container_problem(engine, "stopped") == "exited (exit 137)"
    assert container_problem(engine, "gone") == "no container (run: arkbox-installer apply)"


def test_an_overlay_root_is_the_container_hosts_disk_and_not_watched(tmp_path: Path) -> None:
    """In the container rig / is an overlay on the host's disk: no disk alert from it."""
    mounts = tmp_path / "mounts"
    mounts.write_text(f"overlay / overlay rw 0 0\ntmpfs /run tmpfs rw 0 0\n"
                      f"overlay {tmp_path} overlay rw 0 0\n")
    assert disk_use(Paths(tmp_path), mounts) == []
    mounts.write_text(f"/dev/vda1 / ext4 rw 0 0\n/dev/vdb {tmp_path} ext4 rw 0 0\n")
    (found,) = disk_use(Paths(tmp_path), mounts)
    assert found.mount == "/"
