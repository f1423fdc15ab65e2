"""A JSON Schema and a reference page from a model: appliance.yaml's, recipe.yaml's.

config/appliance.schema.json and docs/config.md are the appliance config's;
firstboot.core.generated lists every generated file and writes or checks them.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from firstboot.core.config.base import Kind
from firstboot.core.config.messages import flow_yaml
from firstboot.core.config.model import Appliance
from firstboot.core.config.secrets import SecretRef


def render_schema_json() -> str:
    """The JSON Schema of appliance.yaml (for editors and other tools)."""
    return schema_json(Appliance, "arkbox appliance.yaml")


def render_config_docs() -> str:
    """docs/config.md: every key with its type, default, meaning and an example."""
    return reference_docs(Appliance, _INTRO)


def schema_json(model: type[BaseModel], title: str) -> str:
    """The JSON Schema of the YAML file `model` reads."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **model.model_json_schema(),
        "title": title,
    }
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def reference_docs(model: type[BaseModel], intro: str) -> str:
    """A reference page: `intro`, then every mapping with its keys' type, default, meaning
    and an example."""
    sections = list(_sections(model, "", 2))
    contents = [f"- [`{path}`](#{_anchor(path)})" for path, _, _ in sections]
    body = _section("top level", model, 2, title="The top level")
    for path, section, level in sections:
        body.extend(_section(path, section, level))
    contents.insert(0, "- [The top level](#the-top-level)")
    return "\n".join([intro.strip(), "", "## Contents", "", *contents, "", *body]).rstrip() + "\n"


def _sections(
    model: type[BaseModel], prefix: str, level: int
) -> Iterator[tuple[str, type[BaseModel], int]]:
    """Every mapping in the config, depth first, as (dotted path, model, heading level)."""
    if prefix:
        yield prefix, model, level
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        nested, suffix = _nested_model(info.annotation)
        if nested is not None and nested is not SecretRef:
            yield from _sections(nested, path + suffix, level + 1 if prefix else level)


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """The model a field holds, directly or as items of a list or mapping."""
    suffix = ""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return None, ""
            annotation = members[0]
        elif origin is list:
            annotation, suffix = get_args(annotation)[0], suffix + "[]"
        elif origin is dict:
            annotation, suffix = get_args(annotation)[1], suffix + ".<name>"
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation, suffix
        else:
            return None, ""


def _section(path: str, model: type[BaseModel], level: int, title: str | None = None) -> list[str]:
    heading = title or f"`{path}`"
    lines = [f"{'#' * level} {heading}", "", _clean(model.__doc__), ""]
    lines += ["| key | type | default | description | example |", "|---|---|---|---|---|"]
    for name, info in model.model_fields.items():
        cells = [
            f"`{name}`",
            _type_name(info.annotation, info.metadata, path if title is None else "", name),
            _default(info),
            info.description or "",
            f"`{flow_yaml(info.examples[0])}`" if info.examples else "",
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines.append("")
    return lines


def _type_name(annotation: Any, metadata: Sequence[object], path: str, name: str) -> str:
    for item in metadata:
        if isinstance(item, Kind):
            return item.name
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0], args[1:], path, name)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        return " or ".join(_type_name(m, (), path, name) for m in members)
    if origin is Literal:
        return "one of " + ", ".join(f"`{choice}`" for choice in args)
    if origin is list:
        return "list of " + _type_name(args[0], (), path, name + "[]")
    if origin is dict:
        key = _type_name(args[0], (), path, name)
        return f"mapping of {key} to " + _type_name(args[1], (), path, name + ".<name>")
    if annotation is SecretRef:
        return "[secret reference](#secrets)"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        target = f"{path}.{name}" if path else name
        return f"mapping, see [`{target}`](#{_anchor(target)})"
    simple = {str: "text", int: "integer", bool: "true or false", float: "number"}
    return simple.get(annotation, str(annotation))


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "absent"
    if isinstance(value, BaseModel):
        changed = value.model_dump(exclude_defaults=True)
        return f"`{flow_yaml(changed)}`" if changed else "defaults"
    if isinstance(value, list) and any(isinstance(item, BaseModel) for item in value):
        value = [item.model_dump(exclude_defaults=True) if isinstance(item, BaseModel) else item
                 for item in value]
    return f"`{flow_yaml(value)}`"


