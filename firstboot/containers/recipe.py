"""How a recipe's image is meant to run, as the container code needs it on the box.

The builder lays each recipe's `recipe.yaml` into /usr/share/arkbox/recipes/NAME/
(the installer cannot read the source tree); `firstboot.core.recipe` reads and
validates it. `RecipeRuntime` is the part that shapes a container: capabilities,
read-only root, tmpfs mounts, the application's uid/gid (owner of its volumes and
secret files), the env variables that also accept NAME_FILE, egress, and whether
the app talks to the box's mail server (`depends_on` names `mail`: the mail
container joins its network).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from firstboot.core.config import format_problems
from firstboot.core.recipe import TMP, Recipe, RecipeInvalid, load_recipe, recipe_path
from firstboot.core.step import StepFailed

__all__ = ["MAIL_DEPENDENCY", "TMP", "UNKNOWN_IMAGE", "RecipeRuntime", "load_recipe_runtime",
           "recipe_runtime"]

MAIL_DEPENDENCY = "mail"  # in a recipe's depends_on: the app uses the box's mail server


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


def recipe_runtime(name: str, recipe: Recipe) -> RecipeRuntime:
    """The container-shaping part of a validated recipe."""
    return RecipeRuntime(
        name=name,
        capabilities=tuple(sorted(recipe.capabilities)),
        read_only=recipe.read_only,
        tmpfs=tuple(recipe.tmpfs),
        uid=recipe.user.uid,
        gid=recipe.user.gid,
        file_env=frozenset(n for n, var in recipe.env.items() if var.accepts_file),
        declared_volumes=tuple(recipe.volumes),
        egress=recipe.egress,
        stop_grace_seconds=recipe.stop_grace_seconds,
        mail_client=MAIL_DEPENDENCY in recipe.depends_on,
    )


def load_recipe_runtime(recipes_dir: Path, name: str) -> RecipeRuntime:
    path = recipe_path(recipes_dir, name)
    try:
        return recipe_runtime(name, load_recipe(path))
    except FileNotFoundError as e:
        raise StepFailed(
            f"recipe {name!r}: {path} is missing",
            hint="the image build lays every recipe.yaml into /usr/share/arkbox/recipes; "
            "rebuild the image, or check the recipe name in the config",
        ) from e
    except RecipeInvalid as e:
        raise StepFailed(
            f"recipe {name!r}: {format_problems(e)}",
            hint="the build validates every recipe it lays in: rebuild the image with this "
            "installer's arkbox",
        ) from e
