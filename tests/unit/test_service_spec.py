"""Service specs from the config: hardening, secrets as files, the hash that drives reconcile."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from firstboot.containers.images import BakedImage
from firstboot.containers.naming import Naming
from firstboot.containers.recipe import load_recipe_runtime
from firstboot.containers.spec import (
    ServiceSpec,
    network_specs,
    secret_digest,
    service_specs,
    spec_hash,
    start_order,
)
from firstboot.core.config import Appliance, SecretRef, load_config
from firstboot.core.config.loader import DEFAULT_CONFIG_PATH

RECIPES = Path(__file__).resolve().parents[2] / "image" / "recipes"
DATA = Path("/srv/arkbox")


@pytest.fixture(scope="module")
def config() -> Appliance:
    return load_config(DEFAULT_CONFIG_PATH, check_secrets=False)


def specs_for(config: Appliance) -> dict[str, ServiceSpec]:
    runtimes = {n: load_recipe_runtime(RECIPES, s.recipe or "") for n, s in config.services.items()}
    images = {n: BakedImage(s.recipe or "", f"arkbox/{s.recipe}:k", f"sha256:{n:0>64}")
              for n, s in config.services.items()}
    return service_specs(config, Naming(), DATA, runtimes, images)


def with_services(config: Appliance, **changes: dict[str, object] | None) -> Appliance:
    """default.yaml with some services' fields replaced (None removes the service)."""
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    for name, fields in changes.items():
        if fields is None:
            data["services"].pop(name)
        else:
            data["services"].setdefault(name, {}).update(fields)
    return Appliance.model_validate(data)


# --- specs ----------------------------------------------------------------------------


def test_every_service_gets_its_own_internal_network_and_no_ports(config: Appliance) -> None:
    specs = specs_for(config)
    assert set(specs) == {"calendar", "wiki", "webmail", "db"}
    for name, spec in specs.items():
        assert spec.container == f"arkbox-{name}"
        assert spec.attachments[0].network == f"arkbox-{name}"
        assert spec.attachments[0].internal  # no recipe here needs egress
        assert spec.published_ports == ()
    networks = network_specs(specs)
    assert sorted(networks) == ["arkbox-calendar", "arkbox-db", "arkbox-webmail", "arkbox-wiki"]


def test_connects_to_joins_the_other_service_network(config: Appliance) -> None:
    webmail = specs_for(config)["webmail"]
    assert [(a.network, a.aliases) for a in webmail.attachments] == [
        ("arkbox-webmail", ("webmail",)), ("arkbox-db", ("webmail",))]
    assert webmail.depends_on == ("db",)
    # db itself answers as "db" on its own network
    assert specs_for(config)["db"].attachments[0].aliases == ("db",)


def test_hardening_comes_from_recipe_and_resources(config: Appliance) -> None:
    db = specs_for(config)["db"]
    assert db.read_only and db.cap_add == ()
    assert db.memory_bytes == 512 * 1024**2 and db.pids_limit == 256
    assert dict(db.tmpfs)["/tmp"].startswith("rw,nosuid,nodev,noexec")
    assert db.volumes[0].host_path == "/srv/arkbox/volumes/db/data"
    assert (db.volumes[0].uid, db.volumes[0].gid) == (220, 220)


def test_env_secret_becomes_a_file_when_the_app_reads_name_file() -> None:
    config = Appliance.model_validate({
        "appliance": {"name": "t", "domain": "t.test", "hostname": "t.test",
                      "admin": {"ssh_keys": [_KEY]}},
        "services": {
            "db": {"recipe": "postgres",
                   "environment": {"POSTGRES_PASSWORD": {"file": "secrets/pw"},
                                   "OTHER_TOKEN": {"env": "TOKEN"}, "TZ": "Etc/UTC"}},
        },
    })
    spec = specs_for(config)["db"]
    env = dict(spec.environment)
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/arkbox-secrets/POSTGRES_PASSWORD"
    assert "POSTGRES_PASSWORD" not in env and env["TZ"] == "Etc/UTC"
    (secret,) = spec.secret_files
    assert secret.host_path == "/srv/arkbox/secrets/mounts/db/env-POSTGRES_PASSWORD"
    assert (secret.uid, secret.ref) == (220, SecretRef(file="secrets/pw"))
    # An app that cannot read a file gets the env variable, resolved at creation.
    assert [n for n, _ in spec.secret_environment] == ["OTHER_TOKEN"]


def test_secret_files_are_mounted_per_service(config: Appliance) -> None:
    calendar = specs_for(config)["calendar"]
    (users,) = calendar.secret_files
    assert users.container_path == "/etc/radicale/users"
    assert users.host_path == "/srv/arkbox/secrets/mounts/calendar/etc_radicale_users"
    assert (users.uid, users.gid) == (210, 210)


