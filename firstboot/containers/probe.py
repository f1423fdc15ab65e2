"""One look at health: is a container healthy, does a route answer through the proxy.

Each probe returns None when fine, else a reason a person can act on. The health
step polls them until all pass or its time is up.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import ssl
from typing import Any

import docker
import docker.errors
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from firstboot.containers.engine import container_state

PROBE_TIMEOUT_S = 5
LOG_TAIL_LINES = 3


def container_problem(client: docker.DockerClient, name: str) -> str | None:
    """None when the container runs and is healthy (or has no check and runs)."""
    state = container_state(client, name)
    if state is None:
        return "no container (not created)"
    status = state["State"]
    if status.get("Status") != "running":
        return (f"{status.get('Status')} (exit {status.get('ExitCode')})"
                f"{_log_tail(client, name)}")
    health = status.get("Health")
    if health is None or health.get("Status") == "healthy":
        return None
    if health.get("Status") == "starting":
        # The engine runs the check once per interval (30 s by default); run it now
        # instead of waiting for the engine to get round to it.
        return _check_now(client, name, state)
    return "unhealthy: " + _last_check_output(health)


def _check_now(client: docker.DockerClient, name: str, state: dict[str, Any]) -> str | None:
    test = (state.get("Config", {}).get("Healthcheck") or {}).get("Test") or []
    if not test or test[0] == "NONE":
        return None
    argv = list(test[1:]) if test[0] == "CMD" else ["/bin/sh", "-c", str(test[1])]
    try:
        result = client.containers.get(name).exec_run(argv)
    except docker.errors.APIError as e:
        return f"starting (check could not run: {e.explanation or e})"
    if result.exit_code == 0:
        return None
    output = result.output if isinstance(result.output, bytes) else b""
    shown = output.decode(errors="replace").strip()
    return "starting: health check fails" + (f": {shown[-200:]}" if shown else "")


def _last_check_output(health: dict[str, Any]) -> str:
    checks = health.get("Log") or []
    if not checks:
        return "no check has run yet"
    output = str(checks[-1].get("Output", "")).strip()
    return f"last check exit {checks[-1].get('ExitCode')}" + (f": {output[-200:]}"
                                                              if output else "")


def _log_tail(client: docker.DockerClient, name: str) -> str:
    try:
        raw = client.containers.get(name).logs(tail=LOG_TAIL_LINES)
    except docker.errors.APIError:
        return ""
    text = raw.decode(errors="replace").strip() if isinstance(raw, bytes) else ""
    return f"; last log lines: {' | '.join(text.splitlines())}" if text else ""


def published_port(client: docker.DockerClient, container: str, port: int) -> int | None:
    """The host port a container port is published on."""
    state = container_state(client, container)
    if state is None:
        return None
    bindings = (state.get("NetworkSettings", {}).get("Ports") or {}).get(f"{port}/tcp") or []
    return int(bindings[0]["HostPort"]) if bindings else None


def leaf_fingerprint(fullchain_pem: bytes) -> str:
    """sha256 of the first certificate of a chain (the one the proxy must serve)."""
    leaf = x509.load_pem_x509_certificate(fullchain_pem)
    return hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()


def is_self_signed(fullchain_pem: bytes) -> bool:
    leaf = x509.load_pem_x509_certificate(fullchain_pem)
    return leaf.issuer == leaf.subject


def route_problem(port: int, hostname: str, path: str, pinned_sha256: str) -> str | None:
    """HTTPS GET through the proxy on 127.0.0.1:port with the route's SNI and Host.

    The certificate is checked by pinning: the proxy must serve exactly the leaf
    certificate of /srv/arkbox/tls/live (self-signed fallback or not), so a stale
    or wrong certificate fails the probe. Any answer below 500 (a login page's 401
    too) means the route reaches its app; 421 means the proxy has no such route.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Trust comes from the pin below, not from a CA: the fallback has none.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT_S)
        tls = context.wrap_socket(raw, server_hostname=hostname)
    except (OSError, ssl.SSLError) as e:
        return f"no TLS connection to the proxy on port {port}: {e}"
    try:
        served = tls.getpeercert(binary_form=True) or b""
        if hashlib.sha256(served).hexdigest() != pinned_sha256:
            return "the proxy serves another certificate than /srv/arkbox/tls/live/fullchain.pem"
        connection = http.client.HTTPConnection(hostname, port, timeout=PROBE_TIMEOUT_S)
        connection.sock = tls
        connection.request("GET", path, headers={"Host": hostname, "User-Agent": "arkbox-health"})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        return f"no HTTP answer: {e}"
    finally:
        tls.close()
    if status == 421:
        return "the proxy has no route for this host (421)"
    if status >= 500:
        return f"answers {status} (the app behind the proxy is not reachable or failing)"
    return None
