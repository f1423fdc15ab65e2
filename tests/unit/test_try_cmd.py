"""`arkbox try`: whether out/ is stale (and why), and the screen it ends with."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from builder.rig.freshness import (
    STAMP_NAME,
    BuiltState,
    CurrentInputs,
    decide_freshness,
    read_built_state,
    source_digest,
    write_stamp,
)
from builder.rig.journal_follow import follow_first_boot
from builder.rig.screens import describe_removed, mail_login, next_steps
from builder.rig.try_rig import published_for, rig_subnets
from builder.rig.up import backup_server_host, plan_backup_server
from firstboot import __version__
from firstboot.core.config import load_config
from firstboot.core.config.loader import DEFAULT_CONFIG_PATH

NOW = CurrentInputs(config_file="config/default.yaml", config_sha256="a" * 64,
                    arkbox_version="1.0.0", source_sha256="s" * 64)
BUILT = BuiltState(name="arkbox-test", role="appliance", config_file="/x/config/default.yaml",
                   config_sha256="a" * 64, arkbox_version="1.0.0", rootfs_tar_present=True,
                   source_sha256="s" * 64)


def test_up_to_date_when_config_version_and_sources_match() -> None:
    decision = decide_freshness(BUILT, NOW, "out")
    assert not decision.stale
    assert "same config, arkbox version and sources" in decision.reason


@pytest.mark.parametrize(("built", "reason"), [
    (None, "no build in out/ (no build-manifest.json)"),
    (replace(BUILT, role="backup-server"), "the backup-server role, not appliance"),
    (replace(BUILT, rootfs_tar_present=False), "out/arkbox-test-rootfs.tar is missing"),
    (replace(BUILT, config_sha256="b" * 64), "the config changed since the build"),
    (replace(BUILT, arkbox_version="0.9.0"), "built by arkbox 0.9.0, this is 1.0.0"),
    (replace(BUILT, source_sha256="t" * 64), "the arkbox sources"),
])
def test_stale_says_why(built: BuiltState | None, reason: str) -> None:
    decision = decide_freshness(built, NOW, "out")
    assert decision.stale
    assert reason in decision.reason


def test_config_change_names_both_digests() -> None:
    reason = decide_freshness(replace(BUILT, config_sha256="b" * 64), NOW, "out").reason
    assert "bbbbbbbbbbbb… → config/default.yaml sha256 aaaaaaaaaaaa…" in reason


def test_same_content_from_another_path_is_not_stale() -> None:
    assert not decide_freshness(replace(BUILT, config_file="/elsewhere/a.yaml"), NOW, "o").stale


def test_sources_not_recorded_is_not_stale_but_says_so() -> None:
    decision = decide_freshness(replace(BUILT, source_sha256=None), NOW, "out")
    assert not decision.stale
    assert "--rebuild" in decision.reason


def _out_dir(tmp_path: Path, **fields: object) -> Path:
    manifest = {"name": "arkbox-test", "role": "appliance", "config_file": "c.yaml",
                "config_sha256": "a" * 64, "arkbox_version": __version__, **fields}
    (tmp_path / "build-manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "arkbox-test-rootfs.tar").write_bytes(b"")
    return tmp_path


def test_read_built_state_from_manifest(tmp_path: Path) -> None:
    state = read_built_state(_out_dir(tmp_path))
    assert state is not None
    assert state.rootfs_tar_present and state.source_sha256 is None
    assert read_built_state(tmp_path / "nothing-here") is None
    (tmp_path / "build-manifest.json").write_text("{not json")
    assert read_built_state(tmp_path) is None


def test_stamp_counts_only_for_the_manifest_it_was_written_with(tmp_path: Path) -> None:
    out = _out_dir(tmp_path)
    write_stamp(out, "s" * 64)
    state = read_built_state(out)
    assert state is not None and state.source_sha256 == "s" * 64
    # `arkbox build` wrote a new manifest since: the stamp no longer speaks for it.
    _out_dir(tmp_path, config_sha256="c" * 64)
    state = read_built_state(out)
    assert state is not None and state.source_sha256 is None
    assert (out / STAMP_NAME).exists()


def test_manifest_field_wins_over_the_stamp(tmp_path: Path) -> None:
    out = _out_dir(tmp_path, source_sha256="m" * 64)
    write_stamp(out, "s" * 64)
    state = read_built_state(out)
    assert state is not None and state.source_sha256 == "m" * 64


def test_source_digest_follows_the_sources(tmp_path: Path) -> None:
    for part in ("builder", "firstboot", "image"):
        (tmp_path / part).mkdir()
        (tmp_path / part / "x.py").write_text("1")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    before = source_digest(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text("not a build input")
    assert source_digest(tmp_path) == before
    (tmp_path / "image" / "x.py").write_text("2")
    assert source_digest(tmp_path) != before


def test_rig_subnets_differ_by_name_and_stay_private() -> None:
    try_v4, try_v6 = rig_subnets("arkbox-try")
    assert rig_subnets("arkbox-try") == (try_v4, try_v6)
    assert try_v4.startswith("172.31.") and try_v6.startswith("fd42:")
    assert rig_subnets("arkbox-try-test")[0] != try_v4 or rig_subnets("arkbox-try-test")[1] \
        != try_v6


def test_describe_removed() -> None:
    assert describe_removed({"containers": 0, "volumes": 0, "networks": 0}) == \
        "nothing to remove"
    assert describe_removed({"containers": 1, "volumes": 2, "networks": 1}) == \
        "removed 1 container, 2 volumes, 1 network"


def test_next_steps_map_every_route_to_the_published_port() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    cert = Path("out/arkbox-try/fallback-certificate.pem")
    lines = next_steps(config, {"80/tcp": 8080, "443/tcp": 8443, "22/tcp": 2222}, cert,
                       None, "arkbox-try")
    text = "\n".join(lines)
    for host in ("cal.arkbox.test", "wiki.arkbox.test", "webmail.arkbox.test"):
        assert f"https://{host}:8443/" in text
    curls = [shlex.split(line) for line in lines if line.strip().startswith("curl ")]
    assert len(curls) == 3
    assert all(c[1:5] == ["--resolve", c[2], "--cacert", str(cert)] for c in curls)
    assert curls[2][1:3] == ["--resolve", "wiki.arkbox.test:8443:127.0.0.1"]
    assert "arkbox try ssh" in text and "ssh -p 2222 ops@127.0.0.1" in text
    assert "arkbox try down " in text and "--rig" not in text and "DNS" not in text


def test_next_steps_name_a_non_default_rig_and_out_and_show_dns() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    lines = next_steps(config, {"443/tcp": 8443}, None, "arkbox.test. IN A 192.0.2.1",
                       "rig2", "/tmp/o")
    text = "\n".join(lines)
    assert "arkbox try ssh --rig rig2" in text
    assert "arkbox try down --rig rig2 --out /tmp/o" in text
    assert "arkbox.test. IN A 192.0.2.1" in text
    assert "curl " not in text  # no certificate copied: no example that would fail


def test_next_steps_say_which_certificate_is_served() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    root = Path("out/arkbox-try/test-ca-root.pem")
    text = "\n".join(next_steps(config, {"443/tcp": 8443}, root, None, "arkbox-try",
                                from_ca=True))
    assert f"test ACME CA (Pebble); its root, to trust: {root}" in text
    assert "fallback" not in text and f"--cacert {root}" in text
    fallback = "\n".join(next_steps(config, {"443/tcp": 8443}, root, None, "arkbox-try"))
    assert "self-signed fallback certificate" in fallback


MAIL_PORTS = {"443/tcp": 8443, "25/tcp": 2525, "465/tcp": 4465, "587/tcp": 5587,
              "993/tcp": 9993}


def test_mail_ports_are_published_only_when_mail_is_on() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    assert published_for(config) == ("80/tcp", "443/tcp", "22/tcp", "25/tcp", "465/tcp",
                                     "587/tcp", "993/tcp")
    off = config.model_copy(update={"mail": config.mail.model_copy(update={"enabled": False})})
    assert published_for(off) == ("80/tcp", "443/tcp", "22/tcp")
    assert mail_login(off, DEFAULT_CONFIG_PATH) is None


def test_next_steps_show_the_mail_ports_and_a_login_without_its_password() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    root = Path("out/arkbox-try/test-ca-root.pem")
    login = mail_login(config, Path("config/default.yaml"))
    assert login is not None
    assert login.address == "admin@arkbox.test"
    assert login.password == "config/secrets/admin-mail-password"
    lines = next_steps(config, MAIL_PORTS, root, None, "arkbox-try", from_ca=True, login=login)
    text = "\n".join(lines)
    for kind, port in (("SMTP", 2525), ("SMTPS", 4465), ("Submission", 5587), ("IMAPS", 9993)):
        assert any(line.split()[:2] == [kind, f"127.0.0.1:{port}"] for line in lines), text
    assert ("Test mailbox: user admin@arkbox.test, password in "
            "config/secrets/admin-mail-password") in text
    secret = (DEFAULT_CONFIG_PATH.parent / "secrets/admin-mail-password").read_text().strip()
    assert secret not in text
    (example,) = [line.strip() for line in lines if "openssl s_client" in line]
    feed, _, client = example.partition(" | ")
    assert '"$(cat config/secrets/admin-mail-password)"' in feed
    assert shlex.split(client) == [
        "openssl", "s_client", "-quiet", "-connect", "127.0.0.1:9993", "-servername",
        "mail.arkbox.test", "-verify_hostname", "mail.arkbox.test", "-verify_return_error",
        "-CAfile", str(root)]


def test_next_steps_print_the_doctor_command_after_the_records() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    doctor = "docker exec arkbox-try-appliance arkbox-installer check mail --resolver 10.0.0.9"
    lines = next_steps(config, {"443/tcp": 8443}, None, "arkbox.test. IN MX 10 mail",
                       "arkbox-try", doctor=doctor)
    assert lines.index(f"    {doctor}") > lines.index("    arkbox.test. IN MX 10 mail")
    assert "Mail (" not in "\n".join(lines)  # no mail port published: no mail lines


def test_disaster_serves_the_zones_of_the_restored_config_and_prints_the_doctor() -> None:
    from builder.rig.screens import after_disaster
    from builder.rig.try_rig import config_from_text, zone_domains

    config = config_from_text(DEFAULT_CONFIG_PATH.read_bytes())
    assert config is not None
    assert zone_domains(config) == ["arkbox.test", "arkbox.test"]
    assert config_from_text(b"appliance: [") is None
    no_mail = config.model_copy(update={
        "appliance": config.appliance.model_copy(update={"hostname": "box.example"}),
        "mail": config.mail.model_copy(update={"domains": []})})
    assert zone_domains(no_mail) == ["box.example"]
    doctor = "docker exec r-appliance arkbox-installer check mail --resolver 10.0.0.9"
    lines = after_disaster([], {}, True, None, "r", "out", doctor=doctor)
    assert lines.index(f"    {doctor}") < len(lines) - 1  # before Stop
    assert "Mail doctor" not in "\n".join(after_disaster([], {}, True, None, "r", "out"))


def test_the_try_config_points_acme_at_the_rig_ca_and_keeps_the_rest() -> None:
    from types import SimpleNamespace

    import yaml

    from builder.rig import ca as try_ca

    pebble = SimpleNamespace(directory="https://pebble:14000/dir")
    text = DEFAULT_CONFIG_PATH.read_text()
    changed = yaml.safe_load(try_ca.config_with_test_ca(text, pebble))  # type: ignore[arg-type]
    original = yaml.safe_load(text)
    assert changed["tls"]["acme_directory"] == "https://pebble:14000/dir"
    assert changed["tls"]["ca_bundle"] == try_ca.CA_BUNDLE_NAME
    assert {k: v for k, v in changed.items() if k != "tls"} == \
        {k: v for k, v in original.items() if k != "tls"}
    # `try disaster` reads it back from the appliance through the model.
    from builder.rig.try_rig import config_from_text

    held = config_from_text(try_ca.config_with_test_ca(text, pebble).encode())  # type: ignore[arg-type]
    assert held is not None and held.tls.acme_directory is not None
    assert str(held.tls.acme_directory) == "https://pebble:14000/dir"


class FakeAppliance:
    """Answers the follower's execs from a script of journal batches and boot states."""

    def __init__(self, batches: list[list[str]], states: list[str]) -> None:
        self.batches, self.states = batches, states
        self.container = self

    status = "running"

    def reload(self) -> None:
        pass

    def not_running(self) -> str | None:
        return None

    def exec(self, *argv: str) -> tuple[int, str]:
        if argv[0] == "journalctl":
            lines = self.batches.pop(0) if self.batches else []
            return 0, "".join(f"{line}\n" for line in lines) + "-- cursor: c1\n"
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if state == "done":
            return 0, "done\n"
        return 1, json.dumps({"result": state})


