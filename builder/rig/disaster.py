"""`arkbox try disaster`: back up the running appliance now, destroy it (container and
volumes; the backup server stays), boot a blank one from the same image and follow it
restoring itself (docs/try.md).

Ctrl-C here does not take the rig down: it says which phase it stopped in, and
`arkbox try down` removes all of it (everything in the rig is labelled).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException, NotFound
from docker.models.containers import Container

from builder.rig import ca as try_ca
from builder.rig import dns as try_dns
from builder.rig import seeding
from builder.rig.journal_follow import BootOutcome, first_boot_state, follow_first_boot
from builder.rig.parts import (
    APPLIANCE_CONFIG,
    BOX,
    FIRSTBOOT_UNIT,
    ApplianceContainer,
    Rig,
    RigError,
)
from builder.rig.pebble import TestCAContainer
from builder.rig.removal import remove_container
from builder.rig.screens import (
    after_disaster,
    describe_removed,
    look_command,
    published_line,
    rig_option,
    routes_of,
    say,
)
from builder.rig.try_rig import (
    CERTIFICATE_FILE,
    PUBLISHED_PORTS,
    TryAppliance,
    config_from_text,
    copy_certificate,
    docker_client,
    make_rig,
    on_interrupt,
    published_ports,
    rig_containers,
    start_zone,
    state_dir_for,
    zone_domains,
)
from firstboot.core.config import Appliance
from firstboot.core.errors import EXIT_FAILURE, EXIT_OK, ArkboxError, BadInputError

RESTORE_FILE = str(BOX.state / "restore.json")  # the restore step's decision
# The line `arkbox-installer backup` ends with: "NAME-STAMP: 1234 files, ...".
BACKUP_SUMMARY = re.compile(r"^(?P<archive>\S+): \d+ files, ")


@dataclass(frozen=True)
class RigFound:
    """The containers of a `try` rig, by role, as `disaster` finds them."""

    appliance_status: str | None  # the container's status; None: no appliance container
    backup_status: str | None
    first_boot: str | None  # done | failed | running (None: not asked)


def disaster_refusal(rig_name: str, found: RigFound) -> BadInputError | None:
    """Why `try disaster` cannot start on this rig (nothing was changed), or None (pure)."""
    rig = rig_option(rig_name)
    if found.appliance_status is None:
        return BadInputError(f"no `arkbox try` appliance in the rig {rig_name}: nothing to "
                             "destroy", hint=f"start one: arkbox try{rig}, then: "
                                             f"arkbox try disaster{rig}")
    if found.appliance_status != "running":
        return BadInputError(f"the appliance {rig_name}-appliance is {found.appliance_status}",
                             hint=f"start it again: arkbox try{rig}")
    if found.backup_status != "running":
        state = "is " + found.backup_status if found.backup_status else "is not in the rig"
        return BadInputError(
            f"the backup server {state}: a destroyed appliance would have nothing to "
            "restore from", hint="disaster needs a config that backs up over ssh:// (the "
            "rig then runs the backup server): see docs/try.md")
    if found.first_boot != "done":
        return BadInputError(f"the appliance's first boot has not finished ({found.first_boot})"
                             ": a backup now would not hold a working box",
                             hint=f"wait for it (arkbox try status{rig}), or look: "
                                  f"arkbox try ssh{rig}, then journalctl -u {FIRSTBOOT_UNIT}")
    return None


def backup_progress(line: str) -> str | None:
    """A line of `arkbox-installer backup -v` as the operator follows it live (pure): the
    commands it runs, shortened (`borg create ARCHIVE`, `docker pause SERVICE`), failures,
    and everything it says above debug level; None for the rest (env, `exit 0`)."""
    if not line.startswith("DEBUG "):
        return line
    message = line.partition(": ")[2].strip()
    if message.startswith("run: "):
        words = message.removeprefix("run: ").split()
        archive = next((w.removeprefix("::") for w in words if w.startswith("::")), None)
        if archive is None and "--glob-archives" in words[:-1]:
            archive = words[words.index("--glob-archives") + 1]
        if archive is not None:
            return f"{' '.join(words[:2])} {archive}"
        command = " ".join(words)
        return command if len(command) <= 90 else command[:89] + "…"
    if message.startswith("exit ") and message != "exit 0":
        return message
    return None


def archive_of_backup(lines: list[str]) -> str | None:
    """The archive `arkbox-installer backup` reported making (its summary line)."""
    for line in reversed(lines):
        if match := BACKUP_SUMMARY.match(line.strip()):
            return match["archive"]
    return None


@dataclass(frozen=True)
class RestoreResult:
    mode: str
    archive: str | None
    reason: str
    health: str | None


def restore_result(restore_json: str, status_json: str) -> RestoreResult:
    """What first boot decided and restored (restore.json), and the health step's summary."""
    try:
        decision = json.loads(restore_json)
    except ValueError:
        decision = {}
    try:
        status = json.loads(status_json)
    except ValueError:
        status = {}
    steps = status.get("steps", []) if isinstance(status, dict) else []
    health = next((str(s.get("summary")) for s in steps if s.get("name") == "health"), None)
    decision = decision if isinstance(decision, dict) else {}
    return RestoreResult(str(decision.get("mode", "unknown")), decision.get("archive"),
                         str(decision.get("reason", "no restore decision recorded")), health)


