"""The plain scalar types of the config: numbers, names, sizes, durations, paths.

Each type checks its value and, when it refuses one, says why in plain words.
"""

from __future__ import annotations

import zoneinfo
from typing import Annotated

from pydantic import AfterValidator, Field

from firstboot.core.config.base import Bounded, Kind, Text, did_you_mean, explain, refuse

Port = Annotated[int, Bounded("port", 1, 65535)]
Retries = Annotated[int, Bounded("integer", 1, 100)]
KeepCount = Annotated[int, Bounded("integer", 0, 10000)]
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
UrlPath = Annotated[str, Text(
    "URL path", r"^/[^\s?#]*$",
    'must be a URL path starting with "/" (no spaces, query or fragment)')]
DebianPackage = Annotated[str, Text(
    "Debian package name", r"^[a-z0-9][a-z0-9+.-]+$", "must be a Debian package name")]
PasswordHash = Annotated[str, Text(
    "password hash", r"^\{[A-Z0-9.-]+\}\S+$",
    'must be a Dovecot password hash like "{SHA512-CRYPT}$6$..."',
    "generate one with: doveadm pw -s SHA512-CRYPT")]
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
RepositoryPath = Annotated[str, Text(
    "repository path", r"^(?:\./|/)[A-Za-z0-9._/-]+$",
    'must be a path like "./arkbox" (relative to the borg home) or an absolute path')]


def _check_container_path(path: str) -> str:
    if ".." in path.split("/"):
        raise refuse(f'must not contain "..", got "{path}"')
    return path


ContainerPath = Annotated[str, Text(
    "absolute path", r"^/\S*$", "must be an absolute path inside the container"),
    AfterValidator(_check_container_path)]


def _check_schedule(text: str) -> str:
    if not text.strip() or "\n" in text:
        raise refuse("must be one systemd OnCalendar expression, e.g. daily or *-*-* 03:00")
    return text


Schedule = Annotated[str, AfterValidator(_check_schedule), Kind("systemd calendar")]


def _check_timezone(name: str) -> str:
    known = zoneinfo.available_timezones()
    if known and name not in known:
        guess = did_you_mean(name, known)
        hint = f'did you mean "{guess}"?' if guess else 'use a name like "Europe/Paris"'
        raise refuse(f'unknown time zone "{name}"', hint)
    return name


Timezone = Annotated[str, AfterValidator(_check_timezone), Kind("IANA time zone")]

_SIZE_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def size_bytes(size: str) -> int:
    """Bytes in a validated `Size` ("512M" -> 536870912)."""
    return int(size[:-1]) * _SIZE_UNITS[size[-1]]


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def duration_seconds(duration: str) -> float:
    """Seconds in a validated `Duration` ("5m" -> 300.0)."""
    unit = "ms" if duration.endswith("ms") else duration[-1]
    return int(duration[: -len(unit)]) * _DURATION_UNITS[unit]
