"""The rig's root fs image names its build's service images, so a box's engine volume can
be filled from the build cache before it starts (builder/rig/engine_preload.py)."""

from __future__ import annotations

from pathlib import Path

from builder.pipeline.manifest import MANIFEST_NAME, BuildManifest, ServiceImage
from builder.rig.engine_preload import SERVICE_IMAGES_LABEL, import_changes, service_image_ids
from builder.rig.parts import docker_import_argv

ID_A, ID_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def _manifest(ids: list[str]) -> str:
    return BuildManifest(
        arkbox_version="0", name="t", role="appliance", config_file="c",
        config_sha256="0" * 64, suite="trixie", source_date_epoch=0, stages=[], packages={},
        service_images=[ServiceImage(name=f"n{i}", tag=f"arkbox/n{i}:k", id=image_id, size=1)
                        for i, image_id in enumerate(ids)],
        outputs={}).model_dump_json()


def test_the_ids_come_from_the_manifest_next_to_the_tar(tmp_path: Path) -> None:
    tar = tmp_path / "box-rootfs.tar"
    assert service_image_ids(tar) == []  # a hand-made tar: nothing to preload
    (tmp_path / MANIFEST_NAME).write_text(_manifest([ID_B, ID_A]))
    assert service_image_ids(tar) == [ID_A, ID_B]


def test_the_import_labels_the_image_with_them() -> None:
    changes = import_changes([ID_A, ID_B])
    assert changes == (f"LABEL {SERVICE_IMAGES_LABEL}={ID_A},{ID_B}",)
    assert import_changes([]) == ()
    argv = docker_import_argv(Path("/o/r.tar"), "arkbox/appliance:x", changes)
    assert argv == ("docker", "import", "--change", 'CMD ["/sbin/init"]',
                    "--change", changes[0], "/o/r.tar", "arkbox/appliance:x")