def disaster_report(result: RestoreResult, made: str | None, healthy_s: float,
                    first_boot_s: float, total_s: float) -> list[str]:
    """The screen after a successful disaster run (pure: the tests read it)."""
    if made is None:
        which = " (the backup made above did not name its archive)"
    elif result.archive == made:
        which = " — the backup made above"
    else:
        which = f" — NOT the backup made above ({made})"
    lines = [f"✓ restored {result.archive}{which}"]
    if result.health:
        lines.append(f"  health: {result.health}")
    lines.append(f"blank boot to all healthy: {healthy_s:.0f} s (first boot {first_boot_s:.0f}"
                 f" s) · whole run {total_s:.0f} s")
    return lines


_PHASE_STATE = {
    "backing up": "nothing was destroyed; the backup goes on inside the appliance",
    "destroying the appliance": "the appliance may be half removed",
    "booting the blank appliance": "the blank appliance goes on with its first boot by itself",
    "following the restore": "the blank appliance goes on restoring by itself",
}


def say_left_as_is(rig_name: str, out_dir: Path, phase: str) -> None:
    """After Ctrl-C (or SIGTERM): what state the rig is in, and how to remove it."""
    say(f"interrupted while {phase}: the rig is left as it is "
        f"({_PHASE_STATE.get(phase, 'see arkbox try status')}).")
    say(f"  arkbox try status{rig_option(rig_name)}   shows it · "
        f"arkbox try down{rig_option(rig_name, str(out_dir))}   removes all of it")


@dataclass(frozen=True)
class OldBox:
    """What the blank appliance takes from the one destroyed, read before it goes."""

    image: str
    hostname: str
    ports: dict[str, int]  # host ports, asked for again
    kept: dict[str, tuple[bytes, int]]  # its config (pointed at the test CA), the CA bundle
    names: list[str]  # its certificate's names, which the test CA then points at the blank
    config: Appliance | None  # the kept config through the model; None: it did not load


def kept_files(appliance: ApplianceContainer) -> dict[str, tuple[bytes, int]]:
    """What `try` laid into the appliance beside the image: its config, its seed (the blank
    box gets the same, as a replacement VPS would) and the CA bundle."""
    files: dict[str, tuple[bytes, int]] = {}
    for path in (APPLIANCE_CONFIG, seeding.SEED_FILE, try_ca.CA_BUNDLE_PATH):
        code, text = appliance.exec("cat", path)
        if code == 0:
            files[path] = (text.encode(), 0o600)
    return files


def read_old_box(part: ApplianceContainer, container: Container) -> OldBox:
    kept = kept_files(part)
    info = part.read_json(try_ca.CERTIFICATE_INFO)
    names = [str(n) for n in info.get("names", [])] if isinstance(info, dict) else []
    config = config_from_text(kept[APPLIANCE_CONFIG][0]) if APPLIANCE_CONFIG in kept else None
    return OldBox(str(container.attrs["Config"]["Image"]),
                  str(container.attrs["Config"]["Hostname"]), published_ports(container),
                  kept, names, config)