def test_http_healthcheck_runs_in_bash_on_the_route_port(config: Appliance) -> None:
    calendar = specs_for(config)["calendar"]
    assert calendar.healthcheck is not None
    test = calendar.healthcheck.test
    assert test[:3] == ("CMD", "/bin/bash", "-c")
    assert "/dev/tcp/127.0.0.1/5232" in test[3] and "/.web/" in test[3]
    assert calendar.healthcheck.interval_s == 30 and calendar.healthcheck.retries == 3
    db = specs_for(config)["db"]
    assert db.healthcheck is not None
    assert db.healthcheck.test == ("CMD", "/usr/local/bin/healthcheck")


def test_start_order_puts_dependencies_first(config: Appliance) -> None:
    order = start_order(specs_for(config))
    assert order.index("db") < order.index("webmail")
    assert sorted(order) == sorted(config.services)


def test_a_test_root_gets_its_own_names() -> None:
    assert Naming.for_root(Path("/")).prefix == "arkbox"
    test_naming = Naming.for_root(Path("/tmp/x"))
    assert test_naming.prefix.startswith("arkbox-t") and test_naming != Naming.for_root(Path("/y"))
    assert test_naming.filters("service")["label"] == [
        "arkbox.owner=arkbox", f"arkbox.instance={test_naming.prefix}", "arkbox.role=service"]


# --- the hash ------------------------------------------------------------------------


def test_hash_is_stable(config: Appliance) -> None:
    first = {n: spec_hash(s) for n, s in specs_for(config).items()}
    again = {n: spec_hash(s) for n, s in specs_for(config).items()}
    assert first == again
    assert len(set(first.values())) == len(first)


@pytest.mark.parametrize("change", [
    {"image_id": "sha256:" + "f" * 64},
    {"environment": (("TZ", "Europe/Paris"),)},
    {"memory_bytes": 1},
    {"read_only": False},
    {"cap_add": ("CHOWN",)},
    {"command": ("radicale", "--debug")},
])
def test_hash_changes_with_what_the_container_is_made_of(
        config: Appliance, change: dict[str, object]) -> None:
    calendar = specs_for(config)["calendar"]
    assert spec_hash(dataclasses.replace(calendar, **change)) != spec_hash(calendar)  # type: ignore[arg-type]


def test_a_route_change_does_not_recreate_the_service(config: Appliance) -> None:
    before = specs_for(config)["wiki"]
    moved = with_services(config, wiki={"route": {"hostname": "docs.arkbox.test", "port": 80}})
    after = specs_for(moved)["wiki"]
    assert after.route is not None and after.route.hostname == "docs.arkbox.test"
    assert spec_hash(after) == spec_hash(before)


def test_env_secret_values_enter_the_hash_only_as_digests(config: Appliance) -> None:
    spec = dataclasses.replace(specs_for(config)["calendar"],
                               secret_environment=(("API_TOKEN", SecretRef(env="T")),))
    one = spec_hash(spec, {"API_TOKEN": secret_digest("one")})
    two = spec_hash(spec, {"API_TOKEN": secret_digest("two")})
    assert one != two


_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF6YilbxuYcReyoVRXRnJrBiinY8edFG7Xgx8AxGsXkQ "
        "ops@laptop")


# --- the mail server's clients ---------------------------------------------------------


def test_only_webmail_recipes_bring_the_mail_server_onto_their_network(
        config: Appliance) -> None:
    from firstboot.mail.container import mail_client_networks

    runtimes = {n: load_recipe_runtime(RECIPES, s.recipe or "") for n, s in config.services.items()}
    assert runtimes["webmail"].mail_client  # roundcube's recipe: depends_on [postgres, mail]
    assert not any(runtimes[n].mail_client for n in ("calendar", "wiki", "db"))
    networks = mail_client_networks(config, Naming(), runtimes)
    # The mail container joins arkbox-webmail only, as the services step makes it
    # (internal: the webmail gets no egress from this); wiki, calendar, db never see it.
    assert [(n.name, n.service, n.internal) for n in networks] == [
        ("arkbox-webmail", "webmail", True)]
    assert networks[0] == network_specs(specs_for(config))["arkbox-webmail"]


def test_no_mail_networks_while_mail_is_off(config: Appliance) -> None:
    from firstboot.mail.container import mail_client_networks

    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["mail"]["enabled"] = False
    off = Appliance.model_validate(data)
    runtimes = {n: load_recipe_runtime(RECIPES, s.recipe or "") for n, s in off.services.items()}
    assert mail_client_networks(off, Naming(), runtimes) == []
