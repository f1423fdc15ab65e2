"""The build pipeline's shape, without running it: stage order, what each role builds."""

from pathlib import Path

import pytest
from rich.console import Console

from builder.pipeline import build
from builder.pipeline.context import BuildContext
from builder.pipeline.progress import Progress
from firstboot.core.config import DEFAULT_CONFIG_PATH, load_config
from firstboot.core.errors import ArkboxError

STAGES = [
    "stage_base_rootfs", "stage_service_images", "stage_installer", "stage_assemble",
    "stage_disk_image", "stage_rootfs_tar", "stage_manifest",
]


def context(tmp_path: Path, role: str = "appliance") -> BuildContext:
    return BuildContext(
        config=load_config(DEFAULT_CONFIG_PATH), config_path=DEFAULT_CONFIG_PATH,
        role=role,  # type: ignore[arg-type]
        out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", work_dir=tmp_path / "work",
        progress=Progress(Console(quiet=True)),
    )


def test_stages_run_in_the_documented_order() -> None:
    assert [stage.__name__ for _, stage in build.STAGES] == STAGES


def test_appliance_builds_proxy_mail_and_each_services_recipe(tmp_path: Path) -> None:
    assert build.recipes_for(context(tmp_path)) == [
        "dokuwiki", "mail", "postgres", "proxy", "radicale", "roundcube"]
    assert build.recipes_for(context(tmp_path, "backup-server")) == []


def test_root_partition_leaves_room_for_gpt_bios_boot_and_esp() -> None:
    assert build.root_partition_mib("4G") == 4096 - 1 - 64 - 2
    assert build.root_partition_mib("2048M") == 2048 - 67


def test_secret_files_are_the_configs_file_references(tmp_path: Path) -> None:
    files = build.secret_files(context(tmp_path))
    assert "secrets/borg-passphrase" in files
    assert all(p.is_file() for p in files.values())
    assert all(not Path(rel).is_absolute() for rel in files)


def test_too_little_free_space_stops_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10 << 30, 9 << 30, 512 << 20))
    with pytest.raises(ArkboxError) as err:
        build.check_free_space(tmp_path / "out", tmp_path / "cache")
    assert "only 512 MiB free" in err.value.message
    assert err.value.hint and "--out" in err.value.hint
