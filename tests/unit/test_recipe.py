"""recipe.yaml: one model (firstboot.core.recipe) read by the builder and the installer."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.pipeline.service_images import check_recipes, dockerfile_problems
from firstboot.containers.recipe import RecipeRuntime, load_recipe_runtime, recipe_runtime
from firstboot.core.errors import BadInputError
from firstboot.core.recipe import Recipe, RecipeInvalid, load_recipe
from firstboot.core.step import StepFailed

RECIPES = Path(__file__).resolve().parents[2] / "image" / "recipes"
NAMES = sorted(p.parent.name for p in RECIPES.glob("*/Dockerfile"))
# The least a recipe says: what it is, who runs it, its health check and backup.
MINIMAL = {
    "description": "x",
    "user": {"name": "root", "uid": 0, "gid": 0},
    "healthcheck": {"command": ["/usr/local/bin/healthcheck"], "checks": "it runs"},
    "backup": {"consistency": "none"},
}


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(RecipeInvalid) as caught:
        load_recipe(path, known_recipes=NAMES)
    assert caught.value.path == path
    return [f"{p}" + (f" | hint: {p.hint}" if p.hint else "") for p in caught.value.problems]


# --- every recipe of the repository ------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_recipe_is_valid_and_its_dependencies_exist(name: str) -> None:
    recipe = load_recipe(RECIPES / name / "recipe.yaml", known_recipes=NAMES)
    assert recipe.description and recipe.healthcheck.command


def test_recipe_runtime_reads_user_caps_and_file_variables() -> None:
    postgres = load_recipe_runtime(RECIPES, "postgres")
    assert (postgres.uid, postgres.gid, postgres.read_only) == (220, 220, True)
    assert postgres.capabilities == ()
    assert postgres.file_env == {"POSTGRES_PASSWORD"}
    roundcube = load_recipe_runtime(RECIPES, "roundcube")
    assert (roundcube.uid, roundcube.gid) == (33, 33)  # www-data
    assert {"ROUNDCUBE_DB_PASSWORD", "ROUNDCUBE_DES_KEY"} <= roundcube.file_env
    mail = load_recipe_runtime(RECIPES, "mail")
    assert "SETUID" in mail.capabilities and mail.tmpfs == ("/tmp", "/run", "/var/cache/rspamd")


def test_recipe_runtime_defaults_are_the_hardened_ones() -> None:
    runtime = recipe_runtime("x", Recipe.model_validate(MINIMAL))
    assert runtime == RecipeRuntime(name="x")
    assert (runtime.read_only, runtime.capabilities, runtime.egress) == (True, (), False)


def test_a_missing_recipe_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match=r"recipe\.yaml is missing") as failed:
        load_recipe_runtime(tmp_path, "nope")
    assert failed.value.hint and "/usr/share/arkbox/recipes" in failed.value.hint


def test_recipe_declares_mail_use_in_depends_on() -> None:
    def runtime(depends_on: list[str]) -> RecipeRuntime:
        return recipe_runtime("x", Recipe.model_validate({**MINIMAL, "depends_on": depends_on}))

    assert runtime(["postgres", "mail"]).mail_client
    assert not runtime(["postgres"]).mail_client


def test_facts_once_in_prose_are_fields_now() -> None:
    backup_server = load_recipe(RECIPES / "backup-server" / "recipe.yaml")
    assert (backup_server.user.name, backup_server.user.uid, backup_server.user.gid) == (
        "borg", 240, 240)
    assert backup_server.user.starts_as_root
    assert backup_server.volumes["/etc/arkbox/authorized_keys"].read_only
    mail = load_recipe(RECIPES / "mail" / "recipe.yaml")
    assert {a.name: a.uid for a in mail.accounts}["vmail"] == 235
    assert [p.port for p in mail.ports] == [25, 465, 587, 143, 993]
    postgres = load_recipe(RECIPES / "postgres" / "recipe.yaml")
    assert postgres.backup.dump == ["pg_dumpall", "--clean", "--if-exists"]


# --- problems: every one at once, with its line and a hint -------------------------------


def test_a_bad_recipe_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, """\
description: x
capabilities: {cap_net_admin: scans, NET_RAWW: scans}
backup: {consistency: maybe}
stop_grace_seconds: 0
depends_on: [postgress]
""")
    assert problems == [
        "line 1  healthcheck: required key is missing | hint: Its health check; "
        "e.g. healthcheck: {command: [/usr/local/bin/healthcheck], checks: pg_isready}",
        "line 1  user: required key is missing | hint: The account the application runs as; "
        "e.g. user: {name: postgres, uid: 220, gid: 220}",
        'line 2  capabilities.NET_RAWW: "NET_RAWW" is not a Linux capability | '
        'hint: did you mean "NET_RAW"?',
        'line 2  capabilities.cap_net_admin: write capabilities as the engine does: '
        '"NET_ADMIN", got "cap_net_admin"',
        'line 3  backup.consistency: must be one of "pause", "dump", "none", got "maybe"',
        "line 4  stop_grace_seconds: must be between 1 and 300, got 0",
        'line 5  depends_on[0]: no recipe named "postgress" | hint: did you mean "postgres"?',
    ]


def test_unknown_keys_and_duplicates_are_refused(tmp_path: Path) -> None:
    text = "\n".join([
        "description: x",
        "user: {name: root, uid: 0, gid: 0}",
        "healthcheck: {command: [/bin/true], checks: it runs}",
        "backup: {consistency: none}",
        "egres: true",
        "description: y",
    ]) + "\n"
    assert problems_of(tmp_path, text) == [
        "line 5  egres: unknown key — did you mean \"egress\"?",
        "line 6  description: duplicate key (first on line 1); YAML keeps only the last "
        "value, silently",
    ]


def test_dump_consistency_needs_its_commands(tmp_path: Path) -> None:
    base = "description: x\nuser: {name: root, uid: 0, gid: 0}\n" \
           "healthcheck: {command: [/bin/true], checks: it runs}\n"
    (problem,) = problems_of(tmp_path, base + "backup: {consistency: dump, dump: [pg_dumpall]}\n")
    assert problem.startswith("line 4  backup: consistency dump needs both dump and restore")
    (problem,) = problems_of(tmp_path, base + "backup: {consistency: pause, dump: [x]}\n")
    assert problem == "line 4  backup: dump and restore are only for consistency dump, not pause"


def test_recipe_text_is_one_line(tmp_path: Path) -> None:
    # A lone \r passed the old pattern (^[^\n]+$); descriptions reach comments and docs.
    base = "user: {name: root, uid: 0, gid: 0}\nbackup: {consistency: pause}\n" \
           "healthcheck: {command: [/bin/true], checks: it runs}\n"
    (problem,) = problems_of(tmp_path, 'description: "x\\ry"\n' + base)
    assert problem.startswith("line 1  description: must be one line: holds a carriage return")
    (problem,) = problems_of(tmp_path, 'description: x\ncapabilities: {"CHOWN\\n": y}\n' + base)
    assert "must be one line" in problem


def test_env_file_support_is_a_field_not_prose(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, """\
description: x
user: {name: root, uid: 0, gid: 0}
healthcheck: {command: [/bin/true], checks: it runs}
backup: {consistency: none}
env:
  DB_PASSWORD: the password (or DB_PASSWORD_FILE)
