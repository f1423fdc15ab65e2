from pathlib import Path

import pytest
from pydantic import ValidationError

from builder.pipeline.manifest import (
    BuildManifest,
    describe_outputs,
    installed_packages,
    read_manifest,
    write_manifest,
)


def sample(tmp_path: Path) -> BuildManifest:
    out = tmp_path / "arkbox-test.qcow2"
    out.write_bytes(b"qcow")
    return BuildManifest(
        arkbox_version="0.1.0", name="arkbox-test", role="appliance",
        config_file="config/default.yaml", config_sha256="a" * 64, suite="trixie",
        source_date_epoch=1, stages=[{"name": "base root fs", "seconds": 1.5}],
        packages={"systemd": "257"},
        service_images=[{"name": "proxy", "tag": "arkbox/proxy:k", "id": "sha256:" + "b" * 64,
                         "size": 10}],
        outputs=describe_outputs([out]),
    )


def test_manifest_round_trips(tmp_path: Path) -> None:
    manifest = sample(tmp_path)
    write_manifest(manifest, tmp_path / "m.json")
    assert read_manifest(tmp_path / "m.json") == manifest
    assert manifest.outputs["arkbox-test.qcow2"].size == 4


def test_manifest_rejects_unknown_fields_and_bad_digests(tmp_path: Path) -> None:
    data = sample(tmp_path).model_dump()
    with pytest.raises(ValidationError):
        BuildManifest.model_validate({**data, "surprise": 1})
    data["service_images"][0]["id"] = "not-a-digest"
    with pytest.raises(ValidationError):
        BuildManifest.model_validate(data)


def test_installed_packages_reads_dpkg_status(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: systemd\nStatus: install ok installed\nVersion: 257.9-1\n"
        "Description: x\n multi-line\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: bash\nStatus: install ok installed\nVersion: 5.2\n"
    )
    assert installed_packages(tmp_path) == {"bash": "5.2", "systemd": "257.9-1"}
