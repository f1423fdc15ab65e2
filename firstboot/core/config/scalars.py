"""The plain scalar types of the config: numbers, names, sizes, durations, paths.

Each type checks its value and, when it refuses one, says why in plain words.
"""

from __future__ import annotations

import zoneinfo
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from firstboot.core.config.base import (
    ONE_LINE,
    Bounded,
    Kind,
    Text,
    did_you_mean,
    explain,
    refuse,
)

Port = Annotated[int, Bounded("port", 1, 65535)]
Retries = Annotated[int, Bounded("integer", 1, 100)]
KeepCount = Annotated[int, Bounded("integer", 0, 10000)]
Parallelism = Annotated[int, Bounded("integer", 1, 64)]
PidsLimit = Annotated[int, Bounded("integer", 16, 4194304)]
AccountId = Annotated[int, Bounded("uid or gid", 0, 65535)]
GraceSeconds = Annotated[int, Bounded("seconds", 1, 300)]
RsaBits = Annotated[int, Bounded("bits", 2048, 16384)]
Cpus = Annotated[
    float,
    Field(gt=0, le=256),
    explain(
        greater_than="must be more than 0, got {value}",
        less_than_equal="must be at most 256, got {value}",
    ),
    Kind("number of CPUs"),
]
ApplianceName = Annotated[str, Text(
    "name ([a-z0-9-])", r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
    "must be lower-case letters, digits and dashes (it names the image files)")]
RESERVED_SERVICE_NAMES = frozenset({"proxy", "mail"})


def _check_service_name(name: str) -> str:
    if name in RESERVED_SERVICE_NAMES:
        raise refuse(
            f'service name "{name}" is reserved for arkbox\'s own {name} container',
            f'pick another name, e.g. "{name}-app"',
        )
    return name


ServiceName = Annotated[str, Text(
    "service name", r"^[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?$",
    "service name must start with a lower-case letter, then lower-case letters, digits and "
    "dashes (at most 32)"),
    AfterValidator(_check_service_name)]
RecipeName = Annotated[str, Text(
    "recipe name", r"^[a-z][a-z0-9-]*$",
    "must name a recipe under image/recipes/ (lower-case letters, digits, dashes)")]
VolumeName = Annotated[str, Text(
    "volume name", r"^[a-z][a-z0-9_-]{0,62}$",
    "volume name must start with a lower-case letter, then letters, digits, _ or -")]
EnvName = Annotated[str, Text(
    "variable name", r"^[A-Za-z_][A-Za-z0-9_]*$",
    "environment variable name must be letters, digits and _, not starting with a digit")]
# Accounts Debian or arkbox already own: an admin by that name would clash.
SYSTEM_USERS = frozenset(
    {
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "games",
        "man",
        "lp",
        "mail",
        "news",
        "uucp",
        "proxy",
        "www-data",
        "backup",
        "list",
        "irc",
        "nobody",
        "sshd",
        "messagebus",
        "_apt",
        "borg",
        "docker",
        "postfix",
        "dovecot",
        "arkbox",
    }
)


_ACCOUNT = r"^[a-z_][a-z0-9_-]{0,31}$"  # a Unix account name


def _check_admin_user(name: str) -> str:
    if name in SYSTEM_USERS:
        raise refuse(f'"{name}" is a system account', 'pick a personal name like "ops"')
    return name


UnixUser = Annotated[str, Text(
    "user name", _ACCOUNT,
    "must be a Unix user name (lower-case letters, digits, _ and -, at most 32)"),
    AfterValidator(_check_admin_user)]
# Any account of an image (root and system accounts too), unlike UnixUser.
AccountName = Annotated[str, Text(
    "account name", _ACCOUNT,
    "must be a Unix account name (lower-case letters, digits, _ and -, at most 32)")]
TimeOfDay = Annotated[str, Text(
    "time of day (HH:MM)", r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$",
    'must be a time of day like "04:30" (HH:MM, 24 hours)')]
Size = Annotated[str, Text(
    "size", r"^[1-9][0-9]*[KMGT]$",
    'must be a size like "512M" or "4G" (a whole number, then K, M, G or T)')]