""")
    assert problem.startswith("line 6  env.DB_PASSWORD: must be a mapping")


def test_ids_ports_and_repeats_are_checked(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, """\
description: x
user: {name: Bad User, uid: 70000, gid: -1}
ports: [{port: 80, description: http}, {port: 80, description: again}]
tmpfs: [/tmp, /run, /tmp]
healthcheck: {command: [], checks: it runs}
backup: {consistency: none}
""")
    assert problems == [
        "line 2  user.gid: must be between 0 and 65535, got -1",
        "line 2  user.name: must be a Unix account name (lower-case letters, digits, _ and -, "
        'at most 32), got "Bad User"',
        "line 2  user.uid: must be between 0 and 65535, got 70000",
        "line 3  ports: lists 80 more than once",
        "line 4  tmpfs: lists /tmp more than once",
        "line 5  healthcheck.command: must have at least 1 item",
    ]


def test_an_empty_or_listed_recipe_gets_a_recipe_hint(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, "")
    assert "the file is empty" in problem and "docs/recipes.md" in problem
    (problem,) = problems_of(tmp_path, "- description: x\n")
    assert "the top level must be a mapping of keys (description:, user:, ...)" in problem


def test_the_installer_says_what_is_wrong_with_a_recipe_on_the_box(tmp_path: Path) -> None:
    (tmp_path / "wiki").mkdir()
    (tmp_path / "wiki" / "recipe.yaml").write_text("description: x\n")
    with pytest.raises(StepFailed) as failed:
        load_recipe_runtime(tmp_path, "wiki")
    assert failed.value.message.startswith(
        f"recipe 'wiki': {tmp_path}/wiki/recipe.yaml: 3 problems")
    assert "  line 1  user: required key is missing" in failed.value.message
    assert failed.value.hint and "rebuild the image" in failed.value.hint


# --- the build checks every recipe it builds, before building anything -------------------


def recipe_dir(root: Path, name: str, recipe: str, dockerfile: str) -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "recipe.yaml").write_text(recipe)
    (root / name / "Dockerfile").write_text(dockerfile)
    return root / name


GOOD_RECIPE = """\
description: x
user: {name: app, uid: 100, gid: 100}
healthcheck: {command: [/usr/local/bin/healthcheck], checks: it runs}
backup: {consistency: none}
"""
GOOD_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
USER app
HEALTHCHECK --interval=30s CMD ["/usr/local/bin/healthcheck"]
"""


