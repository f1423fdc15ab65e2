"""Where a box finds its seed at first boot, in this order (the first one present wins):

1. the systemd credential `arkbox-seed` ($CREDENTIALS_DIRECTORY/arkbox-seed; the unit
   imports it with ImportCredential=, qemu hands it over by fw_cfg or SMBIOS);
2. a partition whose GPT name is `arkbox-seed` (`arkbox seed --into DISK.raw`);
3. the provider's metadata user-data, only when the config's `seed.metadata` is on.

A source either finds a seed (`Found`) or says why it holds none, for the "no seed"
message. A source that holds something unreadable is an error naming it: the next source
is not tried, so a damaged seed is never silently replaced by another. After the secrets
are installed, `wipe` removes what the box can remove. No seed byte is ever logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from firstboot.core import execute
from firstboot.core.config import Appliance
from firstboot.core.errors import EXIT_BAD_INPUT
from firstboot.core.seed import CREDENTIAL, MAX_BYTES, PARTITION_LABEL, SeedInvalid
from firstboot.core.step import StepFailed

log = logging.getLogger("arkbox.seed")

Runner = Callable[..., execute.Completed]

METADATA_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 60.0
GROW_TIMEOUT_S = 300.0
ZERO_CHUNK = 1 << 20
GROWFS = "/usr/lib/systemd/systemd-growfs"
SEED_HINT = ("make one: arkbox seed CONFIG --out FILE (then pass FILE as the systemd "
             "credential arkbox-seed, e.g. qemu -fw_cfg name=opt/io.systemd.credentials/"
             "arkbox-seed,file=FILE), or arkbox seed CONFIG --into DISK.raw; see docs/seed.md")


class NoSeed(StepFailed):
    """Secrets are needed and no source holds a seed. Bad input (exit 2), like a missing
    secret file was before seeds; the unit retries it all the same."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class SeedDevice:
    """A partition named arkbox-seed (a regular file stands in for it in tests)."""

    path: Path  # /dev/vda4
    disk: Path | None = None  # /dev/vda: whose table loses the partition after the wipe
    number: int | None = None  # 4


@dataclass(frozen=True)
class Found:
    source: Source
    where: str  # named in every message about this seed
    data: bytes = field(repr=False)
    device: SeedDevice | None = None


class Source(Protocol):
    @property
    def kind(self) -> str: ...  # credential | partition | metadata (in status)

    def describe(self) -> str: ...

    def read(self) -> Found | str:
        """The seed, or why this source holds none; SeedInvalid when it holds a bad one."""
        ...

    def wipe(self, found: Found) -> tuple[str, list[str]]:
        """Remove the seed where the box can: what was done, and warnings."""
        ...


