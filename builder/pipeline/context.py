"""The state one build carries from stage to stage: paths, the config, what was made."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from builder.pipeline.progress import Progress
from firstboot.core.config import Appliance

Role = Literal["appliance", "backup-server"]
SOURCE_DIR = Path(__file__).resolve().parents[2]


@dataclass
class BuildContext:
    config: Appliance
    config_path: Path
    role: Role
    out_dir: Path
    cache_dir: Path
    work_dir: Path
    progress: Progress
    source_dir: Path = SOURCE_DIR
    source_date_epoch: int = 1_735_689_600  # 2025-01-01: fixed so rebuilds compare equal
    refresh: bool = False  # --refresh: read the archive's state from the mirror now
    # Filled in by the stages, in order:
    archive: dict[str, str] = field(default_factory=dict)  # archive_state.ArchiveState
    base_tar: Path | None = None
    base_key: str = ""  # the base root fs's cache key
    images_tar: Path | None = None
    images: list[dict[str, Any]] = field(default_factory=list)
    engine_data: Path | None = None  # the engine's data root holding the images
    installer: Path | None = None
    rootfs_dir: Path | None = None
    disk_tree: Path | None = None  # the tree as the disk holds it (engine_data.disk_view)
    packages: dict[str, str] = field(default_factory=dict)
    # Output file name -> sha256, taken while the stage wrote it (the manifest hashes the rest)
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        base = self.config.appliance.name
        return base if self.role == "appliance" else f"{base}-backup-server"

    def staged(self, filename: str) -> Path:
        """Where an output is written before the final rename into out/."""
        return self.work_dir / "out" / filename