def _anchor(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def _clean(text: str | None) -> str:
    return " ".join((text or "").split("\n\n")[0].split())


_INTRO = """
<!-- Generated from firstboot/core/config by scripts/gen-config-docs. Do not edit by hand. -->
# appliance.yaml reference

One YAML file describes the whole appliance. `arkbox build` with no argument
uses the embedded default, [`config/default.yaml`](../config/default.yaml);
more examples are in [`config/examples/`](../config/examples/). Editors can
validate as you type with [`config/appliance.schema.json`](../config/appliance.schema.json).

## Checking a config

`arkbox validate [FILE]` reports every problem at once, each with its YAML
line, its path and, where it helps, a hint; the exit code is 2 when the config
is invalid:

```
$ arkbox validate appliance.yaml
appliance.yaml: 3 problems
  line 12  services.wiki.route.port: must be between 1 and 65535, got 70000
  line 30  backup.restor: unknown key — did you mean "restore"?
  line 41  mail.mailboxes[1].address: "info@other.org" is not in mail.domains (arkbox.test)
           hint: add "other.org" to mail.domains, or fix the address
```

Values keep the type YAML gives them: `port: "80"` is text, not a port, and
unquoted `yes`, `no`, `on`, `off` are booleans. Unknown keys are errors, and
so is a key written twice in the same mapping.

Every text value is one line: a line break (`\\n`, `\\r`, the Unicode line
separators), a NUL or another control character is refused wherever it is
(a tab is fine). Values end up in line-based files (systemd units,
`authorized_keys`, Postfix and Dovecot tables), where a line break would add a
line of its own. The exceptions are a service's command arguments
(`command`, `dump_command`, `restore_command`, the health check's) and its
`environment` values: they reach the container engine as data and may span
lines (a script for `sh -c`, a PEM), though never hold a NUL. SSH public keys
are written out anew from their fields (type, key data, comment), never as
given.

Besides each value's own type, these are checked across the file:

- `appliance.admin.ssh_keys` holds at least one key;
- with mail enabled: `mail.hostname` and `mail.domains` are given, every
  mailbox and alias is in one of the domains, every mailbox has exactly one of
  `password` or `password_hash`, and an alias target in one of the domains is a
  mailbox or another alias;
- a service has exactly one of `recipe` or `image`; `connects_to` names
  existing services; two routes never share a host name and path, and no route
  uses the mail host name or the appliance's own host name;
- `consistency: dump` comes with `dump_command` and `restore_command`;
- `backup.restore: required` needs `backup.repository`, and a repository
  needs a `passphrase`;
- `firewall.allow` does not repeat a port, nor list one that is always open;
- alert emails have a way out: with the box's own mail server and neither
  `alerts.email.smtp` nor `mail.relay`, every address in `alerts.email.to` must be
  in `mail.domains` (the box relays for nobody); an `alerts.email.smtp.username`
  comes with a `password`, and never with `security: none`;
- `backup_server.clients` do not repeat a name, and their paths, compared as
  the directories they name below `/srv/borg` (`./a`, `./a/` and
  `/srv/borg/a` are one), neither meet nor nest (`./a` and `./a/b`).

## Secrets

A secret (a password, a passphrase, a private key) is never written in the
config. Where a secret is expected, write a *secret reference*:

- `{file: secrets/NAME}`: the content of a file, relative to the config
  file's directory (or absolute); one trailing newline is ignored;
- `{env: NAME}`: the value of an environment variable where arkbox runs.

A plain string where a secret is expected is an error. Secrets are read only
when used, and never printed or logged.

`arkbox validate` checks that every referenced file (secrets and
`tls.ca_bundle`) exists, is a readable regular file and is not empty. A secret
file that other users can read (any mode wider than 0600), or an environment
variable that is not set, is a *warning*, not an error: a git checkout does not
keep file modes, and the build installs every secret with mode 0600 anyway.
Fix it with `chmod 0600 FILE`.

## Units

- sizes: a whole number then `K`, `M`, `G` or `T` (powers of 1024): `512M`, `4G`;
- durations: a whole number then `ms`, `s`, `m` or `h`: `30s`, `5m`;
- periods (alert thresholds): a whole number then `m`, `h` or `d`: `5m`, `26h`, `14d`;
- schedules: a systemd OnCalendar expression (`daily`, `*-*-* 03:00`),
  checked with `systemd-analyze calendar EXPR`; letters, digits, spaces and
  `* , . / : ~ _ + -` only.
"""

