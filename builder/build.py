"""`arkbox build`: the pipeline, top to bottom.

Each stage is a function of the BuildContext; expensive ones are cached under
the cache dir by a hash of their inputs. Outputs are written into a work dir
and renamed into out/ only when every stage succeeded, so a failed build
leaves out/ as it was.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from builder import installer
from builder.cache import cache_dir_from_env, lookup
from builder.context import BuildContext
from builder.progress import Progress
from firstboot import __version__
from firstboot.config import config_digest, load_config
from firstboot.errors import ArkboxError

MIN_FREE_BYTES = 6 << 30


def stage_installer(ctx: BuildContext) -> None:
    """The frozen `arkbox-installer`, rebuilt only when its sources change."""
    entry = lookup(ctx.cache_dir, "installer", installer.installer_inputs(ctx.source_dir))
    ctx.progress.note(entry.reason)
    if not entry.hit:
        entry.reset()
        installer.freeze_installer(ctx.source_dir, entry.path)
        entry.commit()
    ctx.installer = entry.path / "arkbox-installer"
    shutil.copy2(ctx.installer, ctx.staged("arkbox-installer"))


def build(ctx: BuildContext) -> None:
    with ctx.progress.stage("installer (PyInstaller)"):
        stage_installer(ctx)


def check_free_space(*dirs: Path) -> None:
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(d).free
        if free < MIN_FREE_BYTES:
            raise ArkboxError(
                f"only {free >> 20} MiB free in {d}; a build needs {MIN_FREE_BYTES >> 30} GiB",
                hint="free some space, or point --out / --cache (ARKBOX_CACHE) elsewhere",
            )


def publish(ctx: BuildContext) -> list[Path]:
    """Move every staged output into out/: renames, so out/ never holds half a file."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    published = []
    for staged in sorted((ctx.work_dir / "out").iterdir()):
        final = ctx.out_dir / staged.name
        staged.replace(final)
        published.append(final)
    return published


def build_from_args(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    config_path = Path(args.config)
    progress = Progress(console)
    digest = config_digest(config_path)[:12] if config_path.is_file() else "?"
    console.print(f"arkbox {__version__} · building {config_path} (sha256 {digest}…)")
    with progress.stage("validate config"):
        appliance = load_config(config_path)
        progress.note(f"appliance {appliance.appliance.name!r}, role {args.role}")
    out_dir = Path(args.out)
    cache_dir = Path(args.cache) if args.cache else cache_dir_from_env()
    check_free_space(out_dir, cache_dir)
    # The work dir sits next to out/ so the final renames stay on one filesystem.
    work_dir = Path(tempfile.mkdtemp(prefix=".arkbox-build-", dir=out_dir))
    ctx = BuildContext(
        config=appliance, config_path=config_path, role=args.role, out_dir=out_dir,
        cache_dir=cache_dir, work_dir=work_dir, progress=progress,
    )
    (work_dir / "out").mkdir()
    try:
        build(ctx)
        published = publish(ctx)
    except BaseException:
        console.print(f"nothing was written to {out_dir}/")
        raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    total = sum(r.seconds for r in progress.results)
    console.print(f"done in {total:.0f} s → {out_dir}/")
    for path in published:
        console.print(f"  {path}")
    return 0