Duration = Annotated[str, Text(
    "duration", r"^[1-9][0-9]*(?:ms|s|m|h)$", 'must be a duration like "30s", "5m" or "1h"')]
# Longer spans than Duration (which Docker reads): alert thresholds and intervals.
Period = Annotated[str, Text(
    "period", r"^[1-9][0-9]*(?:m|h|d)$", 'must be a period like "5m", "26h" or "14d"')]
UrlPath = Annotated[str, Text(
    "URL path", r"^/[^\s?#]*$",
    'must be a URL path starting with "/" (no spaces, query or fragment)')]
DebianPackage = Annotated[str, Text(
    "Debian package name", r"^[a-z0-9][a-z0-9+.-]+$", "must be a Debian package name")]
# What doveadm pw writes after the {SCHEME}: crypt(3) ($6$, $2y$, $argon2id$...,m=,t=,p=),
# base64 and hex. Never ":", which separates the fields of Dovecot's passwd-file.
PasswordHash = Annotated[str, Text(
    "password hash", r"^\{[A-Z0-9.-]+\}[A-Za-z0-9./$=+,_-]+$",
    'must be a Dovecot password hash like "{SHA512-CRYPT}$6$..." (the scheme in braces, then '
    "letters, digits and . / $ = + , _ - only)",
    "generate one with: doveadm pw -s SHA512-CRYPT")]
# A relay login as Postfix's SASL password map holds it ("[host]:port user:password"):
# printable ASCII without spaces or ":".
RelayUser = Annotated[str, Text(
    "relay user name", r"^[!-9;-~]{1,255}$",
    "must be a user name of printable ASCII characters without spaces or colons (at most "
    "255)")]
Compression = Annotated[str, Text(
    "borg compression",
    r"^(?:none|lz4|zstd(?:,(?:[1-9]|1[0-9]|2[0-2]))?|zlib(?:,[0-9])?|lzma(?:,[0-9])?)$",
    'must be a borg compression: "lz4", "zstd", "zstd,N" (1-22), "zlib,N", "lzma,N" or "none"')]
FileName = Annotated[str, Text(
    "file name", r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    "must be a plain file name (letters, digits, ., _ and -; no slashes)")]
FirewallComment = Annotated[str, Text(
    "comment", r'^[^"\\\n]{0,120}$',
    "must be one line of at most 120 characters without quotes or backslashes")]
# The borg account's home on a backup server: every repository lives below it.
BORG_HOME = PurePosixPath("/srv/borg")


def repository_dir(path: str) -> PurePosixPath:
    """Where a repository path ("./arkbox", as in the client's URL) is on the backup server,
    normalised: "./arkbox", "./././arkbox/" and "/srv/borg/arkbox" are all /srv/borg/arkbox.

    Raises ValueError (message, then hint) when the path leaves the borg home, is the home
    itself or lies deeper than the weekly check looks: borg serve would restrict the client
    to a directory arkbox does not look after.
    """
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f'must not contain "..", got "{path}"',
                         f"a repository stays below the borg home {BORG_HOME}")
    where = PurePosixPath("/", *parts) if path.startswith("/") else BORG_HOME.joinpath(*parts)
    if where == BORG_HOME:
        raise ValueError(f'"{path}" is the borg home itself, not a repository in it',
                         'name a directory below it, e.g. "./NAME"')
    if BORG_HOME not in where.parents:
        raise ValueError(f'"{path}" is outside the borg home {BORG_HOME}',
                         'write it relative to the home, e.g. "./NAME": the borg account owns '
                         "only the home, and the weekly check looks only there")
    if len(where.relative_to(BORG_HOME).parts) > 2:
        raise ValueError(f'"{path}" is more than two levels below the borg home',
                         'e.g. "./NAME" or "./GROUP/NAME": the weekly check looks no deeper')
    return where