def test_the_build_checks_the_recipes_it_builds(tmp_path: Path) -> None:
    recipe_dir(tmp_path, "app", GOOD_RECIPE, GOOD_DOCKERFILE)
    recipe_dir(tmp_path, "bad", "description: x\n", GOOD_DOCKERFILE)
    assert list(check_recipes(tmp_path, ["app"])) == ["app"]
    with pytest.raises(RecipeInvalid) as caught:
        check_recipes(tmp_path, ["app", "bad"])
    assert caught.value.path == tmp_path / "bad" / "recipe.yaml"
    with pytest.raises(BadInputError, match="no recipe for nope"):
        check_recipes(tmp_path, ["nope"])


def test_a_recipe_without_recipe_yaml_fails_the_build(tmp_path: Path) -> None:
    recipe_dir(tmp_path, "app", GOOD_RECIPE, GOOD_DOCKERFILE).joinpath("recipe.yaml").unlink()
    with pytest.raises(RecipeInvalid) as caught:
        check_recipes(tmp_path, ["app"])
    assert [p.message for p in caught.value.problems] == ["file not found"]


def test_the_recipe_must_agree_with_its_dockerfile() -> None:
    recipe = Recipe.model_validate({**MINIMAL, "user": {"name": "app", "uid": 1, "gid": 1}})
    assert dockerfile_problems(recipe, "USER app\n" + GOOD_DOCKERFILE) == []
    problems = dockerfile_problems(recipe, "FROM x\nHEALTHCHECK CMD /bin/true\n")
    assert [(p.path, p.message) for p in problems] == [
        ("user", "the image runs as root (the Dockerfile's USER), the recipe says app"),
        ("healthcheck.command",
         "the Dockerfile's HEALTHCHECK runs /bin/true, not this command"),
    ]
    # sshd starts as root and changes to the account itself: the image has no USER
    root_first = Recipe.model_validate(
        {**MINIMAL, "user": {"name": "borg", "uid": 240, "gid": 240, "starts_as_root": True}})
    assert dockerfile_problems(root_first, GOOD_DOCKERFILE.replace("USER app\n", "")) == []
