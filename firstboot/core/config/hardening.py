"""The `build.hardening` section: the settings of the image's hardening (docs/hardening.md).

The build renders them into the image's files (sshd, journald, unattended-upgrades);
the admin's user and SSH port come from `appliance.admin`.
"""

from __future__ import annotations

from firstboot.core.config.base import Section, key
from firstboot.core.config.scalars import RsaBits, Size, TimeOfDay


class Hardening(Section):
    """Settings of the hardening laid into the image; docs/hardening.md says why each exists."""

    auto_reboot: bool = key(
        "Reboot at auto_reboot_time when an unattended security upgrade (a kernel, libc) needs "
        "it. Off: the upgrade waits for the next reboot.",
        default=False, example=True)
    auto_reboot_time: TimeOfDay = key(
        "Time of day (the appliance's time zone) of that reboot; quote it.",
        default="04:30", example="03:15")
    journal_max_use: Size = key(
        "Most disk space the persistent journal takes.",
        default="1G", example="500M")
    ssh_required_rsa_size: RsaBits = key(
        "Smallest RSA key, in bits, sshd accepts; Ed25519 keys are not affected.",
        default=3072, example=4096)