def _read_limited(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(MAX_BYTES + 1)


def _too_large(data: bytes, where: str) -> None:
    if len(data.rstrip(b"\0")) > MAX_BYTES:
        raise SeedInvalid(f"{where}: holds more than {MAX_BYTES} bytes, which is no seed",
                          hint=SEED_HINT)


# ----------------------------------------------------------------- the credential


@dataclass(frozen=True)
class CredentialSource:
    directory: Path | None  # $CREDENTIALS_DIRECTORY of the unit, None when it has none
    kind: str = "credential"

    def describe(self) -> str:
        return f"the systemd credential {CREDENTIAL}"

    def read(self) -> Found | str:
        if self.directory is None:
            return "the unit has no credentials"
        path = self.directory / CREDENTIAL
        where = f"{self.describe()} ({path})"
        try:
            data = _read_limited(path)
        except FileNotFoundError:
            return "not passed"
        except OSError as err:
            raise SeedInvalid(f"{where}: cannot be read: {err.strerror}",
                              hint="pass it again; see docs/seed.md") from err
        _too_large(data, where)
        return Found(self, where, data)

    def wipe(self, found: Found) -> tuple[str, list[str]]:
        # Read only: systemd keeps it in RAM, root-only, until shutdown.
        return ("nothing to wipe: a credential lives in RAM until shutdown; stop passing it "
                "to the machine (fw_cfg/SMBIOS) now that the box has its secrets"), []


# ----------------------------------------------------------------- the partition


def lsblk_argv() -> tuple[str, ...]:
    return ("lsblk", "--json", "--list", "--paths", "--output", "NAME,PARTLABEL,PKNAME,TYPE")


def parse_lsblk(text: str) -> list[SeedDevice]:
    """The partitions named arkbox-seed in `lsblk --json --list --paths` output."""
    devices = json.loads(text).get("blockdevices") or []
    found = []
    for entry in devices:
        if entry.get("type") == "part" and entry.get("partlabel") == PARTITION_LABEL:
            path = Path(entry["name"])
            disk = Path(entry["pkname"]) if entry.get("pkname") else None
            found.append(SeedDevice(path, disk, partition_number(path)))
    return found


def partition_number(device: Path, sys_block: Path = Path("/sys/class/block")) -> int | None:
    """The partition's number in its disk's table (the kernel says; else the name's digits)."""
    try:
        return int((sys_block / device.name / "partition").read_text().strip())
    except (OSError, ValueError):
        digits = re.search(r"(\d+)$", device.name)
        return int(digits.group(1)) if digits else None


def locate_partitions(run: Runner) -> list[SeedDevice]:
    """Every partition named arkbox-seed on this machine's disks (CommandError, ValueError
    when the disks cannot be listed)."""
    return parse_lsblk(run(lsblk_argv(), timeout=COMMAND_TIMEOUT_S).stdout)


def delete_argv(device: SeedDevice) -> list[tuple[str, ...]]:
    """Drop the partition from its disk's table, then make the kernel forget it (sfdisk
    cannot re-read the table of a disk whose root is mounted)."""
    assert device.disk is not None and device.number is not None
    number = str(device.number)
    return [("sfdisk", "--no-reread", "--delete", str(device.disk), number),
            ("partx", "--delete", "--nr", number, str(device.disk))]


def grow_root_argv() -> list[tuple[str, ...]]:
    """Grow root into the freed space now: repart grows the last partition (root again once
    the seed partition is gone), growfs the mounted ext4. Next boot does it anyway."""
    return [("systemd-repart", "--dry-run=no"), (GROWFS, "/")]


def zero(path: Path) -> int:
    """Overwrite the whole device (or stand-in file) with zeros; returns the bytes written."""
    fd = os.open(path, os.O_WRONLY)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, 0, os.SEEK_SET)
        chunk = bytes(ZERO_CHUNK)
        written = 0
        while written < size:
            written += os.write(fd, chunk[: min(ZERO_CHUNK, size - written)])
        os.fsync(fd)
        return written
    finally:
        os.close(fd)


@dataclass(frozen=True)
class PartitionSource:
    locate: Callable[[], list[SeedDevice]]
    run: Runner = execute.run
    grow_root: bool = True
    kind: str = "partition"

    def describe(self) -> str:
        return f"partition {PARTITION_LABEL}"

    def read(self) -> Found | str:
        try:
            devices = self.locate()
        except (execute.CommandError, ValueError) as err:
            # Said in the "no seed" message; a container may have no disks to list at all.
            return f"cannot list the disks: {err}".splitlines()[0]
        if not devices:
            return "none on the disks"
        if len(devices) > 1:
            shown = ", ".join(str(d.path) for d in devices)
            raise SeedInvalid(f"more than one partition is named {PARTITION_LABEL}: {shown}",
                              hint="keep the one this box's seed is on; delete the others "
                              "(sfdisk --delete DISK NUMBER)")
        device = devices[0]
        where = f"the partition {PARTITION_LABEL} ({device.path})"
        try:
            data = _read_limited(device.path)
        except OSError as err:
            raise SeedInvalid(
                f"{where}: could be read only in part: {err.strerror}",
                hint="write the seed again into a fresh copy of the image: arkbox seed "
                "CONFIG --into DISK.raw; see docs/seed.md") from err
        _too_large(data, where)
        return Found(self, where, data, device)

    def wipe(self, found: Found) -> tuple[str, list[str]]:
        device = found.device
        assert device is not None
        warnings: list[str] = []
        try:
            zero(device.path)
        except OSError as err:
            warnings.append(f"could not zero {device.path}: {err.strerror}; zero it by hand: "
                            f"dd if=/dev/zero of={device.path} bs=1M")
            return f"{device.path} NOT zeroed", warnings
        done = f"{device.path} zeroed"
        if device.disk is None or device.number is None:
            return done, warnings  # a stand-in file, or a device outside a partition table
        if not self._delete(device, warnings):
            return done, warnings
        done += f" and removed from {device.disk}'s partition table"
        if self.grow_root:
            done += "; " + self._grow(warnings)
        return done, warnings

    def _delete(self, device: SeedDevice, warnings: list[str]) -> bool:
        table, kernel = delete_argv(device)
        try:
            self.run(table, timeout=COMMAND_TIMEOUT_S)
        except execute.CommandError as err:
            warnings.append(f"the zeroed partition stays in the table ({err.message}); root "
                            "cannot grow past it: sfdisk --delete "
                            f"{device.disk} {device.number}")
            return False
        # Fails when sfdisk already told the kernel; either way the kernel forgets it.
        self.run(kernel, timeout=COMMAND_TIMEOUT_S, check=False)
        return True

    def _grow(self, warnings: list[str]) -> str:
        try:
            for argv in grow_root_argv():
                self.run(argv, timeout=GROW_TIMEOUT_S)
        except execute.CommandError as err:
            warnings.append(f"root not grown now ({err.message}); systemd-repart grows it "
                            "at the next boot")
            return "root grows at the next boot"
        return "root grown into the freed space"