@pytest.fixture
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("builder.rig.journal_follow.JOURNAL_POLL_S", 0.0)


def test_follow_prints_lines_until_the_done_marker(no_wait: None) -> None:
    appliance = FakeAppliance([["arkbox first boot"], ["  [1/8] system  changed"],
                               ["ready · https://arkbox.test"]], ["running", "running", "done"])
    printed: list[str] = []
    outcome = follow_first_boot(appliance, 60, printed.append)  # type: ignore[arg-type]
    assert outcome.ok
    assert printed == ["  │ arkbox first boot", "  │   [1/8] system  changed",
                       "  │ ready · https://arkbox.test"]


def test_follow_stops_at_a_failed_run(no_wait: None) -> None:
    appliance = FakeAppliance([["✗ firstboot failed after 3 s", "  tls: no key"]],
                              ["failed"])
    outcome = follow_first_boot(appliance, 60, lambda line: None)  # type: ignore[arg-type]
    assert not outcome.ok and "failed" in outcome.summary
    assert outcome.lines == ["✗ firstboot failed after 3 s", "  tls: no key"]


def test_follow_sees_a_bad_config_from_status_alone(no_wait: None) -> None:
    appliance = FakeAppliance([["appliance.yaml: 1 problem"]], ["failed"])
    outcome = follow_first_boot(appliance, 60, lambda line: None)  # type: ignore[arg-type]
    assert not outcome.ok


