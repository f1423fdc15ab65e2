"""The `updates` section: the box fetches a signed update bundle on a schedule and becomes
its build (docs/updates.md). Off unless enabled."""

from __future__ import annotations

from pydantic import model_validator

from firstboot.core.config.base import EXAMPLE_ADMIN_KEY, Section, key, refuse
from firstboot.core.config.network import HttpUrl, SshPublicKey
from firstboot.core.config.scalars import Schedule


class Updates(Section):
    """Unattended updates: at `schedule` the box downloads `url` and `url`.sig, checks the
    signature against `signing_key`, and runs `arkbox-installer update` on the bundle (a
    backup first, every health check, a rollback on any failure). A failed update raises
    the update_failed alert."""

    enabled: bool = key(
        "Fetch and apply update bundles on the schedule. Off by default: an operator who "
        "turns it on publishes signed bundles (arkbox sign-update) at `url`.",
        default=False, example=True)
    url: HttpUrl | None = key(
        "Where the bundle (NAME-update.tar of `arkbox build`) is published; its signature "
        "is read from the same URL with .sig appended. http:// is accepted: the signature, "
        "not the transport, is what the box trusts.",
        default=None, example="https://builds.example.org/arkbox-test-update.tar")
    signing_key: SshPublicKey | None = key(
        "The SSH public key (one line of KEY.pub) whose signature every fetched bundle must "
        "carry; `arkbox sign-update BUNDLE --key KEY` makes it with the private half, "
        "which never goes near the box.",
        default=None, example=EXAMPLE_ADMIN_KEY)
    schedule: Schedule = key(
        "When the box looks for a new bundle: a systemd OnCalendar expression. The default "
        "comes after the night's backup and the weekly drill.",
        default="Sun *-*-* 05:30", example="Sun *-*-* 05:30")

    @model_validator(mode="after")
    def _complete(self) -> Updates:
        if self.enabled and (self.url is None or self.signing_key is None):
            missing = " and ".join(name for name, value in (
                ("url", self.url), ("signing_key", self.signing_key)) if value is None)
            raise refuse(f"enabled updates need {missing}",
                         "give url: (where the bundle is published) and signing_key: (the "
                         "public key it is signed with, see docs/updates.md), or set "
                         "enabled: false")
        return self
