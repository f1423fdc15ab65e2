"""Update bundles made from a build's own: the wiki's image rebuilt FROM the built one
(a label more, or other files), for the update tests (tests/e2e/test_update.py) and
bench/update.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from builder.pipeline.update_bundle import write_bundle
from firstboot.updates.bundle import MANIFEST_PATH, BundleIndex, verify_bundle
from firstboot.updates.check import INSTALLER_DIR

EPOCH = 1_735_689_600


def docker(*args: str, timeout: float = 600) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def bundle_with_wiki(built_bundle: Path, work: Path, label: str,
                     files: dict[str, str]) -> Path:
    """The build's bundle with the wiki's image rebuilt FROM the built one, plus `files`
    (name -> text, made executable) in its build context; images.tar holds that image."""
    tree = extracted(built_bundle, work)
    built = json.loads((tree / MANIFEST_PATH).read_text())
    wiki = next(i for i in built["service_images"] if i["name"] == "dokuwiki")
    context = work / "context"
    context.mkdir()
    lines = [f"FROM {wiki['tag']}", f"LABEL org.arkbox.test-update={label}"]
    for name, text in files.items():
        (context / name).write_text(text)
        (context / name).chmod(0o755)
        lines.append(f"COPY {name} /usr/local/bin/{name}")
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    tag = f"arkbox/dokuwiki:update-test-{label}"
    docker("build", "--quiet", "--tag", tag, str(context))
    try:
        images = tree / "usr/share/arkbox/images/images.tar"
        docker("save", "--output", str(images), tag)
        wiki.update(tag=tag, id=docker("image", "inspect", "--format", "{{.Id}}", tag),
                    size=int(docker("image", "inspect", "--format", "{{.Size}}", tag)))
    finally:
        docker("rmi", tag)
    (tree / MANIFEST_PATH).write_text(json.dumps(built, indent=2))
    return rebundled(tree, built_bundle, work / f"{label}-update.tar")


def bundle_with_installer_file(built_bundle: Path, work: Path, name: str,
                               text: str) -> Path:
    """The build's bundle with one more file in the installer's folder: an update that
    changes the installer and no service image."""
    tree = extracted(built_bundle, work)
    (tree / INSTALLER_DIR / name).write_text(text)
    return rebundled(tree, built_bundle, work / "installer-update.tar")


def extracted(built_bundle: Path, work: Path) -> Path:
    tree = work / "tree"
    tree.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(built_bundle), "-C", str(tree),
                    "--exclude=arkbox-update.json"], check=True, timeout=600)
    return tree


def rebundled(tree: Path, built_bundle: Path, out: Path) -> Path:
    """`tree` as a bundle with the built bundle's identity (appliance, version, archive)."""
    old = verify_bundle(built_bundle).index
    write_bundle(tree, out, BundleIndex(
        appliance=old.appliance, role=old.role, arkbox_version=old.arkbox_version,
        config_sha256=old.config_sha256, archive_state=old.archive_state),
        source_date_epoch=EPOCH)
    return out
