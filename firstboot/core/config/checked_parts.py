"""The parts of a config that are valid on their own, for the checks across fields.

When the whole config fails validation, each section (each service, each item
of a list of mappings) is validated alone, so the cross-field rules still run
on everything that can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError

from firstboot.core.config.alerts import Alerts
from firstboot.core.config.backup import Backup, BackupServer
from firstboot.core.config.mail import Mail
from firstboot.core.config.model import Appliance, Firewall, Identity
from firstboot.core.config.problems import Finding
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
    alerts: Alerts | None = None
    pruned: set[tuple[str, str]] = field(default_factory=set)
    # For each pruned list: the YAML position of each item kept.
    kept_positions: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def position(self, section: str, name: str, index: int) -> int:
        """Where item `index` of list `section.name` is in the YAML (items left out before
        it shift the index)."""
        kept = self.kept_positions.get((section, name))
        return kept[index] if kept is not None else index

    def in_yaml(self, finding: Finding) -> Finding:
        """`finding` with its path as written in the YAML."""
        path = finding.parts
        if len(path) > 2 and isinstance(path[2], int) and isinstance(path[0], str) \
                and isinstance(path[1], str):
            at = self.position(path[0], path[1], path[2])
            return replace(finding, parts=(path[0], path[1], at, *path[3:]))
        return finding

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
            alerts=appliance.alerts,
        )

    @classmethod
    def salvage(cls, raw: dict[str, object]) -> CheckedParts:
        """Validate each section on its own, keeping those that pass.

        Invalid entries of a list of mappings (a mailbox, a firewall rule) are
        left out so the rest of their section is still checked; `pruned` says
        which lists lost entries, for the rules that need them whole.
        """
        pruned: dict[tuple[str, str], list[int]] = {}
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
            alerts=_valid(Alerts, raw["alerts"]) if "alerts" in raw else Alerts(),
            pruned=set(pruned),
            kept_positions=pruned,
        )


def _valid(model: type[SectionT], value: object) -> SectionT | None:
    if value is None:
        return None
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _salvage(
    model: type[SectionT], raw: dict[str, object], name: str,
    pruned: dict[tuple[str, str], list[int]],
) -> SectionT | None:
    """`raw[name]` validated as `model`, without the invalid items of its lists of mappings;
    `pruned` gets the positions of the items kept in each list that lost some."""
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
        positions = [i for i, item in enumerate(items) if _valid(item_model, item) is not None]
        if len(positions) != len(items):
            kept[field_name] = [items[i] for i in positions]
            pruned[(name, field_name)] = positions
    return _valid(model, kept)


def _list_item_model(annotation: object) -> type[BaseModel] | None:
    if get_origin(annotation) is not list:
        return None
    item = get_args(annotation)[0]
    return item if isinstance(item, type) and issubclass(item, BaseModel) else None
