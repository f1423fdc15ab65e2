"""Which image each recipe runs: the baked images listed in the build manifest.

Containers are created from the image *ID* the build recorded, not a tag, so a
stray re-tag can never swap what runs; the ID goes into the spec hash and the
environment manifest, which is what a restore rebuilds from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from firstboot.core.step import StepFailed

# Where the image build lays each recipe.yaml (the installer cannot see the source tree).
RECIPES_DIR = "/usr/share/arkbox/recipes"


@dataclass(frozen=True)
class BakedImage:
    recipe: str
    tag: str
    image_id: str


def read_baked_images(build_manifest: Path) -> dict[str, BakedImage]:
    """recipe name -> image, from build-manifest.json's `service_images`."""
    try:
        data = json.loads(build_manifest.read_text(encoding="utf-8"))
        entries = data["service_images"]
        return {
            str(e["name"]): BakedImage(str(e["name"]), str(e["tag"]), str(e["id"]))
            for e in entries
        }
    except FileNotFoundError as e:
        raise StepFailed(
            f"the build manifest {build_manifest} is missing",
            hint="it is written by `arkbox build`; this root fs was not built by it",
        ) from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StepFailed(f"cannot read the service images from {build_manifest}: {e}") from e


def baked_image(images: dict[str, BakedImage], recipe: str) -> BakedImage:
    try:
        return images[recipe]
    except KeyError:
        known = ", ".join(sorted(images)) or "none"
        raise StepFailed(
            f"no baked image for recipe {recipe!r} (the image has: {known})",
            hint="rebuild the image with this config so `arkbox build` bakes the recipe",
        ) from None
