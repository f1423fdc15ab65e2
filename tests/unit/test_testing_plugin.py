"""The pytest plugin (builder.testing): which config a module's box is built from, the
error when that config is not there, where builds go, the rig's name, the first-boot
failure message; and, through a pytest run of its own, that the plugin is loaded by its
entry point, registers its marker and options, and fails a fixture with what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.rig.journal_follow import BootOutcome
from builder.testing import choice
from builder.testing.boxes import first_boot_failure
from firstboot.core.errors import BadInputError

DEFAULT = Path("/src/arkbox/config/default.yaml")


def given(path: str, source: str, base: str = "/base") -> choice.ConfigChoice:
    return choice.ConfigChoice(path, source, Path(base))


def test_the_marker_wins_over_the_option_the_ini_and_the_default() -> None:
    chosen = choice.choose(given("m.yaml", "marker"), given("o.yaml", "option"),
                           given("i.yaml", "ini"), DEFAULT)
    assert chosen.source == "marker"


def test_without_a_marker_the_command_line_wins_over_the_ini() -> None:
    assert choice.choose(None, given("o.yaml", "option"), given("i.yaml", "ini"),
                         DEFAULT).source == "option"
    assert choice.choose(None, None, given("i.yaml", "ini"), DEFAULT).source == "ini"


def test_with_nothing_given_the_default_config() -> None:
    chosen = choice.choose(None, given("", "option"), None, DEFAULT)
    assert chosen.path == DEFAULT
    assert "default" in chosen.source


def test_a_relative_path_is_relative_to_its_base_an_absolute_one_is_kept() -> None:
    assert given("../box.yaml", "m", "/suite/tests").path == Path("/suite/tests/../box.yaml")
    assert given("/etc/box.yaml", "m", "/suite/tests").path == Path("/etc/box.yaml")


def test_the_marker_is_relative_to_the_test_module() -> None:
    marked = choice.marker_choice(("../box.yaml",), Path("/suite/tests/test_box.py"))
    assert marked.base == Path("/suite/tests")
    assert "test_box.py" in marked.source


@pytest.mark.parametrize("args", [(), ("a.yaml", "b.yaml"), (3,), ("",)])
def test_a_misused_marker_says_how_to_write_it(args: tuple[object, ...]) -> None:
    with pytest.raises(BadInputError) as raised:
        choice.marker_choice(args, Path("/suite/tests/test_box.py"))
    assert "takes one path" in raised.value.message
    assert raised.value.hint is not None and "pytestmark" in raised.value.hint


def test_a_missing_config_says_what_where_and_what_to_do(tmp_path: Path) -> None:
    chosen = given("../nowhere.yaml", "the arkbox_config marker of test_box.py",
                   str(tmp_path / "tests"))
    with pytest.raises(BadInputError) as raised:
        choice.existing_config(chosen)
    message = raised.value.message
    assert "'../nowhere.yaml'" in message
    assert "the arkbox_config marker of test_box.py" in message
    assert "does not exist" in message
    assert str(tmp_path / "nowhere.yaml") in message  # where it looked, resolved
    assert f"relative to {tmp_path / 'tests'}" in message
    assert raised.value.hint is not None and "fix the path" in raised.value.hint


def test_a_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="is a directory"):
        choice.existing_config(given(str(tmp_path), "option"))


def test_an_existing_config_comes_back_absolute(tmp_path: Path) -> None:
    (tmp_path / "box.yaml").write_text("appliance: {}\n")
    assert choice.existing_config(given("box.yaml", "ini", str(tmp_path))) == \
        tmp_path / "box.yaml"


def test_each_config_builds_into_a_folder_of_its_own() -> None:
    out = Path("/var/tmp/out")
    one = choice.out_dir_for(Path("/a/appliance.yaml"), out)
    assert one == choice.out_dir_for(Path("/a/appliance.yaml"), out)
    assert one != choice.out_dir_for(Path("/b/appliance.yaml"), out)
    assert one.parent == out and one.name.startswith("appliance-")


def test_the_rig_name_is_fixed_per_config_and_out_folder() -> None:
    name = choice.rig_name_for(Path("/a/box.yaml"), Path("/out/box"))
    assert name == choice.rig_name_for(Path("/a/box.yaml"), Path("/out/box"))
    assert name != choice.rig_name_for(Path("/a/box.yaml"), Path("/other/box"))
    assert name.startswith("arkbox-pytest-")


def test_a_failed_first_boot_names_the_step_and_its_message() -> None:
    outcome = BootOutcome(False, 42, "first boot failed (it retries by itself)",
                          ["…", "✗ firstboot failed"])
    status = {"result": "failed",
              "failures": [{"step": "tls", "message": "no certificate: CA unreachable"}]}
    error = first_boot_failure(status, outcome, "rig-appliance")
    assert "step tls: no certificate: CA unreachable" in error.message
    assert "rig-appliance" in error.message and "42 s" in error.message
    assert error.hint is not None and "journalctl -u arkbox-firstboot" in error.hint


def test_without_status_the_failure_shows_the_journal_s_last_lines() -> None:
    outcome = BootOutcome(False, 900, "first boot not done after 900 s", ["one", "two"])
    assert "one / two" in first_boot_failure(None, outcome, "box").message


# ---------------------------------------------------------------- through pytest itself

def run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in tmp_path (no ini file, no conftest of this project), the plugin loaded
    only because the package is installed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "no:randomly", "--rootdir", str(tmp_path), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_the_plugin_is_loaded_and_registers_its_marker_and_options(tmp_path: Path) -> None:
    helped = run_pytest(tmp_path, "--help")
    assert "--arkbox-config=FILE" in helped.stdout and "--arkbox-keep" in helped.stdout
    markers = run_pytest(tmp_path, "--markers")
    assert "@pytest.mark.arkbox_config(path)" in markers.stdout


def test_a_module_whose_config_is_missing_errors_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "test_box.py").write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.arkbox_config('../no-such.yaml')\n"
        "def test_box(arkbox_config):\n"
        "    pass\n")
    result = run_pytest(tmp_path, "--strict-markers", "-q", "test_box.py")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "BadInputError: the arkbox config '../no-such.yaml' from the arkbox_config " \
           "marker of" in result.stdout
    assert "hint: fix the path" in result.stdout


def test_the_option_chooses_when_no_marker_does(tmp_path: Path) -> None:
    (tmp_path / "box.yaml").write_text("appliance: {}\n")
    (tmp_path / "test_box.py").write_text(
        "def test_box(arkbox_config):\n"
        "    assert arkbox_config.name == 'box.yaml'\n")
    result = run_pytest(tmp_path, "-q", "--arkbox-config", "box.yaml", "test_box.py")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 error"), ("", "1 skipped")])
def test_without_an_engine_the_fixtures_skip_and_fail_in_ci(tmp_path: Path, ci: str,
                                                           outcome: str,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setenv("CI", ci)
    (tmp_path / "test_box.py").write_text("def test_box(arkbox_builds):\n    pass\n")
    result = run_pytest(tmp_path, "-q", "-rs", "test_box.py")
    assert outcome in result.stdout, result.stdout + result.stderr
    assert "the arkbox fixtures need a running Docker Engine" in result.stdout
