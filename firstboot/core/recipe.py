"""A service image's recipe.yaml, declared once: how the image is meant to run.

Every image recipe under image/recipes/NAME/ has a Dockerfile (what is in the
image) and a recipe.yaml (how to run it). The builder validates each recipe.yaml
with this model when it builds the image (a bad one fails the build with its
file, line and a hint) and lays it into /usr/share/arkbox/recipes/NAME/; the
installer reads it back with the same model. docs/recipes.md and
config/recipe.schema.json are generated from the descriptions here.

    recipe = load_recipe(path)        # raises RecipeInvalid (exit code 2)
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from firstboot.core.config.base import ONE_LINE, Kind, Section, did_you_mean, key, refuse
from firstboot.core.config.messages import findings_from
from firstboot.core.config.problems import ConfigInvalid, Finding, Problem
from firstboot.core.config.scalars import (
    AccountId,
    AccountName,
    ContainerPath,
    EnvName,
    GraceSeconds,
    Port,
    RecipeName,
)
from firstboot.core.config.services import Command
from firstboot.core.config.yaml_source import LineIndex, YamlRejected, parse_yaml

RECIPE_FILE = "recipe.yaml"
RECIPES_DOC = "docs/recipes.md"
TMP = "/tmp"  # noqa: S108 -- a path inside the container, always a private tmpfs

# Linux capabilities as the engine names them (without CAP_).
CAPABILITIES = frozenset({
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE",
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER",
    "KILL", "LEASE", "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN",
    "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP",
    "SETUID", "SYSLOG", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE",
    "SYS_PACCT", "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG",
    "WAKE_ALARM",
})


def _check_capability(name: str) -> str:
    if name in CAPABILITIES:
        return name
    bare = name.upper().removeprefix("CAP_")
    if bare in CAPABILITIES:
        raise refuse(f'write capabilities as the engine does: "{bare}", got "{name}"')
    guess = did_you_mean(bare, set(CAPABILITIES))
    raise refuse(f'"{name}" is not a Linux capability',
                 f'did you mean "{guess}"?' if guess else "e.g. CHOWN, SETUID, NET_BIND_SERVICE")


Capability = Annotated[
    str, AfterValidator(_check_capability), ONE_LINE, Kind("capability (CHOWN)")]
# The pattern is for the JSON Schema (editors); ONE_LINE refuses first, with its message.
Text = Annotated[str, Field(min_length=1, pattern=r"^[^\n]+$"), ONE_LINE, Kind("text (one line)")]


class Account(Section):
    """A Unix account of the image, made with fixed ids so restored files keep their owner."""

    name: AccountName = key("The account's name.", example="postfix")
    uid: AccountId = key("Its user id.", example=230)
    gid: AccountId = key("Its primary group id.", example=230)


class RunUser(Account):
    """The account the application runs as; arkbox makes the service's files for it."""

    name: AccountName = key(
        "The application's account; arkbox makes the service's volumes, secret "
        "files and tmpfs mounts (other than /tmp) for its uid and gid.",
        example="postgres")
    uid: AccountId = key("Its user id.", example=220)
    gid: AccountId = key("Its primary group id.", example=220)
    starts_as_root: bool = key(
        "PID 1 starts as root and changes to this account itself (sshd); the "
        "image then has no USER. False: the image's USER is this account (or it is root).",
        default=False, example=True)


class RecipePort(Section):
    """A port the image listens on inside its container."""

    port: Port = key("The container port.", example=5432)
    description: Text = key("What answers there.", example="PostgreSQL")


class Volume(Section):
    """A path the container expects mounted: a volume, or a read-only file or directory."""

    description: Text = key("What it holds.", example="the cluster (PGDATA), mode 0700")
    read_only: bool = key(
        "Mounted read-only (configuration arkbox renders, keys).",
        default=False, example=True)
    file: bool = key("A single file rather than a directory.", default=False, example=True)


class EnvVar(Section):
    """An environment variable the image reads."""

    description: Text = key(
        "What it sets, and its default.",
        example="the role's password, made on first start")
    accepts_file: bool = key(
        "The image also reads NAME_FILE, a file holding the value: arkbox then "
        "mounts a secret value as a file instead of putting it in the environment.",
        default=False, example=True)
    required: bool = key("The image does not start without it.", default=False, example=True)


class HealthCheck(Section):
    """The image's own health check (its Dockerfile's HEALTHCHECK runs the same command)."""

    command: Command = key(
        "Command run inside the container; healthy when it exits 0.",
        example=["/usr/local/bin/healthcheck"])
    checks: Text = key("What a pass means.", example="pg_isready on the local socket")


class RecipeBackup(Section):
    """How the image's data is made consistent while it is backed up."""

    consistency: Literal["pause", "dump", "none"] = key(
        "pause: freeze the container while its volumes are read; dump: back up "
        "the output of `dump`; none: nothing to make consistent (no state, or not ours).",
        example="dump")
    dump: Command | None = key(
        "With dump: command run in the container (default user); its standard "
        "output is the dump.",
        default=None, example=["pg_dumpall", "--clean", "--if-exists"])
    restore: Command | None = key(
        "With dump: command run in the container at restore, the dump on its "
        "standard input.",
        default=None, example=["psql", "--quiet", "--dbname=postgres"])

    @model_validator(mode="after")
    def _dump_commands(self) -> RecipeBackup:
        if self.consistency == "dump" and (self.dump is None or self.restore is None):
            raise refuse("consistency dump needs both dump and restore commands",
                         "e.g. dump: [pg_dumpall, --clean] and restore: [psql]")
        if self.consistency != "dump" and (self.dump is not None or self.restore is not None):
            raise refuse(f"dump and restore are only for consistency dump, not "
                         f"{self.consistency}")
        return self