def repository_overlap(one: PurePosixPath, other: PurePosixPath) -> str | None:
    """How repository directory `one` meets `other` ("is the same directory as", "is
    inside", "holds"), None when they are apart. Two clients in one repository would
    overwrite each other's archives; a repository inside another's directory goes with it
    when the operator moves, deletes or rolls back that one."""
    if one == other:
        return "is the same directory as"
    if other in one.parents:
        return "is inside"
    if one in other.parents:
        return "holds"
    return None


def _check_repository_path(path: str) -> str:
    try:
        repository_dir(path)
    except ValueError as err:
        raise refuse(*err.args) from None
    return path


RepositoryPath = Annotated[str, Text(
    "repository path", r"^(?:\./|/)[A-Za-z0-9._/-]+$",
    f'must be a path like "./arkbox" (relative to the borg home {BORG_HOME}) or an absolute '
    "path below it"),
    AfterValidator(_check_repository_path)]


# borg reads a quota's K, M, G, T as powers of 1000, and borg serve refuses one below 10M
# (the client's every run would then fail to connect).
_BORG_UNITS = {"K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}
SMALLEST_QUOTA = 10 * 1000**2


def borg_quota_bytes(quota: str) -> int:
    """Bytes in a storage quota as borg reads it ("100G" -> 10^11; a bare number is bytes)."""
    unit = quota[-1:]
    return int(quota[:-1]) * _BORG_UNITS[unit] if unit in _BORG_UNITS else int(quota)


def _check_quota(quota: str) -> str:
    if borg_quota_bytes(quota) < SMALLEST_QUOTA:
        raise refuse(f'must be at least 10M, got "{quota}"', "borg serve refuses a smaller quota")
    return quota


Quota = Annotated[Size, AfterValidator(_check_quota)]


def _check_container_path(path: str) -> str:
    if ".." in path.split("/"):
        raise refuse(f'must not contain "..", got "{path}"')
    return path


ContainerPath = Annotated[str, Text(
    "absolute path", r"^/\S*$", "must be an absolute path inside the container"),
    AfterValidator(_check_container_path)]


def _check_schedule(text: str) -> str:
    if not text.strip():
        raise refuse("must be one systemd OnCalendar expression, e.g. daily or *-*-* 03:00")
    return text


# The characters of OnCalendar expressions ("Mon..Fri *-*-1,15 03:00:00 Europe/Paris",
# "*:0/15", "~07"); no "%", which systemd would expand in the timer's Description.
Schedule = Annotated[str, Text(
    "systemd calendar", r"^[A-Za-z0-9 *,./:~_+-]+$",
    "must be one systemd OnCalendar expression, e.g. daily or *-*-* 03:00",
    "check it with: systemd-analyze calendar EXPR"),
    AfterValidator(_check_schedule)]


def _off_is_off(value: object) -> object:
    # YAML 1.1 reads a bare `off` as false: `drill: off` means what it says.
    return "off" if value is False else value


# A schedule that may also be `off`.
ScheduleOrOff = Annotated[Schedule, BeforeValidator(_off_is_off)]


def _check_timezone(name: str) -> str:
    known = zoneinfo.available_timezones()
    if known and name not in known:
        guess = did_you_mean(name, known)
        hint = f'did you mean "{guess}"?' if guess else 'use a name like "Europe/Paris"'
        raise refuse(f'unknown time zone "{name}"', hint)
    return name


Timezone = Annotated[str, AfterValidator(_check_timezone), ONE_LINE, Kind("IANA time zone")]

_SIZE_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def size_bytes(size: str) -> int:
    """Bytes in a validated `Size` ("512M" -> 536870912)."""
    return int(size[:-1]) * _SIZE_UNITS[size[-1]]


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def duration_seconds(duration: str) -> float:
    """Seconds in a validated `Duration` ("5m" -> 300.0)."""
    unit = "ms" if duration.endswith("ms") else duration[-1]
    return int(duration[: -len(unit)]) * _DURATION_UNITS[unit]


_PERIOD_UNITS = {"m": 60, "h": 3600, "d": 86400}


def period_seconds(period: str) -> int:
    """Seconds in a validated `Period` ("26h" -> 93600)."""
    return int(period[:-1]) * _PERIOD_UNITS[period[-1]]