def test_follow_gives_up_at_the_timeout(no_wait: None) -> None:
    outcome = follow_first_boot(FakeAppliance([], ["running"]), 0.05,  # type: ignore[arg-type]
                                lambda line: None)
    assert not outcome.ok and "not done after" in outcome.summary


def test_freshness_checks_the_role_it_needs() -> None:
    server = replace(BUILT, role="backup-server")
    assert not decide_freshness(server, NOW, "o", role="backup-server").stale
    assert "holds a build of the appliance role, not backup-server" in \
        decide_freshness(BUILT, NOW, "o", role="backup-server").reason


def test_backup_server_planned_for_an_ssh_repository(tmp_path: Path) -> None:
    import argparse

    config = load_config(DEFAULT_CONFIG_PATH)
    assert backup_server_host(config) == "backup.arkbox.test"
    args = argparse.Namespace(backup_server_config="c.yaml", backup_server_out=None)
    plan = plan_backup_server(config, args, tmp_path)
    assert plan is not None
    assert plan.host == "backup.arkbox.test" and plan.out == tmp_path / "backup-server"
    args.backup_server_out = "/elsewhere"
    plan = plan_backup_server(config, args, tmp_path)
    assert plan is not None and plan.out == Path("/elsewhere")
    no_backup = config.model_copy(update={"backup": config.backup.model_copy(
        update={"repository": None})})
    assert plan_backup_server(no_backup, args, tmp_path) is None


