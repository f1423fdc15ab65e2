"""`arkbox seed` shows the backup server's host key to pin, when the config pins none.

A scan from the build machine trusts the network as much as the box's first boot would, so
the key is shown with its fingerprint, to compare with the server's own before pinning it
as backup.host_key; nothing is written. A server that does not answer within a few seconds
is reported, never waited for (the build machine may have no route to it).
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlsplit

from firstboot.core.config import Appliance
from firstboot.core.execute import CommandError, run

SCAN_TIMEOUT_S = 5  # ssh-keyscan's own per-connection timeout
RUN_TIMEOUT_S = 15  # the whole scan: resolving and connecting included


def keyscan_argv(host: str, port: int) -> tuple[str, ...]:
    return ("ssh-keyscan", "-T", str(SCAN_TIMEOUT_S), "-t", "ed25519", "-p", str(port), host)


def scanned_key(output: str) -> str | None:
    """"ssh-ed25519 AAAA..." from ssh-keyscan's output; None when it has no key line."""
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#") and fields[1] == "ssh-ed25519":
            return f"{fields[1]} {fields[2]}"
    return None


def fingerprint(key: str) -> str:
    """As `ssh-keygen -lf` shows it: SHA256:<base64 of the blob's sha256, unpadded>."""
    digest = hashlib.sha256(base64.b64decode(key.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_key_note(config: Appliance) -> str | None:
    """What to tell the operator about the backup server's key; None when it is pinned."""
    repository = config.backup.repository
    if repository is None or config.backup.host_key is not None:
        return None
    url = urlsplit(repository)
    host, port = url.hostname or "", url.port or 22
    where = f"{host}:{port}"
    try:
        key = scanned_key(run(keyscan_argv(host, port), timeout=RUN_TIMEOUT_S,
                              check=False).stdout)
    except (CommandError, OSError) as err:
        return _unscanned(where, str(err))
    if key is None:
        return _unscanned(where, "no ed25519 key answered")
    return (f"backup.host_key is not pinned; {where} answers with\n  {key}\n  ({fingerprint(key)}"
            "). Compare it with the server's own (ssh-keygen -lf "
            "/etc/ssh/ssh_host_ed25519_key.pub, on its console) and pin it as backup.host_key: "
            "this scan trusts the network as much as an unpinned first boot does")


def _unscanned(where: str, reason: str) -> str:
    return (f"backup.host_key is not pinned, and {where} could not be scanned ({reason}); "
            "pin the server's /etc/ssh/ssh_host_ed25519_key.pub as backup.host_key")
