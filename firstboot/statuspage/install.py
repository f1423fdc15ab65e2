"""Setting the status page up on the box (step `status_page`): the password's Argon2id hash
(root-only) and arkbox-status-page.service, which runs the server on the proxy's socket.
"""

from __future__ import annotations

import http.client
import socket
from pathlib import Path

from firstboot.containers.images import RECIPES_DIR
from firstboot.containers.nginx import STATUS_PAGE_SOCKET
from firstboot.containers.proxy import PROXY_RECIPE, status_page_socket_dir
from firstboot.containers.recipe import load_recipe_runtime
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.files import ensure_dir, read_bytes, write_if_changed
from firstboot.core.locations import INSTALLER_PROGRAM as INSTALLER
from firstboot.statuspage.auth import stored_hash
from firstboot.systemd_units import UNIT_DIR

SERVICE = "arkbox-status-page.service"


def password_file(paths: Paths) -> Path:
    return paths.state / "status-page" / "password.argon2"


def socket_path(paths: Paths) -> Path:
    return status_page_socket_dir(paths) / STATUS_PAGE_SOCKET


def service_unit(hostname: str, socket_group: int) -> str:
    return f"""\
[Unit]
Description=arkbox: the status page's server (behind the proxy, on a unix socket)
Documentation=file:/usr/share/doc/arkbox/status-page.md
After=docker.service

[Service]
ExecStart={INSTALLER} status-page serve --hostname {hostname} --socket-group {socket_group}
Restart=on-failure
RestartSec=5
SyslogIdentifier=arkbox-status-page
# It reads the box's state and the engine's (over its unix socket) and writes only its
# socket: no network at all, a read-only system, no new privileges.
PrivateNetwork=yes
RestrictAddressFamilies=AF_UNIX
ProtectSystem=full
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
NoNewPrivileges=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
UMask=0077

[Install]
WantedBy=multi-user.target
"""


def socket_group(ctx: FirstbootContext) -> int:
    """nginx's group in the proxy container: the one group that may connect."""
    return load_recipe_runtime(ctx.paths.at(RECIPES_DIR), PROXY_RECIPE).gid


def write_password_hash(ctx: FirstbootContext) -> bool:
    """The hash of status_page.password, 0600; True when it changed."""
    page = ctx.config.status_page
    assert page is not None
    target = password_file(ctx.paths)
    ensure_dir(target.parent, 0o700)
    previous = read_bytes(target)
    wanted = stored_hash(ctx.config.secret(page.password),
                         previous.decode().strip() if previous else None)
    return write_if_changed(target, wanted + "\n", 0o600)


def write_unit(ctx: FirstbootContext) -> bool:
    text = service_unit(ctx.config.appliance.hostname, socket_group(ctx))
    return write_if_changed(ctx.paths.at(UNIT_DIR) / SERVICE, text, 0o644)


def unit_path(paths: Paths) -> Path:
    return paths.at(UNIT_DIR) / SERVICE


PROBE_TIMEOUT_S = 5


def probe(path: Path) -> str | None:
    """None when the server answers its login form on the socket, else why not."""

    class _UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(PROBE_TIMEOUT_S)
            self.sock.connect(str(path))

    connection = _UnixConnection("localhost", timeout=PROBE_TIMEOUT_S)
    try:
        connection.request("GET", "/login", headers={"X-Real-IP": "127.0.0.1"})
        status = connection.getresponse().status
    except OSError as e:
        return f"no answer on {path}: {e}"
    finally:
        connection.close()
    return None if status == 200 else f"{path} answered {status} to GET /login"
