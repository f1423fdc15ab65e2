"""The files generated from the models, never edited by hand: schemas and reference pages.

python -m firstboot.core.generated           # write every file that drifted
python -m firstboot.core.generated --check   # exit 1 if one drifted (scripts/gen-config-docs)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from firstboot.core.config.schema_docs import (
    reference_docs,
    render_config_docs,
    render_schema_json,
    schema_json,
)
from firstboot.core.recipe import Recipe

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR = "scripts/gen-config-docs"


def render_recipe_schema_json() -> str:
    """The JSON Schema of recipe.yaml."""
    return schema_json(Recipe, "arkbox recipe.yaml")


def render_recipe_docs() -> str:
    """docs/recipes.md: every key of recipe.yaml."""
    return reference_docs(Recipe, _RECIPE_INTRO)


# path in the repository -> its renderer; `arkbox schema` writes the schemas, `arkbox docs`
# the pages.
SCHEMAS: dict[str, Callable[[], str]] = {
    "config/appliance.schema.json": render_schema_json,
    "config/recipe.schema.json": render_recipe_schema_json,
}
PAGES: dict[str, Callable[[], str]] = {
    "docs/config.md": render_config_docs,
    "docs/recipes.md": render_recipe_docs,
}


def drifted(root: Path = REPO_ROOT) -> list[tuple[Path, str]]:
    """The generated files under `root` that differ from their models, with the new text."""
    found = []
    for relative, render in {**SCHEMAS, **PAGES}.items():
        path = root / relative
        text = render()
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            found.append((path, text))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = args == ["--check"]
    stale = drifted()
    for path, text in stale:
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        print(f"{path.relative_to(REPO_ROOT)}: {'out of date' if check else 'written'}")
    if check and stale:
        print(f"regenerate with: {GENERATOR}")
        return 1
    return 0


_RECIPE_INTRO = """
<!-- Generated from firstboot/core/recipe.py by scripts/gen-config-docs. Do not edit by hand. -->
# recipe.yaml reference

Every service image is built from a recipe, `image/recipes/NAME/`: a `Dockerfile`
(what is in the image, built `FROM` the offline Debian base, see
[service-images.md](service-images.md)) and a `recipe.yaml`, which says how the
image is meant to run. Editors can validate as you type with
[`config/recipe.schema.json`](../config/recipe.schema.json).

```yaml
description: Radicale CalDAV/CardDAV server, file-based storage
user: {name: radicale, uid: 210, gid: 210}
ports:
  - {port: 5232, description: CalDAV/CardDAV over HTTP (behind the proxy)}
volumes:
  /var/lib/radicale/collections: {description: calendars and address books}
  /etc/radicale/users: {description: htpasswd file, read_only: true, file: true}
capabilities: {}
read_only: true
tmpfs: [/tmp]
egress: false
healthcheck:
  command: [/usr/local/bin/healthcheck]
  checks: GET /.web/ on 127.0.0.1:5232 answers 2xx/3xx
backup: {consistency: pause}
```

## Who reads it

- `arkbox build` checks every recipe it builds before it builds anything: a bad
  recipe fails the build with its file, the line and key of every problem, and a
  hint. It also checks that the recipe agrees with its Dockerfile: the image's
  `USER` is `user.name` (none, or root, with `user.starts_as_root`), and its
  `HEALTHCHECK` runs `healthcheck.command`. Then it lays each recipe.yaml into the
  image, at `/usr/share/arkbox/recipes/NAME/recipe.yaml`.
- At first boot the installer reads it with the same model to run the container:
  `--cap-drop ALL` plus `capabilities`; a read-only root unless `read_only: false`;
  the `tmpfs` mounts; the service's volumes, secret files and tmpfs mounts (other
  than `/tmp`) made for `user.uid` and `user.gid`; a secret value of a variable
  with `accepts_file` mounted as a file and named by `NAME_FILE` instead of put in
  the environment; an internal network unless `egress`; `mail` in `depends_on`
  brings the mail container onto the service's network; `stop_grace_seconds`.
- The other keys (`description`, `accounts`, `ports`, the descriptions of volumes
  and variables, `healthcheck.checks`, `backup`) document the image for whoever
  writes an appliance.yaml around it. How the appliance backs a service up is the
  config's `services.NAME.backup`.

As in appliance.yaml, values keep the type YAML gives them, and unknown keys and
keys written twice are errors. Comments in a recipe.yaml are for people: no code
reads them.
"""


if __name__ == "__main__":
    sys.exit(main())
