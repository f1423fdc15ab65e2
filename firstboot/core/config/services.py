"""The `services` section: the containerised applications, a Compose-like subset."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag

from firstboot.core.config.base import Kind, Section, refuse
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

Command = Annotated[list[str], Field(min_length=1), Kind("command (list of arguments)")]


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


EnvText = Annotated[str, BeforeValidator(_number_as_text, json_schema_input_type=str | int | float)]
EnvValue = Annotated[
    Annotated[EnvText, Tag("text")] | Annotated[SecretRef, Tag("secret")],
    Discriminator(_env_value_kind),
    Kind("text, number or secret reference"),
]


class Route(Section):
    """An HTTPS route from the reverse proxy to the service."""

    hostname: Hostname = Field(
        description="Host name the proxy serves the service on (gets a TLS certificate).",
        examples=["wiki.arkbox.test"],
    )
    path: UrlPath = Field(
        default="/",
        description="URL path prefix routed to the service.",
        examples=["/"],
    )
    port: Port = Field(
        description="Port the service listens on inside its container.",
        examples=[80],
    )
    max_body_size: Size = Field(
        default="32M",
        description="Largest request body the proxy accepts (uploads).",
        examples=["32M"],
    )


class Healthcheck(Section):
    """How arkbox tells the service is healthy: an HTTP GET or a command in the container."""

    http: UrlPath | None = Field(
        default=None,
        description="Path to GET; healthy on a 2xx or 3xx answer. Give this or command.",
        examples=["/.well-known/caldav"],
    )
    port: Port | None = Field(
        default=None,
        description="Port for the http check; the route's port when absent.",
        examples=[5232],
    )
    command: Command | None = Field(
        default=None,
        description="Command run inside the container; healthy when it exits 0. Give this or http.",
        examples=[["pg_isready", "-U", "postgres"]],
    )
    interval: Duration = Field(default="30s", description="Time between checks.", examples=["30s"])
    timeout: Duration = Field(default="5s", description="Time one check may take.", examples=["5s"])
    retries: Retries = Field(
        default=3,
        description="Consecutive failures before the service counts as unhealthy.",
        examples=[3],
    )
    start_period: Duration = Field(
        default="60s",
        description="Grace time after start during which failures do not count.",
        examples=["60s"],
    )


class ServiceBackup(Section):
    """How the service's data is made consistent while it is backed up."""

    consistency: Literal["pause", "dump", "none"] = Field(
        default="pause",
        description="pause: freeze the container while its volumes are read; dump: run "
        "dump_command and back up its output (databases); none: read volumes live.",
        examples=["pause"],
    )
    dump_command: Command | None = Field(
        default=None,
        description="With consistency dump: command run in the container; its standard "
        "output is the dump.",
        examples=[["pg_dumpall", "--clean", "--if-exists", "-U", "postgres"]],
    )
    dump_file: FileName = Field(
        default="dump",
        description="Name of the dump in the backup archive.",
        examples=["postgres.sql"],
    )
    restore_command: Command | None = Field(
        default=None,
        description="With consistency dump: command run in the container at restore; it "
        "reads the dump on its standard input.",
        examples=[["psql", "-U", "postgres", "-d", "postgres"]],
    )
    exclude_volumes: list[VolumeName] = Field(
        default_factory=list,
        description="Volumes left out of backups (caches, or data covered by the dump).",
        examples=[["cache"]],
    )


class Resources(Section):
    """Limits the container runs under."""

    memory: Size | None = Field(
        default=None, description="Memory limit; none when absent.", examples=["512M"]
    )
    pids: PidsLimit = Field(
        default=1024,
        description="Most processes and threads the container may run.",
        examples=[256],
    )
    cpus: Cpus | None = Field(
        default=None, description="CPU limit in cores; none when absent.", examples=[1.5]
    )


class Service(Section):
    """One containerised application, built from a recipe (or, optionally, a pulled image)."""

    recipe: RecipeName | None = Field(
        default=None,
        description="Image recipe under image/recipes/ built offline from the Debian base. "
        "Give this or image.",
        examples=["radicale"],
    )
    image: ImageReference | None = Field(
        default=None,
        description="An image reference to pull instead of a recipe (needs a reachable "
        "registry). Give this or recipe.",
        examples=["registry.example/app:1.2"],
    )
    command: Command | None = Field(
        default=None,
        description="Overrides the image's command.",
        examples=[["radicale", "--config", "/etc/radicale/config"]],
    )
    environment: dict[EnvName, EnvValue] = Field(
        default_factory=dict,
        description="Environment variables: text, a number, or a secret reference.",
        examples=[{"TZ": "Etc/UTC", "DB_PASSWORD": {"file": "secrets/db-password"}}],
    )
    volumes: dict[VolumeName, ContainerPath] = Field(
        default_factory=dict,
        description="Persistent volumes: name -> path in the container. On the host they "
        "live in /srv/arkbox/volumes/SERVICE/NAME and are backed up.",
        examples=[{"data": "/var/lib/radicale/collections"}],
    )
    secret_files: dict[ContainerPath, SecretRef] = Field(
        default_factory=dict,
        description="Secrets mounted read-only as files into the container: path -> secret "
        "reference (e.g. for *_FILE variables or an htpasswd file).",
        examples=[{"/run/secrets/db-password": {"file": "secrets/db-password"}}],
    )
    route: Route | None = Field(
        default=None,
        description="Serve the service over HTTPS through the reverse proxy.",
        examples=[{"hostname": "cal.arkbox.test", "port": 5232}],
    )
    healthcheck: Healthcheck | None = Field(
        default=None,
        description="How to tell the service is healthy; the image's own check when absent.",
        examples=[{"http": "/"}],
    )
    backup: ServiceBackup = Field(
        default_factory=ServiceBackup,
        description="Backup consistency of the service's volumes.",
        examples=[{"consistency": "pause"}],
    )
    connects_to: list[ServiceName] = Field(
        default_factory=list,
        description="Services this one talks to: it joins their networks (app -> database).",
        examples=[["db"]],
    )
    resources: Resources = Field(
        default_factory=Resources,
        description="Resource limits.",
        examples=[{"memory": "512M"}],
    )