# ---------------------------------------------------------------- try disaster


def test_disaster_refuses_without_a_finished_rig_and_says_what_to_do() -> None:
    from builder.rig.disaster import RigFound, disaster_refusal

    ready = RigFound("running", "running", "done")
    assert disaster_refusal("arkbox-try", ready) is None
    cases = [
        (RigFound(None, None, None), "no `arkbox try` appliance in the rig arkbox-try",
         "start one: arkbox try, then: arkbox try disaster"),
        (RigFound("exited", "running", None), "arkbox-try-appliance is exited", "arkbox try"),
        (RigFound("running", None, "done"), "the backup server is not in the rig", "ssh://"),
        (RigFound("running", "exited", "done"), "the backup server is exited", "ssh://"),
        (RigFound("running", "running", "failed"), "first boot has not finished (failed)",
         "arkbox try status"),
    ]
    for found, message, hint in cases:
        error = disaster_refusal("arkbox-try", found)
        assert error is not None and error.exit_code == 2
        assert message in error.message and hint in (error.hint or "")
    error = disaster_refusal("rig2", RigFound(None, None, None))
    assert error is not None and "arkbox try disaster --rig rig2" in (error.hint or "")


def test_backup_progress_shows_commands_short_and_hides_the_rest() -> None:
    from builder.rig.disaster import archive_of_backup, backup_progress

    lines = [
        "DEBUG arkbox.exec: run: docker pause arkbox-calendar",
        "DEBUG arkbox.exec:   exit 0",
        "DEBUG arkbox.exec: run: borg create --json --compression lz4 --comment {x} "
        "::arkbox-test-2026-11-26T150414Z.svc-calendar volumes/calendar/collections",
        "DEBUG arkbox.exec:   env: BORG_REPO=ssh://b BORG_PASSPHRASE=*****",
        "DEBUG arkbox.exec:   exit 2",
        "WARNING arkbox.backup: wiki was left paused",
        "arkbox-test-2026-11-26T150414Z: 40 files, 0 MiB, 10 KiB new (dedup 14.0x), 14.2 s; "
        "no pause",
    ]
    shown = [backup_progress(line) for line in lines]
    assert shown == ["docker pause arkbox-calendar", None,
                     "borg create arkbox-test-2026-11-26T150414Z.svc-calendar", None, "exit 2",
                     "WARNING arkbox.backup: wiki was left paused", lines[-1]]
    assert backup_progress("DEBUG x: run: " + "y " * 60).endswith("…")  # type: ignore[union-attr]
    assert backup_progress("DEBUG arkbox.exec: run: borg prune --glob-archives arkbox-test-*Z "
                           "--keep-daily 7") == "borg prune arkbox-test-*Z"
    assert archive_of_backup(lines) == "arkbox-test-2026-11-26T150414Z"
    assert archive_of_backup(lines[:-1]) is None


