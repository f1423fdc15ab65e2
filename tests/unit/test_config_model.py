"""The config model: the embedded default and the examples load, every field is documented."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from firstboot.core.config import (
    DEFAULT_CONFIG_PATH,
    Appliance,
    ConfigInvalid,
    config_digest,
    load_config,
)
from firstboot.core.config.messages import unwrap
from firstboot.core.config.scalars import duration_seconds, size_bytes

EXAMPLES = sorted((DEFAULT_CONFIG_PATH.parent / "examples").glob("*.yaml"))


def test_default_config_loads() -> None:
    appliance = load_config(DEFAULT_CONFIG_PATH)
    assert appliance.appliance.domain == "arkbox.test"
    assert appliance.mail.enabled
    assert appliance.backup.repository == "ssh://borg@backup.arkbox.test:22/./arkbox"
    assert appliance.backup.restore == "auto"


def test_default_config_runs_the_agreed_services() -> None:
    services = load_config(DEFAULT_CONFIG_PATH).services
    assert {name: s.recipe for name, s in services.items()} == {
        "calendar": "radicale",
        "wiki": "dokuwiki",
        "webmail": "roundcube",
        "db": "postgres",
    }
    routes = {name: (s.route.hostname, s.route.port) for name, s in services.items() if s.route}
    assert routes == {
        "calendar": ("cal.arkbox.test", 5232),
        "wiki": ("wiki.arkbox.test", 80),
        "webmail": ("webmail.arkbox.test", 80),
    }
    assert services["calendar"].backup.consistency == "pause"
    assert services["wiki"].backup.consistency == "pause"
    assert services["db"].backup.consistency == "dump"
    assert services["db"].backup.dump_command == ["pg_dumpall", "--clean", "--if-exists"]
    assert services["webmail"].connects_to == ["db"]
    db_password = services["webmail"].environment["ROUNDCUBE_DB_PASSWORD"]
    assert not isinstance(db_password, str)  # a secret reference, not a value


def test_default_config_secrets_resolve() -> None:
    appliance = load_config(DEFAULT_CONFIG_PATH)
    refs = dict(appliance.secret_refs())
    assert ("backup", "passphrase") in refs
    for ref in refs.values():
        assert appliance.secret(ref)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_loads(example: Path) -> None:
    assert isinstance(load_config(example), Appliance)


def test_there_are_examples_beyond_the_default() -> None:
    assert len(EXAMPLES) >= 2


def test_loaded_config_knows_its_source() -> None:
    appliance = load_config(DEFAULT_CONFIG_PATH)
    assert appliance.source_path == DEFAULT_CONFIG_PATH.resolve()
    assert appliance.base_dir == DEFAULT_CONFIG_PATH.resolve().parent
    assert appliance.config_sha256 == config_digest(DEFAULT_CONFIG_PATH)
    assert len(appliance.config_sha256 or "") == 64


def test_config_is_immutable() -> None:
    appliance = load_config(DEFAULT_CONFIG_PATH)
    with pytest.raises(ValidationError):
        appliance.appliance.name = "other"


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF6YilbxuYcReyoVRXRnJrBiinY8edFG7Xgx8AxGsXkQ ops@laptop"
SMALL = f"""\
appliance:
  name: t
  domain: arkbox.test
  hostname: arkbox.test
  admin: {{ssh_keys: [{KEY}]}}
services:
  wiki: {{recipe: dokuwki}}
"""


def test_known_recipes_are_checked_when_given(tmp_path: Path) -> None:
    config = tmp_path / "appliance.yaml"
    config.write_text(SMALL)
    assert load_config(config).services["wiki"].recipe == "dokuwki"
    with pytest.raises(ConfigInvalid) as caught:
        load_config(config, known_recipes={"radicale", "dokuwiki"})
    [problem] = caught.value.problems
    assert str(problem) == 'line 7  services.wiki.recipe: no image recipe named "dokuwki"'
    assert problem.hint == 'did you mean "dokuwiki"?'


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> Iterator[type[BaseModel]]:
    if model in seen:
        return
    seen.add(model)
    yield model
    for info in model.model_fields.values():
        for nested in _nested(info.annotation):
            yield from _models(nested, seen)


def _nested(annotation: Any) -> Iterator[type[BaseModel]]:
    found = unwrap(annotation)
    if isinstance(found, type) and issubclass(found, BaseModel):
        yield found
    for arg in getattr(found, "__args__", ()):
        yield from _nested(arg)


ALL_MODELS = list(_models(Appliance, set()))
ALL_FIELDS = [(m, name) for m in ALL_MODELS for name in m.model_fields]


def test_all_sections_are_walked() -> None:
    names = {m.__name__ for m in ALL_MODELS}
    assert {"Appliance", "Service", "Route", "Mailbox", "SecretRef", "BackupClient"} <= names


@pytest.mark.parametrize("model,name", ALL_FIELDS, ids=lambda x: getattr(x, "__name__", x))
def test_every_field_has_a_description_and_a_valid_example(
    model: type[BaseModel], name: str
) -> None:
    info = model.model_fields[name]
    assert info.description, f"{model.__name__}.{name} has no description"
    assert info.examples, f"{model.__name__}.{name} has no example"
    field_type: Any = (
        Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    )
    found = unwrap(info.annotation)
    is_model = isinstance(found, type) and issubclass(found, BaseModel)
    adapter: TypeAdapter[Any] = (
        TypeAdapter(field_type)
        if is_model
        else TypeAdapter(field_type, config=ConfigDict(strict=True))
    )
    for example in info.examples:
        adapter.validate_python(example)


def test_sizes_and_durations_convert() -> None:
    assert size_bytes("512M") == 512 * 1024**2
    assert size_bytes("4G") == 4 * 1024**3
    assert duration_seconds("5m") == 300
    assert duration_seconds("250ms") == 0.25