def find_rig(client: docker.DockerClient, rig_name: str,
             found: dict[str, Container]) -> tuple[Container, Container]:
    """The rig's appliance and backup server; BadInputError when disaster cannot start."""
    old, server = found.get("appliance"), found.get("backup")
    state = RigFound(old.status if old else None, server.status if server else None, None)
    if old is not None and state.appliance_status == "running":
        part = ApplianceContainer(make_rig(rig_name, client), "appliance",
                                  str(old.attrs["Config"]["Image"]), container=old)
        state = RigFound(state.appliance_status, state.backup_status, first_boot_state(part))
    if (refusal := disaster_refusal(rig_name, state)) is not None:
        raise refusal
    assert old is not None and server is not None
    return old, server


def back_up(part: ApplianceContainer, rig_name: str) -> str | None:
    """`arkbox-installer backup` in the appliance, shown live; the archive it made."""
    say("1/3 backing up now (arkbox-installer backup, in the appliance) …")

    def show(line: str) -> None:
        if (shown := backup_progress(line)) is not None:
            say(f"  │ {shown}")

    try:
        output = part.backup_now(on_line=show)
    except RigError as e:
        raise ArkboxError(f"the backup failed ({e.message}); nothing was destroyed",
                          hint=f"look: arkbox try ssh{rig_option(rig_name)}, then "
                               "arkbox-installer backup --debug; arkbox-installer status"
                          ) from e
    made = archive_of_backup(output.splitlines())
    say(f"  ✓ backed up{f': {made}' if made else ''}")
    return made


def start_blank_appliance(rig: Rig, image: str, hostname: str, ports: dict[str, int],
                          files: dict[str, tuple[bytes, int]],
                          published: tuple[str, ...] = PUBLISHED_PORTS) -> TryAppliance:
    """A blank appliance from `image`, on the old host ports when they are still free."""
    try:
        return _add_appliance(rig, image, hostname, ports, files, published)
    except DockerException as e:
        if not ports or not any(t in str(e) for t in ("already allocated", "already in use")):
            raise ArkboxError(f"the blank appliance did not start: {e}",
                              hint="run again with --debug; `docker info` must answer; "
                                   "arkbox try down removes what is left") from e
        say(f"  the old host ports are taken now ({e}); the engine picks new ones")
        with suppress(NotFound):  # created, not started: made again below
            rig.client.containers.get(f"{rig.name}-appliance").remove(force=True)
        return start_blank_appliance(rig, image, hostname, {}, files, published)


def _add_appliance(rig: Rig, image: str, hostname: str, ports: dict[str, int],
                   files: dict[str, tuple[bytes, int]],
                   published: tuple[str, ...]) -> TryAppliance:
    appliance = TryAppliance(rig=rig, role="appliance", image=image, aliases=[hostname],
                             host_ports=ports, files=dict(files), published=published)
    rig.add(appliance)
    return appliance


def boot_blank(rig: Rig, box: OldBox,
               pebble_container: Container | None) -> tuple[TryAppliance, TestCAContainer | None]:
    """Step 3: the blank appliance, and the rig's test CA pointing its names at it."""
    say(f"3/3 booting a blank appliance from the same image ({box.image}: the same config "
        "and passphrase) …")
    appliance = start_blank_appliance(rig, box.image, box.hostname, box.ports, box.kept,
                                      tuple(box.ports) or PUBLISHED_PORTS)
    pebble = None
    if pebble_container is not None and try_ca.CA_BUNDLE_PATH in box.kept:
        pebble = try_ca.existing_test_ca(rig, pebble_container,
                                         box.kept[try_ca.CA_BUNDLE_PATH][0])
    if pebble is not None:
        try_ca.point_names(pebble, box.names, appliance)
    return appliance, pebble


@dataclass(frozen=True)
class Restored:
    outcome: BootOutcome
    result: RestoreResult
    healthy_s: float  # from the blank boot to first boot's done marker
    ports: dict[str, int]
    certificate: Path | None = None
    doctor: str | None = None


def restored_certificate(appliance: TryAppliance, pebble: TestCAContainer | None,
                         state_dir: Path) -> tuple[Path | None, bool]:
    """The certificate to trust for the restored box (the test CA's root when it serves
    one from the CA, else its fallback's copy), and whether it is the CA's."""
    if pebble is not None and try_ca.wait_for_certificate(appliance).ok:
        return try_ca.save_root(pebble, state_dir), True
    return copy_certificate(appliance, state_dir), False