def test_restore_result_and_the_report() -> None:
    from builder.rig.disaster import disaster_report, restore_result

    restore = json.dumps({"mode": "RESTORE", "reason": "restored A (3 archive(s))",
                          "archive": "A"})
    status = json.dumps({"steps": [{"name": "health", "summary": "5/5 services healthy"}]})
    result = restore_result(restore, status)
    assert (result.mode, result.archive, result.health) == ("RESTORE", "A", "5/5 services healthy")
    lines = disaster_report(result, "A", 93.4, 88.0, 121.0)
    assert lines[0] == "✓ restored A — the backup made above"
    assert "blank boot to all healthy: 93 s (first boot 88 s) · whole run 121 s" in lines
    assert "NOT the backup made above (B)" in disaster_report(result, "B", 1, 1, 1)[0]
    unknown = restore_result("cat: /var/lib/arkbox/restore.json: No such file", "")
    assert unknown.mode == "unknown" and unknown.archive is None and unknown.health is None


def test_after_disaster_lists_the_routes_on_the_published_port() -> None:
    from builder.rig.screens import after_disaster, routes_of
    from builder.rig.try_rig import config_from_text

    config = config_from_text(DEFAULT_CONFIG_PATH.read_bytes())
    assert config is not None
    routes = routes_of(config)
    assert [r.hostname for r in routes] == ["cal.arkbox.test", "webmail.arkbox.test",
                                            "wiki.arkbox.test"]
    assert config_from_text(b"not: [valid") is None and config_from_text(b"") is None
    cert = Path("out/arkbox-try/fallback-certificate.pem")
    text = "\n".join(after_disaster(routes, {"443/tcp": 8443}, True, cert, "arkbox-try", "out"))
    assert "https://wiki.arkbox.test:8443/" in text and "the same as before" in text
    assert str(cert) in text and "arkbox try down" in text and "--rig" not in text
    moved = "\n".join(after_disaster(routes, {"443/tcp": 9443}, False, None, "r", "o"))
    assert "NEW port" in moved and "arkbox try down --rig r --out o" in moved


def test_exec_streaming_hands_over_whole_lines_as_they_come() -> None:
    from types import SimpleNamespace

    from builder.rig.parts import RigContainer

    class Api:
        def exec_create(self, container: str, argv: list[str], **kw: object) -> dict[str, str]:
            assert argv == ["arkbox-installer", "backup"]
            return {"Id": "e1"}

        def exec_start(self, exec_id: str, stream: bool) -> list[bytes]:
            return [b"first li", b"ne\nsecond\nthi", b"rd"]

        def exec_inspect(self, exec_id: str) -> dict[str, int]:
            return {"ExitCode": 3}

    part = SimpleNamespace(_container=SimpleNamespace(id="c1"), role="appliance",
                           rig=SimpleNamespace(client=SimpleNamespace(api=Api())))
    lines: list[str] = []
    code = RigContainer.exec_streaming(part, ["arkbox-installer", "backup"], lines.append)  # type: ignore[arg-type]
    assert (code, lines) == (3, ["first line", "second", "third"])