class Recipe(Section):
    """recipe.yaml: how a service image is meant to run."""

    description: Text = key(
        "What the image is, in one line.",
        example="PostgreSQL (Debian's), one cluster per container")
    user: RunUser = key(
        "The account the application runs as.",
        example={"name": "postgres", "uid": 220, "gid": 220})
    accounts: list[Account] = key(
        "Other accounts the image makes with fixed ids (its workers, owners of "
        "its files).",
        default_factory=list, example=[{"name": "vmail", "uid": 235, "gid": 235}])
    ports: list[RecipePort] = key(
        "Ports it listens on inside the container.",
        default_factory=list, example=[{"port": 5432, "description": "PostgreSQL"}])
    volumes: dict[ContainerPath, Volume] = key(
        "Paths it expects mounted, by container path.",
        default_factory=dict,
        example={"/var/lib/postgresql/data": {"description": "the cluster (PGDATA)"}})
    capabilities: dict[Capability, Text] = key(
        "Capabilities added after dropping all, each with why it is needed.",
        default_factory=dict, example={"SETUID": "the masters drop every worker to its own uid"})
    read_only: bool = key("The root file system is read-only.", default=True, example=False)
    tmpfs: list[ContainerPath] = key(
        "Private tmpfs mounts it writes to.",
        default_factory=lambda: [TMP], example=[TMP, "/run"])
    env: dict[EnvName, EnvVar] = key(
        "Environment variables it reads.",
        default_factory=dict, example={"POSTGRES_PASSWORD": {"description": "the role's password",
                                         "accepts_file": True}})
    egress: bool = key(
        "The application reaches the outside world; without it its network is "
        "internal (it talks only to the proxy and the services it connects to).",
        default=False, example=True)
    healthcheck: HealthCheck = key(
        "Its health check.",
        example={"command": ["/usr/local/bin/healthcheck"], "checks": "pg_isready"})
    backup: RecipeBackup = key(
        "How its data is backed up consistently.",
        example={"consistency": "pause"})
    depends_on: list[RecipeName] = key(
        "Recipes of the services it talks to. `mail` means the box's mail server: "
        "the mail container joins the service's network as `mail`.",
        default_factory=list, example=["postgres", "mail"])
    stop_grace_seconds: GraceSeconds = key(
        "Seconds it may take to stop before it is killed.",
        default=10, example=10)

    @field_validator("ports", "tmpfs", "depends_on")
    @classmethod
    def _distinct(cls, items: list[RecipePort] | list[str]) -> list[RecipePort] | list[str]:
        values = [i.port if isinstance(i, RecipePort) else i for i in items]
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise refuse(f"lists {', '.join(repeated)} more than once")
        return items


class RecipeInvalid(ConfigInvalid):
    """A recipe.yaml that cannot be used; `problems` lists every reason, with its line."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        super().__init__(path, problems)
        self.hint = f"fix the recipe; {RECIPES_DOC} lists every key"


def recipe_path(recipes_dir: Path, name: str) -> Path:
    return recipes_dir / name / RECIPE_FILE


def load_recipe(path: Path, known_recipes: Collection[str] | None = None) -> Recipe:
    """Read and validate one recipe.yaml; raise RecipeInvalid listing every problem.

    A missing file raises FileNotFoundError (the caller knows where recipes come from).
    known_recipes: when given, a depends_on outside it is a problem.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeInvalid(path, [Problem("", f"cannot read: {err}")]) from err
    try:
        document = parse_yaml(text, top_level="keys (description:, user:, ...)",
                              empty_hint=f"copy another recipe's {RECIPE_FILE}; "
                              f"{RECIPES_DOC} lists every key")
    except YamlRejected as rejected:
        raise RecipeInvalid(path, [rejected.problem]) from None
    findings = list(document.duplicates)
    if known_recipes is not None:
        findings.extend(_unknown_dependencies(document.data.get("depends_on"), known_recipes))
    recipe: Recipe | None = None
    try:
        recipe = Recipe.model_validate(document.data)
    except ValidationError as err:
        findings.extend(findings_from(err, document.data, Recipe))
    if findings:
        raise RecipeInvalid(path, _located(findings, document.lines))
    assert recipe is not None  # no findings means validation passed
    return recipe


def _unknown_dependencies(depends_on: object, known: Collection[str]) -> Iterator[Finding]:
    """depends_on as written (checked even when other keys are wrong: all problems at once)."""
    for position, name in enumerate(depends_on if isinstance(depends_on, list) else []):
        if isinstance(name, str) and name not in known:
            guess = did_you_mean(name, set(known))
            yield Finding(("depends_on", position), f'no recipe named "{name}"',
                          f'did you mean "{guess}"?' if guess else
                          "recipes: " + ", ".join(sorted(known)))


def _located(findings: list[Finding], lines: LineIndex) -> list[Problem]:
    located = {finding.located(lines.line_of(finding.parts)) for finding in findings}
    return sorted(located, key=lambda p: (p.line or 0, p.path, p.message))