def serve_zone_again(rig: Rig, dns_container: Container, appliance: TryAppliance,
                     config: Appliance, pebble: TestCAContainer | None) -> str | None:
    """The rig's DNS serving the restored box's zone: the old one named the destroyed box's
    address and DKIM key. The doctor command, as start_zone gives it."""
    dns_image = str(dns_container.attrs["Config"]["Image"])
    remove_container(rig.client, dns_container)
    return start_zone(rig, dns_image, appliance, zone_domains(config), pebble)


def cmd_disaster(args: argparse.Namespace) -> int:
    """Back up now, destroy the appliance (not the backup server), boot a blank one from the
    same image and follow it restoring itself."""
    started = time.monotonic()
    rig_name, out_dir = str(args.rig), Path(args.out)
    state_dir = state_dir_for(out_dir, rig_name)
    client = docker_client()
    found = rig_containers(client, rig_name)
    old, server = find_rig(client, rig_name, found)
    rig = make_rig(rig_name, client)
    phase = ["backing up"]
    say(f"arkbox try disaster · rig {rig_name} · appliance {old.attrs['Config']['Image']} · "
        f"backups to {server.attrs['Config']['Hostname']} ({server.name}, it stays)")
    with on_interrupt(lambda: say_left_as_is(rig_name, out_dir, phase[-1])):
        old_part = ApplianceContainer(rig, "appliance", str(old.attrs["Config"]["Image"]),
                                      container=old)
        made = back_up(old_part, rig_name)
        box = read_old_box(old_part, old)
        phase.append("destroying the appliance")
        say(f"2/3 destroying the appliance: container {old.name} and its volumes "
            "(the backup server stays) …")
        say(f"  ✓ {describe_removed(old_part.destroy_keep_backups())}")
        # The copy belonged to the destroyed box; the restored one's replaces it.
        (state_dir / CERTIFICATE_FILE).unlink(missing_ok=True)
        phase.append("booting the blank appliance")
        restored = restore(rig, box, found, state_dir, float(args.timeout), phase)
    return report_disaster(restored, box, made, rig_name, out_dir, time.monotonic() - started)


def restore(rig: Rig, box: OldBox, found: dict[str, Container], state_dir: Path,
            timeout: float, phase: list[str]) -> Restored:
    """Boot the blank appliance, follow its restore, hand out what it serves."""
    blank_started = time.monotonic()
    appliance, pebble = boot_blank(rig, box, found.get(try_ca.ROLE))
    ports = {port: appliance.host_port(port) for port in appliance.published}
    say("  " + published_line(ports, " (the same as before)" if ports == box.ports else ""))
    phase.append("following the restore")
    say(f"  following first boot (journalctl -u {FIRSTBOOT_UNIT}) …")
    outcome = follow_first_boot(appliance, timeout)
    healthy_s = time.monotonic() - blank_started
    result = restore_result(appliance.exec("cat", RESTORE_FILE)[1],
                            appliance.exec("cat", str(BOX.status))[1])
    if not outcome.ok:
        return Restored(outcome, result, healthy_s, ports)
    certificate, from_ca = restored_certificate(appliance, pebble, state_dir)
    doctor = None
    if (dns_container := found.get(try_dns.ROLE)) is not None and box.config is not None:
        phase.append("serving the restored box's zone")
        doctor = serve_zone_again(rig, dns_container, appliance, box.config,
                                  pebble if from_ca else None)
    return Restored(outcome, result, healthy_s, ports, certificate, doctor)


def report_disaster(restored: Restored, box: OldBox, made: str | None, rig_name: str,
                    out_dir: Path, total_s: float) -> int:
    result = restored.result
    if not restored.outcome.ok:
        say(f"✗ the restore did not finish: {restored.outcome.summary} "
            f"({restored.healthy_s:.0f} s after the blank boot); restore decision: "
            f"{result.mode} {result.reason}")
    elif result.mode != "RESTORE":
        say(f"✗ the blank appliance started {result.mode}, it restored nothing: {result.reason}")
    if not restored.outcome.ok or result.mode != "RESTORE":
        say(f"  the blank appliance is still up to look at: {look_command(rig_name)}")
        return EXIT_FAILURE
    for line in disaster_report(result, made, restored.healthy_s, restored.outcome.seconds,
                                total_s):
        say(line)
    routes = routes_of(box.config) if box.config is not None else []
    for line in after_disaster(routes, restored.ports, restored.ports == box.ports,
                               restored.certificate, rig_name, str(out_dir),
                               doctor=restored.doctor):
        say(line)
    return EXIT_OK
