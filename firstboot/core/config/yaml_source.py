"""Read the YAML text of a config, keeping the line where every key and item starts."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from firstboot.core.config.problems import Finding, PathPart, Problem

Parts = tuple[PathPart, ...]

_YAML_HINTS = {
    "found character '\\t' that cannot start any token": "indent with spaces; YAML forbids tabs",
    "mapping values are not allowed here": 'check the indentation, and quote values holding ": "',
    "found undefined alias": "define the &anchor before using *alias",
}


class YamlRejected(Exception):
    """The text is not a YAML document arkbox can read; `problem` says why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass
class LineIndex:
    """Line (1-based) of every key and list item, by path."""

    lines: dict[Parts, int] = field(default_factory=dict)

    def line_of(self, parts: Parts) -> int | None:
        """The line of `parts`, or of its nearest ancestor that exists (a missing key)."""
        for end in range(len(parts), -1, -1):
            line = self.lines.get(parts[:end])
            if line is not None:
                return line
        return None


@dataclass
class YamlDocument:
    data: dict[str, object]
    lines: LineIndex
    duplicates: list[Finding]


# What an appliance.yaml's top level holds, and where to start from when it is empty.
_CONFIG_TOP_LEVEL = "sections (appliance:, services:, ...)"
_CONFIG_EMPTY_HINT = "start from config/default.yaml; docs/config.md lists every key"


def parse_yaml(
    text: str, *, top_level: str = _CONFIG_TOP_LEVEL, empty_hint: str = _CONFIG_EMPTY_HINT
) -> YamlDocument:
    """Parse one YAML document whose top level is a mapping; raise YamlRejected otherwise.

    top_level and empty_hint word the refusals for the kind of file (a recipe.yaml).
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        raise YamlRejected(_syntax_problem(err)) from err
    except yaml.YAMLError as err:
        raise YamlRejected(Problem("", f"not valid YAML: {err}")) from err
    finally:
        loader.dispose()
    if node is None:
        raise YamlRejected(
            Problem(
                "",
                "the file is empty",
                None,
                empty_hint,
            )
        )
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        got = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
        raise YamlRejected(
            Problem(
                "",
                f"the top level must be a mapping of {top_level}, got {got}",
                node.start_mark.line + 1,
            )
        )
    index = LineIndex({(): node.start_mark.line + 1})
    duplicates: list[Finding] = []
    _index_node(node, (), index, duplicates, set())
    return YamlDocument(data, index, duplicates)


def _index_node(
    node: yaml.Node,
    parts: Parts,
    index: LineIndex,
    duplicates: list[Finding],
    ancestors: set[int],
) -> None:
    # An alias can make a node its own descendant: stop rather than loop.
    if id(node) in ancestors:
        return
    inside = ancestors | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            line = key_node.start_mark.line + 1
            if key in seen:
                duplicates.append(
                    Finding(
                        (*parts, key),
                        f"duplicate key (first on line {seen[key]}); YAML keeps only the "
                        "last value, silently",
                        line=line,
                    )
                )
            seen.setdefault(key, line)
            index.lines[(*parts, key)] = line
            _index_node(value_node, (*parts, key), index, duplicates, inside)
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            index.lines[(*parts, position)] = item.start_mark.line + 1
            _index_node(item, (*parts, position), index, duplicates, inside)


def _syntax_problem(err: yaml.MarkedYAMLError) -> Problem:
    if err.context == "expected a single document in the stream" and err.problem_mark:
        return Problem(
            "",
            "a second YAML document starts here; a config is one document",
            err.problem_mark.line + 1,
            'remove this "---" and what follows it',
        )
    mark = err.problem_mark or err.context_mark
    what = err.problem or err.context or "cannot be parsed"
    line = mark.line + 1 if mark is not None else None
    column = f" at column {mark.column + 1}" if mark is not None else ""
    hint = _YAML_HINTS.get(what)
    if hint is None and err.context and err.context_mark is not None and err.problem_mark:
        hint = f"{err.context}, which starts on line {err.context_mark.line + 1}"
    return Problem("", f"YAML syntax error{column}: {what}", line, hint)