# ----------------------------------------------------------------- metadata


@dataclass(frozen=True)
class MetadataSource:
    url: str
    timeout_s: float = METADATA_TIMEOUT_S
    kind: str = "metadata"

    def describe(self) -> str:
        return f"metadata URL {self.url}"

    def read(self) -> Found | str:
        where = f"the metadata user-data ({self.url})"
        # Never through a proxy: the metadata service is link-local.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.url, timeout=self.timeout_s) as response:
                data: bytes = response.read(MAX_BYTES + 1)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return "no user-data (HTTP 404)"
            raise StepFailed(f"{where}: HTTP {err.code} {err.reason}",
                             hint="check seed.metadata_url; the provider's user-data must "
                             "hold the seed file") from err
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            return f"no answer within {self.timeout_s:g} s: {reason}"
        _too_large(data, where)
        return Found(self, where, data)

    def wipe(self, found: Found) -> tuple[str, list[str]]:
        return "not wiped: user-data is the provider's", [
            "the seed stays in the provider's user-data: remove it there (provider panel or "
            "API), or anything on the box that reaches the metadata address can read it"]


# ----------------------------------------------------------------- in order


# systemd's store of the credentials the machine passed (fw_cfg, SMBIOS, a container
# manager). Read there too: systemd in a container sets up no per-unit credential
# directory, so ImportCredential= leaves $CREDENTIALS_DIRECTORY without the file.
SYSTEM_CREDENTIALS = Path("/run/credentials/@system")


def credential_directory(env: Mapping[str, str],
                         system: Path = SYSTEM_CREDENTIALS) -> Path | None:
    """The unit's credential directory when it holds the seed, else systemd's store."""
    unit = env.get("CREDENTIALS_DIRECTORY")
    if unit and (Path(unit) / CREDENTIAL).exists():
        return Path(unit)
    if (system / CREDENTIAL).exists():
        return system
    return Path(unit) if unit else None


def default_sources(config: Appliance, run: Runner,
                    env: Mapping[str, str] = os.environ) -> list[Source]:
    """The sources of a real box, in the order they are tried."""
    sources: list[Source] = [
        CredentialSource(credential_directory(env)),
        PartitionSource(lambda: locate_partitions(run), run),
    ]
    if config.seed.metadata:
        sources.append(MetadataSource(config.seed.metadata_url))
    return sources


def find_seed(sources: Sequence[Source], missing: Sequence[str] = ()) -> Found:
    """The seed from the first source that holds one; NoSeed naming each when none."""
    looked: list[str] = []
    for source in sources:
        result = source.read()
        if isinstance(result, Found):
            log.info("seed: found in %s (%d bytes)", result.where, len(result.data))
            return result
        looked.append(f"{source.describe()} ({result})")
    needed = f"; not installed: {', '.join(missing)}" if missing else ""
    raise NoSeed(f"no seed: looked in {', '.join(looked)}{needed}", hint=SEED_HINT)
