"""Step `engine`: the container engine answers, and holds exactly the images the build baked.

No registry is needed (nor, on a real VPS, reachable): every service image was
built by `arkbox build`, saved under /usr/share/arkbox/images/*.tar, and listed
with its ID in /usr/share/arkbox/build-manifest.json (`service_images`). A
tarball is loaded only when an image it holds is missing from the engine, and
every image is then checked by ID: a tag pointing at anything else means the
disk image is damaged or mixed from two builds.

The load takes tens of seconds; `arkbox-images.service` starts it at boot, beside first
boot (whose `restore` step runs meanwhile), through `arkbox-installer load-images`. One
loader at a time (a lock in /var/lib/arkbox): the step waits for the boot-time load and
then finds nothing missing, or loads what is still missing itself.
"""

from __future__ import annotations

from firstboot.containers import image_load
from firstboot.containers.images import read_baked_images
from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.step import Outcome, StepFailed

NAME = "engine"


def applies(config: Appliance) -> bool:
    return True


def run(ctx: FirstbootContext) -> Outcome:
    client = image_load.wait_for_engine(ctx, image_load.WAIT_FOR_ENGINE_S)
    wanted = list(read_baked_images(ctx.paths.build_manifest).values())
    loaded = [image.recipe for image in image_load.load_missing(ctx, client)]
    ctx.checkpoint("loaded-images")  # loaded here or by arkbox-images.service
    retagged = image_load.retag(client, wanted)
    problem = image_load.mismatch(client, wanted)
    if problem is not None:
        raise StepFailed(problem, hint=image_load.REBUILD_HINT)
    details = {"images": {image.recipe: image.image_id for image in wanted}}
    count = f"{len(wanted)}/{len(wanted)} images verified"
    if loaded or retagged:
        done = [f"loaded {', '.join(loaded)}"] if loaded else []
        done += [f"re-tagged {', '.join(retagged)}"] if retagged else []
        return Outcome.changed_(f"{'; '.join(done)} · {count}", details)
    return Outcome.unchanged(f"{count}, none to load", details)


def verify(ctx: FirstbootContext) -> str | None:
    try:
        client = image_load.wait_for_engine(ctx, image_load.VERIFY_WAIT_S)
        wanted = list(read_baked_images(ctx.paths.build_manifest).values())
    except StepFailed as err:
        return err.message
    return image_load.mismatch(client, wanted)
