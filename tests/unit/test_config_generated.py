"""The schemas and reference pages are generated from the models, never edited.

config/appliance.schema.json and docs/config.md from the appliance config;
config/recipe.schema.json and docs/recipes.md from the recipe model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from firstboot.core import generated
from firstboot.core.config import Appliance, render_config_docs, render_schema_json
from firstboot.core.generated import drifted, render_recipe_docs, render_recipe_schema_json
from firstboot.core.recipe import Recipe

REPO = Path(__file__).resolve().parents[2]
REGENERATE = "regenerate with scripts/gen-config-docs (or: arkbox schema && arkbox docs)"


def test_committed_schema_matches_the_model() -> None:
    committed = (REPO / "config" / "appliance.schema.json").read_text(encoding="utf-8")
    assert committed == render_schema_json(), REGENERATE


def test_committed_docs_match_the_model() -> None:
    committed = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == render_config_docs(), REGENERATE


def test_committed_recipe_schema_and_docs_match_the_model() -> None:
    committed = (REPO / "config" / "recipe.schema.json").read_text(encoding="utf-8")
    assert committed == render_recipe_schema_json(), REGENERATE
    committed = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
    assert committed == render_recipe_docs(), REGENERATE


def test_every_generated_file_is_listed_and_none_drifted() -> None:
    assert set(generated.SCHEMAS) == {"config/appliance.schema.json",
                                      "config/recipe.schema.json"}
    assert set(generated.PAGES) == {"docs/config.md", "docs/recipes.md"}
    assert drifted(REPO) == [], REGENERATE


def test_drift_is_found(tmp_path: Path) -> None:
    for relative, render in {**generated.SCHEMAS, **generated.PAGES}.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(render())
    assert drifted(tmp_path) == []
    (tmp_path / "docs" / "recipes.md").write_text("edited by hand\n")
    assert [path for path, _ in drifted(tmp_path)] == [tmp_path / "docs" / "recipes.md"]


def test_generation_is_deterministic() -> None:
    assert render_schema_json() == render_schema_json()
    assert render_config_docs() == render_config_docs()
    assert render_recipe_schema_json() == render_recipe_schema_json()
    assert render_recipe_docs() == render_recipe_docs()


def test_schema_is_the_models_and_forbids_unknown_keys() -> None:
    schema = json.loads(render_schema_json())
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["properties"]) == set(Appliance.model_fields)
    assert schema["required"] == ["appliance"]
    assert schema["additionalProperties"] is False
    assert all(d.get("additionalProperties") is False for d in schema["$defs"].values())


def test_recipe_schema_is_the_models_and_forbids_unknown_keys() -> None:
    schema = json.loads(render_recipe_schema_json())
    assert schema["title"] == "arkbox recipe.yaml"
    assert set(schema["properties"]) == set(Recipe.model_fields)
    assert schema["required"] == ["description", "user", "healthcheck", "backup"]
    assert schema["additionalProperties"] is False
    assert all(d.get("additionalProperties") is False for d in schema["$defs"].values())


def test_docs_list_every_section_and_key() -> None:
    docs = render_config_docs()
    for heading in ("`services.<name>.route`", "`mail.mailboxes[]`", "`backup.retention`",
                    "`build.hardening`"):
        assert f"## {heading}" in docs or f"### {heading}" in docs
    for key in ("restore", "connects_to", "dump_command", "allow_from", "ca_bundle",
                "auto_reboot", "auto_reboot_time", "journal_max_use", "ssh_required_rsa_size"):
        assert f"| `{key}` |" in docs


def test_recipe_docs_list_every_section_and_key() -> None:
    docs = render_recipe_docs()
    for heading in ("`user`", "`volumes.<name>`", "`env.<name>`", "`healthcheck`", "`backup`"):
        assert f"## {heading}" in docs
    for key in ("uid", "gid", "accepts_file", "egress", "command", "depends_on", "consistency"):
        assert f"| `{key}` |" in docs


def test_generator_script_check_mode_passes() -> None:
    # The script runs $PYTHON, or the checkout's .venv; the tests' own interpreter here.
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
    result = subprocess.run(
        [REPO / "scripts" / "gen-config-docs", "--check"], capture_output=True, text=True,
        env=env, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("command", ["schema", "docs"])
def test_arkbox_schema_and_docs_check_both_models(command: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", "import sys; from builder.cli import main; main(sys.argv[1:])",
            command, "--check"]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": up to date") == 2