def test_blank_appliance_falls_back_to_new_ports_only_when_the_old_are_taken(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from docker.errors import APIError

    from builder.rig import disaster
    from firstboot.core.errors import ArkboxError

    removed: list[str] = []
    container = SimpleNamespace(remove=lambda force: removed.append("appliance"))
    rig = SimpleNamespace(name="r", client=SimpleNamespace(
        containers=SimpleNamespace(get=lambda name: container)))
    asked: list[dict[str, int]] = []

    def add(rig: object, image: str, hostname: str, ports: dict[str, int],
            files: dict[str, tuple[bytes, int]], published: tuple[str, ...]) -> str:
        asked.append(ports)
        assert published == ("443/tcp", "993/tcp")  # the old box's, also on new ports
        assert files == kept
        if ports:
            raise APIError("Bind for 127.0.0.1:32768 failed: port is already allocated")
        return "started"

    monkeypatch.setattr(disaster, "_add_appliance", add)
    monkeypatch.setattr(disaster, "say", lambda line="": None)
    kept = {"/etc/arkbox/appliance.yaml": (b"appliance: {}\n", 0o600)}
    assert disaster.start_blank_appliance(rig, "img", "h", {"443/tcp": 32768},  # type: ignore[arg-type]
                                         kept, ("443/tcp", "993/tcp")) == "started"
    assert asked == [{"443/tcp": 32768}, {}] and removed == ["appliance"]

    def broken(rig: object, image: str, hostname: str, ports: dict[str, int],
               files: dict[str, tuple[bytes, int]], published: tuple[str, ...]) -> str:
        raise APIError("No such image: img")

    monkeypatch.setattr(disaster, "_add_appliance", broken)
    with pytest.raises(ArkboxError, match="the blank appliance did not start"):
        disaster.start_blank_appliance(rig, "img", "h", {"443/tcp": 32768}, kept)  # type: ignore[arg-type]


# ---------------------------------------------------------------- waits and signals


def test_rig_waits_say_what_they_waited_for_and_why_they_gave_up() -> None:
    from builder.rig.parts import RigError, wait_until

    answers = iter([None])
    wait_until("nsd", lambda: next(answers), 1, interval=0.001)  # ready at once
    with pytest.raises(RigError, match=r"gave up waiting for nsd after 0.02 s: not answering"):
        wait_until("nsd", lambda: "not answering", 0.02, interval=0.001)


def test_certificate_wait_says_why_the_fallback_is_still_served() -> None:
    from types import SimpleNamespace

    from builder.rig import ca as try_ca

    infos = [None, {"source": "acme", "names": ["a.test", "b.test"]}]
    issued = try_ca.wait_for_certificate(SimpleNamespace(  # type: ignore[arg-type]
        read_json=lambda path: infos.pop(0)), timeout=5, interval=0.001)
    assert issued == try_ca.Issued(True, "a.test, b.test")
    fallback = {"source": "fallback", "reason": "no certificate from an ACME CA yet"}
    issued = try_ca.wait_for_certificate(SimpleNamespace(  # type: ignore[arg-type]
        read_json=lambda path: fallback), timeout=0.02, interval=0.001)
    assert not issued.ok
    assert "after 0.02 s: no certificate from an ACME CA yet" in issued.detail


def test_a_signal_in_try_runs_the_cleanup_once_and_ends_as_interrupted() -> None:
    import os
    import signal

    from builder.rig.try_rig import on_interrupt

    before = signal.getsignal(signal.SIGTERM)
    ran: list[str] = []

    def cleanup() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal cannot cut the cleanup short
        ran.append("cleanup")

    with pytest.raises(KeyboardInterrupt), on_interrupt(cleanup):
        os.kill(os.getpid(), signal.SIGTERM)
    assert ran == ["cleanup"]
    assert signal.getsignal(signal.SIGTERM) == before
