"""The environment manifest: what it records, that it holds no secret, atomic round trip."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from firstboot.containers.images import BakedImage
from firstboot.containers.naming import Naming
from firstboot.containers.recipe import load_recipe_runtime
from firstboot.containers.spec import ServiceSpec, service_specs, spec_hash
from firstboot.core.config import load_config
from firstboot.core.config.loader import DEFAULT_CONFIG_PATH
from firstboot.manifest import (
    EnvironmentManifest,
    changed_fields,
    manifest_service,
    read_manifest,
    render_manifest,
    write_manifest,
)

RECIPES = Path(__file__).resolve().parents[2] / "image" / "recipes"


def default_specs() -> dict[str, ServiceSpec]:
    config = load_config(DEFAULT_CONFIG_PATH, check_secrets=False)
    runtimes = {n: load_recipe_runtime(RECIPES, s.recipe or "") for n, s in config.services.items()}
    images = {n: BakedImage(s.recipe or "", f"arkbox/{s.recipe}:k", f"sha256:{n:0>64}")
              for n, s in config.services.items()}
    return service_specs(config, Naming(), Path("/srv/arkbox"), runtimes, images)


def default_manifest() -> EnvironmentManifest:
    specs = default_specs()
    return EnvironmentManifest(
        appliance="arkbox-test", config_sha256=None,
        services=[manifest_service(s, spec_hash(s)) for _, s in sorted(specs.items())],
        networks=[],
    )


def test_manifest_records_images_networks_volumes_routes_and_env_names() -> None:
    data = json.loads(render_manifest(default_manifest()))
    services = {s["name"]: s for s in data["services"]}
    webmail = services["webmail"]
    assert webmail["image"] == {"ref": "arkbox/roundcube:k", "id": "sha256:" + "0" * 57 + "webmail"}
    assert [n["network"] for n in webmail["networks"]] == ["arkbox-webmail", "arkbox-db"]
    assert webmail["route"]["hostname"] == "webmail.arkbox.test"
    assert services["db"]["volumes"][0]["host_path"] == "/srv/arkbox/volumes/db/data"
    assert services["db"]["environment"]["POSTGRES_USER"] == "roundcube"


def test_manifest_holds_no_secret_value() -> None:
    text = render_manifest(default_manifest()).decode()
    secrets_dir = DEFAULT_CONFIG_PATH.parent / "secrets"
    for secret in ("webmail-db-password", "webmail-des-key", "radicale-users"):
        value = (secrets_dir / secret).read_text().strip()
        assert value not in text


def test_write_is_atomic_idempotent_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "srv/arkbox/manifest.json"
    manifest = default_manifest()
    assert write_manifest(path, manifest)
    assert not write_manifest(path, manifest)  # byte-identical: nothing written
    assert read_manifest(path) == manifest
    assert not list(path.parent.glob(".*"))  # no temp file left
    assert read_manifest(tmp_path / "absent.json") is None


def test_changed_fields_name_what_differs() -> None:
    spec = default_specs()["wiki"]
    before = manifest_service(spec, "a")
    after = manifest_service(dataclasses.replace(spec, image_id="sha256:" + "e" * 64,
                                                 memory_bytes=1), "b")
    assert changed_fields(before, after) == ["image", "runtime.memory_bytes"]
    assert changed_fields(before, before) == []
