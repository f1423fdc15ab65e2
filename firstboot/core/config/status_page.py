"""The `status_page` section: the admin's web page of the box's health (docs/status-page.md)."""

from __future__ import annotations

from firstboot.core.config.base import Section, key
from firstboot.core.config.secrets import SecretRef


class StatusPage(Section):
    """The status page, served by the proxy over HTTPS at the appliance's own host name
    (appliance.hostname, which no service route may use), behind the admin's password. Off
    when the section is absent."""

    password: SecretRef = key(
        "Where the admin's password for the page is kept: the password itself, or its "
        "Argon2id hash in PHC form ($argon2id$...), which keeps the password off the box.",
        example={"file": "secrets/status-page-password"})
