"""The `services` section: the containerised applications, a Compose-like subset."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag

from firstboot.core.config.base import MULTI_LINE, Kind, Section, key, refuse
from firstboot.core.config.network import Hostname, ImageReference
from firstboot.core.config.scalars import (
    ContainerPath,
    Cpus,
    Duration,
    EnvName,
    FileName,
    PidsLimit,
    Port,
    RecipeName,
    Retries,
    ServiceName,
    Size,
    UrlPath,
    VolumeName,
)
from firstboot.core.config.secrets import SecretRef

# An argument or an environment value reaches the engine as data, never a line-based file:
# it may span lines (a script for sh -c, a PEM).
Argument = Annotated[str, MULTI_LINE]
Command = Annotated[list[Argument], Field(min_length=1), Kind("command (list of arguments)")]


def _number_as_text(value: Any) -> Any:
    if isinstance(value, bool):
        raise refuse(
            f"must be text, got {'true' if value else 'false'}",
            'YAML reads true/false/yes/no/on/off as booleans: quote it, e.g. "true"',
        )
    if isinstance(value, int | float):
        return str(value)
    return value


def _env_value_kind(value: Any) -> str:
    return "secret" if isinstance(value, dict) else "text"


EnvText = Annotated[
    str, MULTI_LINE, BeforeValidator(_number_as_text, json_schema_input_type=str | int | float)]
EnvValue = Annotated[
    Annotated[EnvText, Tag("text")] | Annotated[SecretRef, Tag("secret")],
    Discriminator(_env_value_kind),
    Kind("text, number or secret reference"),
]


class Route(Section):
    """An HTTPS route from the reverse proxy to the service."""

    hostname: Hostname = key(
        "Host name the proxy serves the service on (gets a TLS certificate).",
        example="wiki.arkbox.test")
    path: UrlPath = key("URL path prefix routed to the service.", default="/", example="/")
    port: Port = key("Port the service listens on inside its container.", example=80)
    max_body_size: Size = key(
        "Largest request body the proxy accepts (uploads).",
        default="32M", example="32M")


class Healthcheck(Section):
    """How arkbox tells the service is healthy: an HTTP GET or a command in the container."""

    http: UrlPath | None = key(
        "Path to GET; healthy on a 2xx or 3xx answer. Give this or command.",
        default=None, example="/.well-known/caldav")
    port: Port | None = key(
        "Port for the http check; the route's port when absent.",
        default=None, example=5232)
    command: Command | None = key(
        "Command run inside the container; healthy when it exits 0. Give this or http.",
        default=None, example=["pg_isready", "-U", "postgres"])
    interval: Duration = key("Time between checks.", default="30s", example="30s")
    timeout: Duration = key("Time one check may take.", default="5s", example="5s")
    retries: Retries = key(
        "Consecutive failures before the service counts as unhealthy.",
        default=3, example=3)
    start_period: Duration = key(
        "Grace time after start during which failures do not count.",
        default="60s", example="60s")


class ServiceBackup(Section):
    """How the service's data is made consistent while it is backed up."""

    consistency: Literal["pause", "dump", "none"] = key(
        "pause: freeze the container while its volumes are read; dump: run dump_command and "
        "back up its output (databases); none: read volumes live.",
        default="pause", example="pause")
    dump_command: Command | None = key(
        "With consistency dump: command run in the container; its standard output is the dump.",
        default=None, example=["pg_dumpall", "--clean", "--if-exists", "-U", "postgres"])
    dump_file: FileName = key(
        "Name of the dump in the backup archive.",
        default="dump", example="postgres.sql")
    restore_command: Command | None = key(
        "With consistency dump: command run in the container at restore; it reads the dump on "
        "its standard input.",
        default=None, example=["psql", "-U", "postgres", "-d", "postgres"])
    exclude_volumes: list[VolumeName] = key(
        "Volumes left out of backups (caches, or data covered by the dump).",
        default_factory=list, example=["cache"])


class Resources(Section):
    """Limits the container runs under."""

    memory: Size | None = key("Memory limit; none when absent.", default=None, example="512M")
    pids: PidsLimit = key(
        "Most processes and threads the container may run.",
        default=1024, example=256)
    cpus: Cpus | None = key("CPU limit in cores; none when absent.", default=None, example=1.5)


class Service(Section):
    """One containerised application, built from a recipe (or, optionally, a pulled image)."""

    recipe: RecipeName | None = key(
        "Image recipe under image/recipes/ built offline from the Debian base. Give this or "
        "image.",
        default=None, example="radicale")
    image: ImageReference | None = key(
        "An image reference to pull instead of a recipe (needs a reachable registry). Give this "
        "or recipe.",
        default=None, example="registry.example/app:1.2")
    command: Command | None = key(
        "Overrides the image's command.",
        default=None, example=["radicale", "--config", "/etc/radicale/config"])
    environment: dict[EnvName, EnvValue] = key(
        "Environment variables: text, a number, or a secret reference.",
        default_factory=dict,
        example={"TZ": "Etc/UTC", "DB_PASSWORD": {"file": "secrets/db-password"}})
    volumes: dict[VolumeName, ContainerPath] = key(
        "Persistent volumes: name -> path in the container. On the host they live in "
        "/srv/arkbox/volumes/SERVICE/NAME and are backed up.",
        default_factory=dict, example={"data": "/var/lib/radicale/collections"})
    secret_files: dict[ContainerPath, SecretRef] = key(
        "Secrets mounted read-only as files into the container: path -> secret reference (e.g. "
        "for *_FILE variables or an htpasswd file).",
        default_factory=dict, example={"/run/secrets/db-password": {"file": "secrets/db-password"}})
    route: Route | None = key(
        "Serve the service over HTTPS through the reverse proxy.",
        default=None, example={"hostname": "cal.arkbox.test", "port": 5232})
    healthcheck: Healthcheck | None = key(
        "How to tell the service is healthy; the image's own check when absent.",
        default=None, example={"http": "/"})
    backup: ServiceBackup = key(
        "Backup consistency of the service's volumes.",
        default_factory=ServiceBackup, example={"consistency": "pause"})
    connects_to: list[ServiceName] = key(
        "Services this one talks to: it joins their networks (app -> database).",
        default_factory=list, example=["db"])
    resources: Resources = key(
        "Resource limits.",
        default_factory=Resources, example={"memory": "512M"})
