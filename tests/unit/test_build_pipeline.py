"""The build pipeline's shape, without running it: stage order, what each role builds."""

from pathlib import Path

import pytest
from rich.console import Console

from builder.pipeline import assemble, build
from builder.pipeline.context import BuildContext
from builder.pipeline.progress import Progress
from firstboot.core.config import DEFAULT_CONFIG_PATH, load_config
from firstboot.core.errors import ArkboxError, BadInputError

STAGES = [
    "stage_archive_state", "stage_base_rootfs", "stage_service_images", "stage_engine_data",
    "stage_installer",
    "stage_assemble", "stage_disk_view", "stage_disk_image", "stage_rootfs_tar",
    "stage_update_bundle", "stage_manifest",
]


def context(tmp_path: Path, role: str = "appliance") -> BuildContext:
    return BuildContext(
        config=load_config(DEFAULT_CONFIG_PATH), config_path=DEFAULT_CONFIG_PATH,
        role=role,  # type: ignore[arg-type]
        out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", work_dir=tmp_path / "work",
        progress=Progress(Console(quiet=True)),
    )


def test_stages_run_in_the_documented_order() -> None:
    assert build.stage_names() == STAGES


def test_appliance_builds_proxy_mail_and_each_services_recipe(tmp_path: Path) -> None:
    assert build.recipes_for(context(tmp_path)) == [
        "dokuwiki", "mail", "postgres", "proxy", "radicale", "roundcube"]
    assert build.recipes_for(context(tmp_path, "backup-server")) == []


def test_root_partition_leaves_room_for_gpt_bios_boot_and_esp() -> None:
    assert build.root_partition_mib("4G") == 4096 - 1 - 64 - 2
    assert build.root_partition_mib("2048M") == 2048 - 67


SECRET_VALUES = [p.read_bytes().strip() for p in (DEFAULT_CONFIG_PATH.parent / "secrets").iterdir()
                 if p.name != "README.md" and not p.name.endswith(".pub")]


def test_the_image_gets_the_config_and_no_secret(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    assert build.public_files(ctx) == {}
    tree = tmp_path / "tree"
    assemble.install_config(tree, DEFAULT_CONFIG_PATH.read_bytes(), build.public_files(ctx))
    etc = tree / "etc/arkbox"
    assert sorted(p.name for p in etc.rglob("*")) == ["appliance.yaml"]
    assert (etc / "appliance.yaml").read_bytes() == DEFAULT_CONFIG_PATH.read_bytes()
    assert (etc.stat().st_mode & 0o777) == 0o700
    assert ((etc / "appliance.yaml").stat().st_mode & 0o777) == 0o600
    assert len(SECRET_VALUES) == 7
    assert not any(v in (etc / "appliance.yaml").read_bytes() for v in SECRET_VALUES)


def test_the_ca_bundle_is_public_and_goes_in(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs/ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    text = DEFAULT_CONFIG_PATH.read_text().replace(
        "  key_type: ecdsa-p256\n", "  key_type: ecdsa-p256\n  ca_bundle: certs/ca.pem\n")
    (tmp_path / "appliance.yaml").write_text(text)
    (tmp_path / "secrets").symlink_to(DEFAULT_CONFIG_PATH.parent / "secrets")
    ctx = context(tmp_path)
    ctx.config = load_config(tmp_path / "appliance.yaml")
    assert build.public_files(ctx) == {"certs/ca.pem": tmp_path / "certs/ca.pem"}
    written = assemble.install_config(tmp_path / "tree", text.encode(), build.public_files(ctx))
    assert written == ["/etc/arkbox/certs/ca.pem"]
    assert not (tmp_path / "tree/etc/arkbox/secrets").exists()


def test_published_secrets_stop_the_build_before_it_writes(tmp_path: Path) -> None:
    config = tmp_path / "appliance.yaml"
    config.write_text(DEFAULT_CONFIG_PATH.read_text().replace("domain: arkbox.test",
                                                              "domain: example.org"))
    (tmp_path / "secrets").symlink_to(DEFAULT_CONFIG_PATH.parent / "secrets")
    console = Console(quiet=True)
    with pytest.raises(BadInputError, match=r"backup\.passphrase"):
        build.build(config, tmp_path / "out", cache_dir=tmp_path / "cache", console=console)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_backup_server_build_refuses_authorizing_the_published_key(tmp_path: Path) -> None:
    source = (DEFAULT_CONFIG_PATH.parent / "default-backup-server.yaml").read_text()
    config = tmp_path / "server.yaml"
    config.write_text(source.replace("domain: arkbox.test", "domain: example.org"))
    with pytest.raises(BadInputError, match=r"backup_server.clients\[0\].public_key"):
        build.build(config, tmp_path / "out", "backup-server", cache_dir=tmp_path / "cache",
                    console=Console(quiet=True))
    assert not (tmp_path / "out").exists()
    # A backup server needs none of the appliance's secrets: the default config's published
    # ones are not even looked at for that role.
    appliance = load_config(DEFAULT_CONFIG_PATH)
    assert build.readable_values(appliance, "backup-server") == {}
    assert len(build.readable_values(appliance, "appliance")) == 7


def test_publish_makes_out_private(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    ctx.out_dir.mkdir(mode=0o755)
    ctx.out_dir.chmod(0o755)
    (ctx.work_dir / "out").mkdir(parents=True)
    for name in ("arkbox-test.raw", "arkbox-installer"):
        (ctx.work_dir / "out" / name).write_text(name)
        (ctx.work_dir / "out" / name).chmod(0o755)
    published = build.publish(ctx)
    assert [p.name for p in published] == ["arkbox-installer", "arkbox-test.raw"]
    assert (ctx.out_dir.stat().st_mode & 0o777) == 0o700
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in published)


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


def test_a_build_removes_the_work_dir_a_killed_build_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A build killed outright (SIGKILL, power cut) leaves its work dir in out/: the next
    # build of the same out/ removes it, and keeps the operator's other files.
    out = tmp_path / "out"
    left = out / ".arkbox-build-killed"
    (left / "out").mkdir(parents=True)
    (left / "out" / "arkbox-test.raw").write_text("half an image")
    (out / ".notes").write_text("the operator's")
    seen: list[list[str]] = []

    def stages(ctx: BuildContext, _console: Console) -> list[Path]:
        seen.append(sorted(p.name for p in out.iterdir()))
        assert ctx.work_dir.parent == out and ctx.work_dir != left
        return []

    monkeypatch.setattr(build, "_build_in_work_dir", stages)
    monkeypatch.setattr(build, "check_free_space", lambda *_paths: None)
    build.build(DEFAULT_CONFIG_PATH, out, cache_dir=tmp_path / "cache", console=Console(quiet=True))
    assert not left.exists()
    [names] = seen
    assert ".arkbox-build-killed" not in names and ".notes" in names
    assert sum(n.startswith(build.WORK_DIR_PREFIX) for n in names) == 1  # its own
    assert build.out_dir_lock(tmp_path / "cache", out).is_file()
