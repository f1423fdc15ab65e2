"""How a recipe's image is meant to run, read from its recipe.yaml on the box.

The builder lays each recipe's `recipe.yaml` into /usr/share/arkbox/recipes/NAME/
(the installer cannot read the source tree). Only the fields that shape a
container are read here: capabilities, read-only root, tmpfs mounts, the user
(whose uid owns the volumes), the env variables that also accept NAME_FILE,
whether the app needs to reach the outside world, and whether it talks to the box's
mail server (`depends_on` names `mail`: the mail container joins its network).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from firstboot.core.step import StepFailed

TMP = "/tmp"  # noqa: S108 -- a path inside the container, always a private tmpfs
MAIL_DEPENDENCY = "mail"  # in a recipe's depends_on: the app uses the box's mail server
_UID = re.compile(r"\buid (\d+)")
_GID = re.compile(r"\bgid (\d+)")


@dataclass(frozen=True)
class RecipeRuntime:
    name: str
    capabilities: tuple[str, ...] = ()
    read_only: bool = True
    tmpfs: tuple[str, ...] = (TMP,)
    uid: int = 0
    gid: int = 0
    # env NAME whose value the app also reads from the file named by NAME_FILE
    file_env: frozenset[str] = field(default_factory=frozenset)
    declared_volumes: tuple[str, ...] = ()
    egress: bool = False
    stop_grace_seconds: int = 10
    # The app talks IMAP/submission to the box's mail server (webmail): the mail
    # container joins this service's network, reachable there as `mail`.
    mail_client: bool = False


# A service run from a pulled image: nothing is known about it, so it gets the
# hardened defaults minus the read-only root fs (most images write somewhere),
# and keeps egress (it may well need it, and we cannot tell).
UNKNOWN_IMAGE = RecipeRuntime(name="", read_only=False, egress=True)


def recipe_runtime_from(name: str, data: Mapping[str, Any]) -> RecipeRuntime:
    """The container-shaping part of a parsed recipe.yaml."""
    user = str(data.get("user", ""))
    uid_match = _UID.search(user)
    gid_match = _GID.search(user)
    uid = int(uid_match.group(1)) if uid_match else 0
    gid = int(gid_match.group(1)) if gid_match else uid
    env_docs = {str(k): str(v) for k, v in (data.get("env") or {}).items()}
    # recipe.yaml documents file variants in prose: "... (or POSTGRES_PASSWORD_FILE ...)".
    file_env = frozenset(n for n, doc in env_docs.items() if f"{n}_FILE" in doc)
    return RecipeRuntime(
        name=name,
        capabilities=tuple(sorted(str(c) for c in data.get("capabilities") or ())),
        read_only=bool(data.get("read_only", True)),
        tmpfs=tuple(str(t) for t in data.get("tmpfs") or (TMP,)),
        uid=uid,
        gid=gid,
        file_env=file_env,
        declared_volumes=tuple(str(v) for v in (data.get("volumes") or {})),
        egress=bool(data.get("egress", False)),
        stop_grace_seconds=int(data.get("stop_grace_seconds", 10)),
        mail_client=MAIL_DEPENDENCY in [str(d) for d in data.get("depends_on") or ()],
    )


def load_recipe_runtime(recipes_dir: Path, name: str) -> RecipeRuntime:
    path = recipes_dir / name / "recipe.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise StepFailed(
            f"recipe {name!r}: {path} is missing",
            hint="the image build lays every recipe.yaml into /usr/share/arkbox/recipes; "
            "rebuild the image, or check the recipe name in the config",
        ) from e
    except (OSError, yaml.YAMLError) as e:
        raise StepFailed(f"recipe {name!r}: cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise StepFailed(f"recipe {name!r}: {path} is not a mapping")
    return recipe_runtime_from(name, data)
