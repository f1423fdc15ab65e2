"""How problems are located and printed: paths, YAML lines, the report format."""

from __future__ import annotations

from pathlib import Path

import pytest

from firstboot.core.config import ConfigInvalid, Problem, format_problems, load_config
from firstboot.core.config.problems import dotted, format_warnings
from firstboot.core.config.yaml_source import YamlRejected, parse_yaml
from firstboot.core.errors import BadInputError


def test_problem_reads_like_the_ux_example() -> None:
    problem = Problem("services.wiki.route.port", "must be between 1 and 65535, got 70000", 12)
    assert (
        str(problem) == "line 12  services.wiki.route.port: must be between 1 and 65535, got 70000"
    )
    assert str(Problem("", "the file is empty")) == "the file is empty"


def test_report_counts_problems_and_aligns_hints() -> None:
    err = ConfigInvalid(
        Path("appliance.yaml"),
        [
            Problem("backup.restor", 'unknown key — did you mean "restore"?', 30),
            Problem("mail.domains", "at least one domain is needed", 7, "e.g. [arkbox.test]"),
        ],
    )
    assert format_problems(err) == (
        "appliance.yaml: 2 problems\n"
        '  line 30  backup.restor: unknown key — did you mean "restore"?\n'
        "  line 7  mail.domains: at least one domain is needed\n"
        "          hint: e.g. [arkbox.test]"
    )
    assert format_problems(err, "x.yaml").startswith("x.yaml: 2 problems")
    single = ConfigInvalid(Path("a.yaml"), [Problem("", "the file is empty")])
    assert format_problems(single) == "a.yaml: 1 problem\n  the file is empty"
    assert format_warnings("a.yaml", []) == ""


def test_config_invalid_is_bad_input_with_exit_code_2() -> None:
    err = ConfigInvalid(Path("a.yaml"), [Problem("", "the file is empty")])
    assert isinstance(err, BadInputError)
    assert err.exit_code == 2
    assert err.path == Path("a.yaml")


def test_dotted_paths_quote_keys_with_punctuation() -> None:
    assert dotted(("services", "wiki", "route", "port")) == "services.wiki.route.port"
    assert dotted(("mail", "mailboxes", 1, "address")) == "mail.mailboxes[1].address"
    assert dotted(("mail", "aliases", "postmaster@arkbox.test")) == (
        'mail.aliases["postmaster@arkbox.test"]'
    )


def test_lines_are_found_for_keys_items_and_missing_keys() -> None:
    document = parse_yaml("a:\n  b:\n    - x\n    - {c: 1}\n  d: [1,\n    2]\n")
    assert document.lines.line_of(("a",)) == 1
    assert document.lines.line_of(("a", "b", 1, "c")) == 4
    assert document.lines.line_of(("a", "d", 1)) == 6
    assert document.lines.line_of(("a", "b", "missing")) == 2


def test_duplicate_keys_are_found_at_the_second_one() -> None:
    document = parse_yaml("a: 1\nb: 2\na: 3\n")
    [duplicate] = document.duplicates
    assert duplicate.parts == ("a",) and duplicate.line == 3
    assert document.data == {"a": 3, "b": 2}


def test_recursive_alias_does_not_loop() -> None:
    document = parse_yaml("a: &x [*x]\n")
    assert document.lines.line_of(("a",)) == 1


@pytest.mark.parametrize(
    "text,line",
    [("a: [1, 2\nb: 3\n", 2), ("a: 1\n b: 2\n", 2), ("a:\n\t- 1\n", 2)],
)
def test_yaml_syntax_errors_carry_their_line(text: str, line: int) -> None:
    with pytest.raises(YamlRejected) as caught:
        parse_yaml(text)
    assert caught.value.problem.line == line
    assert caught.value.problem.message.startswith("YAML syntax error at column")


def test_missing_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        load_config(tmp_path / "nope.yaml")
    assert [p.message for p in caught.value.problems] == ["file not found"]


def test_every_problem_of_every_section_at_once(tmp_path: Path) -> None:
    config = tmp_path / "appliance.yaml"
    config.write_text(
        """\
appliance:
  name: t
  domain: arkbox.test
  hostname: arkbox.test
  admin: {ssh_keys: []}
mail:
  hostname: mail.arkbox.test
  domains: [arkbox.test]
  mailboxes: [{address: a@other.org, password_hash: "{X}y"}]
services:
  wiki: {recipe: dokuwiki, route: {hostname: wiki.arkbox.test, port: 0}}
  cal: {recipe: radicale, connects_to: [wki]}
backup: {restore: required}
firewall: {allow: [{port: 80, comment: web}]}
"""
    )
    with pytest.raises(ConfigInvalid) as caught:
        load_config(config)
    assert [(p.line, p.path) for p in caught.value.problems] == [
        (5, "appliance.admin.ssh_keys"),
        (9, "mail.mailboxes[0].address"),
        (11, "services.wiki.route.port"),
        (12, "services.cal.connects_to[0]"),
        (13, "backup.restore"),
        (14, "firewall.allow[0].port"),
    ]


ODD_DOCUMENTS = [
    "1: 2",
    "true: 1",
    "services: {null: {}}",
    "services: {123: {recipe: x}}",
    "services: {wiki: 5}",
    "mail: {aliases: {x: [1]}}",
    "? [a]\n: b",
    "appliance: !!python/object:os.system {}",
    "appliance: &a {name: *a}",
    "<<: {appliance: 1}",
    "services: {wiki: {environment: {X: {file: 1}}}}",
    "backup: {passphrase: []}",
    "appliance: {admin: {ssh_keys: ssh-ed25519 AAAA}}",
    "just text",
    "---\n...\n",
]


@pytest.mark.parametrize("text", ODD_DOCUMENTS)
def test_odd_documents_are_reported_not_crashed_on(tmp_path: Path, text: str) -> None:
    config = tmp_path / "appliance.yaml"
    config.write_text(text + "\n")
    with pytest.raises(ConfigInvalid) as caught:
        load_config(config)
    assert all(problem.message for problem in caught.value.problems)
    assert all(problem.line in (None, 1, 2) for problem in caught.value.problems)
