"""The test ACME CA of `arkbox try`: Pebble and its DNS in the rig, so the appliance
gets a real certificate over the real protocol, as on a VPS with working DNS.

The appliance boots with the operator's config, except that `tls.acme_directory`
points at the rig's Pebble and `tls.ca_bundle` at the CA of Pebble's own HTTPS
(laid into /etc/arkbox beside the config). pebble-challtestsrv answers Pebble's
validator with the appliance's rig address for every name the appliance serves.
The operator trusts Pebble's root, saved next to `out/` while the rig is up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from builder.pipeline.cache import cache_dir_from_env
from builder.rig.parts import BOX, ApplianceContainer, Rig
from builder.rig.pebble import HttpsIdentity, TestCAContainer, pebble_image
from firstboot.certs.certificate import LiveFiles
from firstboot.core import wait

SOURCE_DIR = Path(__file__).resolve().parents[2]
ROLE = "pebble"
# The CA of Pebble's own HTTPS, next to the appliance's config (tls.ca_bundle).
CA_BUNDLE_NAME = "try-test-ca-https.pem"
CA_BUNDLE_PATH = f"/etc/arkbox/{CA_BUNDLE_NAME}"
CERTIFICATE_INFO = str(LiveFiles(BOX.tls / "live").info)
ROOT_FILE = "test-ca-root.pem"  # in the rig's state dir: what the operator trusts
# Pebble answers in seconds; the renew service starts once first boot is done.
ISSUE_TIMEOUT_S = 120


def start_test_ca(rig: Rig) -> TestCAContainer:
    """Start Pebble (image built offline and cached, like the service images)."""
    image = pebble_image(SOURCE_DIR, cache_dir_from_env())
    pebble = TestCAContainer(rig=rig, role=ROLE, image=image, aliases=[ROLE])
    rig.add(pebble)
    return pebble


def existing_test_ca(rig: Rig, container: Any, https_ca_pem: bytes) -> TestCAContainer:
    """The rig's running Pebble (`try disaster`), known by the CA of its HTTPS (the
    bundle the appliance trusts it by)."""
    return TestCAContainer(rig=rig, role=ROLE, image=str(container.attrs["Config"]["Image"]),
                           aliases=[ROLE], container=container,
                           https=HttpsIdentity(ca_pem=https_ca_pem, cert_pem=b"", key_pem=b""))


def config_with_test_ca(config_text: str, pebble: TestCAContainer) -> str:
    """The operator's config (YAML text) with its ACME settings pointed at the rig's CA."""
    data: dict[str, Any] = yaml.safe_load(config_text)
    tls = dict(data.get("tls") or {})
    tls["acme_directory"] = pebble.directory
    tls["ca_bundle"] = CA_BUNDLE_NAME
    data["tls"] = tls
    return yaml.safe_dump(data, sort_keys=False)


def ca_bundle_file(pebble: TestCAContainer) -> dict[str, tuple[bytes, int]]:
    return {CA_BUNDLE_PATH: (pebble.https.ca_pem, 0o600)}


def point_names(pebble: TestCAContainer, names: list[str],
                appliance: ApplianceContainer) -> None:
    """Resolve every served name to the appliance for Pebble's HTTP-01 validation."""
    address = appliance.ip(4)
    for name in names:
        pebble.add_a(name, address)


@dataclass(frozen=True)
class Issued:
    ok: bool
    detail: str  # the names, or why the appliance still serves its fallback


def wait_for_certificate(appliance: ApplianceContainer, timeout: float = ISSUE_TIMEOUT_S,
                         interval: float = 2) -> Issued:
    """Wait until the appliance serves a certificate from the CA (certificate.json says so);
    else why it still serves its fallback."""

    def issued() -> Issued | wait.NotYet:
        info = appliance.read_json(CERTIFICATE_INFO)
        if isinstance(info, dict) and info.get("source") == "acme":
            return Issued(True, ", ".join(info.get("names") or []))
        reason = info.get("reason") if isinstance(info, dict) else None
        return wait.NotYet(str(reason or "no certificate information on the appliance"))

    try:
        return wait.until("a certificate from the test CA", issued, timeout,
                          interval_s=interval)
    except wait.WaitTimedOut as timed_out:
        return Issued(False, timed_out.message)


def save_root(pebble: TestCAContainer, state_dir: Path) -> Path:
    """Pebble's root (new at each Pebble start) where the operator can point curl at it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / ROOT_FILE
    path.write_bytes(pebble.root_pem())
    return path
