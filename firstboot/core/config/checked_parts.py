"""The parts of a config that are valid on their own, for the checks across fields.

When the whole config fails validation, each section (each service, each item
of a list of mappings) is validated alone, so the cross-field rules still run
on everything that can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError

from firstboot.core.config.backup import Backup, BackupServer
from firstboot.core.config.mail import Mail
from firstboot.core.config.model import Appliance, Firewall, Identity
from firstboot.core.config.services import Service

SectionT = TypeVar("SectionT", bound=BaseModel)


@dataclass
class CheckedParts:
    """The sections (and services) of a config that are valid on their own."""

    identity: Identity | None = None
    mail: Mail | None = None
    services: dict[str, Service] = field(default_factory=dict)
    service_names: set[str] = field(default_factory=set)
    backup: Backup | None = None
    firewall: Firewall | None = None
    backup_server: BackupServer | None = None
    pruned: set[tuple[str, str]] = field(default_factory=set)

    @classmethod
    def of(cls, appliance: Appliance) -> CheckedParts:
        return cls(
            identity=appliance.appliance,
            mail=appliance.mail,
            services=dict(appliance.services),
            service_names=set(appliance.services),
            backup=appliance.backup,
            firewall=appliance.firewall,
            backup_server=appliance.backup_server,
        )

    @classmethod
    def salvage(cls, raw: dict[str, object]) -> CheckedParts:
        """Validate each section on its own, keeping those that pass.

        Invalid entries of a list of mappings (a mailbox, a firewall rule) are
        left out so the rest of their section is still checked; `pruned` says
        which lists lost entries, for the rules that need them whole.
        """
        pruned: set[tuple[str, str]] = set()
        raw_services = raw.get("services")
        services: dict[str, Service] = {}
        names: set[str] = set()
        if isinstance(raw_services, dict):
            names = {name for name in raw_services if isinstance(name, str)}
            for name in (name for name in raw_services if isinstance(name, str)):
                service = _valid(Service, raw_services[name])
                if service is not None:
                    services[name] = service
        mail = _salvage(Mail, raw, "mail", pruned) if "mail" in raw else Mail(enabled=False)
        firewall = _salvage(Firewall, raw, "firewall", pruned) if "firewall" in raw else Firewall()
        return cls(
            identity=_valid(Identity, raw.get("appliance")),
            mail=mail,
            services=services,
            service_names=names,
            backup=_valid(Backup, raw["backup"]) if "backup" in raw else Backup(),
            firewall=firewall,
            backup_server=_salvage(BackupServer, raw, "backup_server", pruned),
            pruned=pruned,
        )


def _valid(model: type[SectionT], value: object) -> SectionT | None:
    if value is None:
        return None
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _salvage(
    model: type[SectionT], raw: dict[str, object], name: str, pruned: set[tuple[str, str]]
) -> SectionT | None:
    """`raw[name]` validated as `model`, without the invalid items of its lists of mappings."""
    value = raw.get(name)
    whole = _valid(model, value)
    if whole is not None or not isinstance(value, dict):
        return whole
    kept = dict(value)
    for field_name, info in model.model_fields.items():
        item_model = _list_item_model(info.annotation)
        items = value.get(field_name)
        if item_model is None or not isinstance(items, list):
            continue
        valid_items = [item for item in items if _valid(item_model, item) is not None]
        if len(valid_items) != len(items):
            kept[field_name] = valid_items
            pruned.add((name, field_name))
    return _valid(model, kept)


def _list_item_model(annotation: object) -> type[BaseModel] | None:
    if get_origin(annotation) is not list:
        return None
    item = get_args(annotation)[0]
    return item if isinstance(item, type) and issubclass(item, BaseModel) else None
