"""The administrator's account as text: its authorized_keys and sudoers files, its shell.

First boot (step `system`) makes the appliance's admin with these; the build lays a
backup server's admin into its root fs with the same (builder/pipeline/backup_server_host.py),
since no first boot runs there.
"""

from __future__ import annotations

from firstboot.core.config.network import split_ssh_public_key

ADMIN_SHELL = "/bin/bash"
ADMIN_COMMENT = "arkbox administrator"
AUTHORIZED_KEYS_HEADER = (
    "# Written by arkbox from appliance.admin.ssh_keys; `arkbox-installer apply` "
    "rewrites it.\n"
)
# On a backup server nothing rewrites it but a new image.
BUILT_AUTHORIZED_KEYS_HEADER = (
    "# Written by `arkbox build` from appliance.admin.ssh_keys; a rebuilt image replaces it.\n"
)


def authorized_keys_content(keys: list[str], header: str = AUTHORIZED_KEYS_HEADER) -> str:
    # Each key written anew from its parsed fields, never as given: one line per key and
    # no options, whatever the text held.
    return header + "".join(f"{split_ssh_public_key(key).line()}\n" for key in keys)


def sudoers_path(user: str) -> str:
    return f"/etc/sudoers.d/arkbox-{user}"


def sudoers_content(user: str) -> str:
    # The admin logs in with a key only and has no password to type: sudo cannot ask one.
    return f"# Written by arkbox: the administrator may run anything as root.\n" \
           f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n"
