"""Every broken config under tests/data/bad-configs/ gives exactly its expected report.

NAME.yaml is the config; NAME.expected is what `format_problems` prints for it,
with the corpus directory shown as <dir>. After a deliberate change of wording,
rewrite the expectations with ARKBOX_UPDATE_EXPECTED=1 and review the diff.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from firstboot.core.config import ConfigInvalid, format_problems, load_config
from firstboot.core.errors import EXIT_BAD_INPUT

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad-configs"
REPO = Path(__file__).resolve().parents[2]
ARKBOX = REPO / ".venv" / "bin" / "arkbox"
BAD_CONFIGS = sorted(CORPUS.glob("*.yaml"))


def _report(config: Path) -> str:
    with pytest.raises(ConfigInvalid) as caught:
        load_config(config)
    return format_problems(caught.value, config.name).replace(str(CORPUS), "<dir>") + "\n"


def test_the_corpus_is_large_enough() -> None:
    assert len(BAD_CONFIGS) >= 25


@pytest.mark.parametrize("config", BAD_CONFIGS, ids=lambda p: p.stem)
def test_bad_config_reports_exactly_the_expected_problems(config: Path) -> None:
    expected_file = config.with_suffix(".expected")
    report = _report(config)
    if os.environ.get("ARKBOX_UPDATE_EXPECTED"):
        expected_file.write_text(report, encoding="utf-8")
    assert report == expected_file.read_text(encoding="utf-8")


@pytest.mark.parametrize("config", BAD_CONFIGS, ids=lambda p: p.stem)
def test_bad_config_is_bad_input(config: Path) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        load_config(config)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert caught.value.problems


def _cli_has_validate() -> bool:
    if not ARKBOX.exists():
        return False
    shown = subprocess.run([ARKBOX, "--help"], capture_output=True, text=True, check=False)
    return "validate" in shown.stdout


@pytest.mark.skipif(not _cli_has_validate(), reason="the arkbox CLI has no validate command yet")
@pytest.mark.parametrize("config", BAD_CONFIGS, ids=lambda p: p.stem)
def test_arkbox_validate_exits_2_and_prints_every_problem(config: Path) -> None:
    result = subprocess.run(
        [ARKBOX, "validate", config], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    printed = (result.stdout + result.stderr).replace(str(CORPUS), "<dir>")
    expected = config.with_suffix(".expected").read_text(encoding="utf-8")
    for line in expected.splitlines()[1:]:
        assert line.strip() in printed
