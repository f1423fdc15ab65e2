"""config/appliance.schema.json and docs/config.md are generated from the model, never edited."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from firstboot.core.config import Appliance, render_config_docs, render_schema_json

REPO = Path(__file__).resolve().parents[2]
REGENERATE = "regenerate with scripts/gen-config-docs (or: arkbox schema && arkbox docs)"


def test_committed_schema_matches_the_model() -> None:
    committed = (REPO / "config" / "appliance.schema.json").read_text(encoding="utf-8")
    assert committed == render_schema_json(), REGENERATE


def test_committed_docs_match_the_model() -> None:
    committed = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == render_config_docs(), REGENERATE


def test_generation_is_deterministic() -> None:
    assert render_schema_json() == render_schema_json()
    assert render_config_docs() == render_config_docs()


def test_schema_is_the_models_and_forbids_unknown_keys() -> None:
    schema = json.loads(render_schema_json())
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["properties"]) == set(Appliance.model_fields)
    assert schema["required"] == ["appliance"]
    assert schema["additionalProperties"] is False
    assert all(d.get("additionalProperties") is False for d in schema["$defs"].values())


def test_docs_list_every_section_and_key() -> None:
    docs = render_config_docs()
    for heading in ("`services.<name>.route`", "`mail.mailboxes[]`", "`backup.retention`"):
        assert f"## {heading}" in docs or f"### {heading}" in docs
    for key in ("restore", "connects_to", "dump_command", "allow_from", "ca_bundle"):
        assert f"| `{key}` |" in docs


def test_generator_script_check_mode_passes() -> None:
    result = subprocess.run(
        [REPO / "scripts" / "gen-config-docs", "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
