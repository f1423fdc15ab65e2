"""services + proxy + health against this host's real Docker Engine.

One box (default.yaml without mail, rooted in a temp dir, so its containers and
networks get a name prefix of their own) is brought up once for the module. A
client container on a separate network then talks to the proxy through its
published ports, the way the outside world would. One test applies a config
change (add a service, move a route, remove a service) and checks that exactly
those things changed; each test asks for the config it needs (`base_state`,
`applied_state`), which converges the box back when a test before changed it.
Everything the module made in the engine is removed at the
end, whatever happened.
"""

from __future__ import annotations

import datetime
import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from docker.models.containers import Container

from builder.pipeline.cache import cache_dir_from_env
from builder.pipeline.service_images import BuiltImage, build_service_images
from firstboot.containers.naming import Naming
from firstboot.containers.probe import leaf_fingerprint, route_problem
from firstboot.containers.proxy import PublishedPorts, converge_proxy
from firstboot.core.config import Appliance, load_config
from firstboot.core.config.loader import DEFAULT_CONFIG_PATH
from firstboot.core.context import FirstbootContext, Paths
from firstboot.mail.proxy_sites import served_mail_sites
from firstboot.steps import health, proxy, services

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "image" / "recipes"
RECIPE_NAMES = ("proxy", "radicale", "dokuwiki", "roundcube", "postgres")
HOSTNAMES = ("cal.arkbox.test", "wiki.arkbox.test", "webmail.arkbox.test",
             "notes.arkbox.test", "docs.arkbox.test")
ANY_FREE_PORT = PublishedPorts(http=0, https=0)

# Run inside the client container: one HTTP(S) request to the box, the answer as JSON.
CLIENT_REQUEST = r"""
import hashlib, http.client, json, socket, ssl, sys
scheme, address, port, host, path = sys.argv[1:6]
sock = socket.create_connection((address, int(port)), timeout=10)
fingerprint = None
if scheme == "https":
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test compares the fingerprint itself
    try:
        sock = context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLError as e:
        print(json.dumps({"tls_error": str(e)}))
        sys.exit(0)
    fingerprint = hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest()
    version = sock.version()
connection = http.client.HTTPConnection(host, int(port), timeout=10)
connection.sock = sock
connection.request("GET", path, headers={"Host": host})
answer = connection.getresponse()
print(json.dumps({"status": answer.status, "headers": dict(answer.getheaders()),
                  "body": answer.read().decode(errors="replace"), "certificate": fingerprint,
                  "tls": version if scheme == "https" else None}))
"""
CLIENT_CONNECT = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
    print("open")
except OSError as e:
    print("closed", e)
"""


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def client(docker_engine: None) -> docker.DockerClient:
    return docker.from_env(timeout=120)


@pytest.fixture(scope="session")
def service_images(client: docker.DockerClient) -> dict[str, BuiltImage]:
    """The recipes this test runs, built offline (or reused from the engine's cache)."""
    built = build_service_images(RECIPES, RECIPE_NAMES, cache_dir_from_env(), log=print,
                                 client=client)
    return {image.name: image for image in built}


@dataclass
class Box:
    root: Path
    config_dir: Path
    client: docker.DockerClient
    naming: Naming
    certificate_sha256: str
    outside: Container  # the client, on a network of its own
    gateway: str  # how the client reaches the host's published ports
    # The config the box was last converged to ("base", "applied"), None while a test
    # changes it: the state fixtures converge only when it is not the one they bring.
    converged_to: str | None = "base"

    def context(self, config: Appliance) -> FirstbootContext:
        return FirstbootContext(config, Paths(root=self.root), _docker=self.client)

    def configure(self, data: dict[str, Any]) -> Appliance:
        path = self.config_dir / "appliance.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return load_config(path)

    def port(self, container_port: int) -> int:
        proxy_container = self.client.containers.get(self.naming.proxy_container)
        return int(proxy_container.ports[f"{container_port}/tcp"][0]["HostPort"])

    def request(self, scheme: str, host: str, path: str = "/") -> dict[str, Any]:
        port = self.port(443 if scheme == "https" else 80)
        result = self.outside.exec_run(
            ["python3", "-c", CLIENT_REQUEST, scheme, self.gateway, str(port), host, path])
        assert result.exit_code == 0, result.output.decode()
        answer: dict[str, Any] = json.loads(result.output)
        return answer

    def connect(self, address: str, port: int) -> str:
        result = self.outside.exec_run(["python3", "-c", CLIENT_CONNECT, address, str(port)])
        return str(result.output.decode().strip())

    def container_ids(self) -> dict[str, str]:
        found = self.client.containers.list(all=True, filters=self.naming.filters())
        return {c.labels["arkbox.service"]: str(c.id) for c in found}


def base_config_data() -> dict[str, Any]:
    """default.yaml without mail (the mail issue adds its container)."""
    data: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    data["mail"] = {"enabled": False}
    # The roundcube recipe reads ROUNDCUBE_* (see its recipe.yaml); default.yaml
    # still names ROUNDCUBEMAIL_* variables, which the image ignores.
    data["services"]["webmail"]["environment"] = {
        "ROUNDCUBE_DB_HOST": "db",
        "ROUNDCUBE_DB_NAME": "roundcube",
        "ROUNDCUBE_DB_USER": "roundcube",
        "ROUNDCUBE_DB_PASSWORD": {"file": "secrets/webmail-db-password"},
        "ROUNDCUBE_DES_KEY": {"file": "secrets/webmail-des-key"},
    }
    return data


def lay_out_root(root: Path, images: dict[str, BuiltImage]) -> str:
    """What the image build and the tls step leave on a box; returns the cert's sha256."""
    share = root / "usr/share/arkbox"
    for name in RECIPE_NAMES:
        (share / "recipes" / name).mkdir(parents=True)
        shutil.copy(RECIPES / name / "recipe.yaml", share / "recipes" / name / "recipe.yaml")
    (share / "build-manifest.json").write_text(json.dumps({"service_images": [
        {"name": i.name, "tag": i.tag, "id": i.image_id, "size": i.size}
        for i in images.values()]}))
    live = root / "srv/arkbox/tls/live"
    live.mkdir(parents=True)
    fullchain, key = self_signed(HOSTNAMES)
    (live / "fullchain.pem").write_bytes(fullchain)
    (live / "privkey.pem").write_bytes(key)
    (live / "privkey.pem").chmod(0o600)
    return leaf_fingerprint(fullchain)


def self_signed(hostnames: tuple[str, ...]) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hostnames]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return (certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def remove_everything(client: docker.DockerClient, naming: Naming) -> None:
    """Every container and network of this box, and the test's own client."""
    for filters in (naming.filters(), client_filters(naming)):
        for container in client.containers.list(all=True, filters=filters):
            container.remove(force=True)
    for filters in (naming.filters(), client_filters(naming)):
        for network in client.networks.list(filters=filters):
            network.remove()


def client_labels(naming: Naming) -> dict[str, str]:
    """The client is the test's, not the box's: the steps must not see it."""
    return {"arkbox-test.client": naming.prefix}


def client_filters(naming: Naming) -> dict[str, str | list[str] | bool]:
    return {"label": [f"arkbox-test.client={naming.prefix}"]}


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, client: docker.DockerClient,
        service_images: dict[str, BuiltImage]) -> Iterator[Box]:
    root = tmp_path_factory.mktemp("box")
    naming = Naming.for_root(root)
    remove_everything(client, naming)
    config_dir = root / "config"
    shutil.copytree(DEFAULT_CONFIG_PATH.parent / "secrets", config_dir / "secrets")
    certificate = lay_out_root(root, service_images)
    try:
        network = client.networks.create(f"{naming.prefix}-outside", driver="bridge",
                                          labels=client_labels(naming))
        gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
        outside = client.containers.run(
            service_images["radicale"].image_id, entrypoint=["sleep", "infinity"],
            name=f"{naming.prefix}-outside", network=network.name, detach=True,
            labels=client_labels(naming))
        yield Box(root, config_dir, client, naming, certificate, outside, gateway)
    finally:
        remove_everything(client, naming)


@pytest.fixture(scope="module")
def first_boot(box: Box) -> dict[str, str]:
    """services, proxy, health on the fresh box: each step's summary and its time."""
    ctx = box.context(box.configure(base_config_data()))
    timings: dict[str, str] = {}
    started = time.monotonic()
    timings["services"] = services.run(ctx).summary
    timings["proxy"] = converge_proxy(ctx, served_mail_sites(ctx), ANY_FREE_PORT).summary()
    timings["health"] = health.run(ctx).summary
    timings["seconds"] = f"{time.monotonic() - started:.1f}"
    print(f"\nfirst boot: {timings}")
    return timings


def applied_config_data() -> dict[str, Any]:
    """The base config with a service added (notes), a route moved (the wiki's) and a
    service removed (the calendar)."""
    data = base_config_data()
    data["services"]["notes"] = {
        "recipe": "dokuwiki",
        "volumes": {"data": "/var/lib/dokuwiki/data"},
        "route": {"hostname": "notes.arkbox.test", "port": 80},
        "healthcheck": {"http": "/doku.php"},
    }
    data["services"]["wiki"]["route"]["hostname"] = "docs.arkbox.test"
    del data["services"]["calendar"]
    return data


def converge(box: Box, name: str, data: dict[str, Any]) -> None:
    """Bring the box to config `name` (services, proxy, health), unless it runs it."""
    if box.converged_to == name:
        return
    ctx = box.context(box.configure(data))
    services.run(ctx)
    proxy.run(ctx)
    health.run(ctx)
    box.converged_to = name


@pytest.fixture
def base_state(box: Box, first_boot: dict[str, str]) -> None:
    """The box runs the base config, as first boot left it (a test before may have
    applied another)."""
    converge(box, "base", base_config_data())


@pytest.fixture
def applied_state(box: Box, first_boot: dict[str, str]) -> None:
    """The box runs the config of the apply test (notes, docs.arkbox.test, no calendar)."""
    converge(box, "applied", applied_config_data())


# ---------------------------------------------------------------- fresh boot


def test_first_boot_reaches_all_healthy(first_boot: dict[str, str]) -> None:
    assert first_boot["services"] == "created calendar db webmail wiki"
    # The box's own host name serves the status page (config/default.yaml has it on).
    assert first_boot["proxy"].startswith(
        "4 host(s): arkbox.test cal.arkbox.test webmail.arkbox.test wiki.arkbox.test")
    assert first_boot["health"] == (
        "5/5 services healthy, 3/3 routes answer (self-signed fallback)")


def test_http_redirects_to_https(box: Box, base_state: None) -> None:
    answer = box.request("http", "wiki.arkbox.test", "/doku.php?id=start")
    assert answer["status"] == 301
    assert answer["headers"]["Location"] == "https://wiki.arkbox.test/doku.php?id=start"


def test_acme_challenges_are_answered_on_port_80(box: Box, base_state: None) -> None:
    challenge = box.root / "srv/arkbox/acme-webroot/.well-known/acme-challenge/token-1"
    challenge.write_text("token-1.thumbprint")
    challenge.chmod(0o644)
    answer = box.request("http", "cal.arkbox.test", "/.well-known/acme-challenge/token-1")
    assert (answer["status"], answer["body"]) == (200, "token-1.thumbprint")


def test_each_route_serves_its_real_app(box: Box, base_state: None) -> None:
    calendar = box.request("https", "cal.arkbox.test", "/.web/")
    assert calendar["status"] == 200 and "Radicale" in calendar["body"]
    wiki = box.request("https", "wiki.arkbox.test", "/doku.php?id=start")
    assert wiki["status"] == 200 and "Welcome to your wiki" in wiki["body"]
    # The login page renders only with a working database session store (PostgreSQL).
    webmail = box.request("https", "webmail.arkbox.test", "/")
    assert webmail["status"] == 200
    assert 'id="rcmloginuser"' in webmail["body"] or 'name="_user"' in webmail["body"]
    for answer in (calendar, wiki, webmail):
        assert answer["certificate"] == box.certificate_sha256  # the fallback one
        assert answer["headers"]["Strict-Transport-Security"] == "max-age=63072000"
        assert answer["tls"] in {"TLSv1.2", "TLSv1.3"}


def test_unknown_host_gets_no_certificate_and_wrong_host_is_misdirected(
        box: Box, base_state: None) -> None:
    assert "tls_error" in box.request("https", "unknown.arkbox.test")
    # Known SNI, unknown Host header: the default server answers 421.
    port = box.port(443)
    result = box.outside.exec_run(["python3", "-c", CLIENT_REQUEST.replace(
        'headers={"Host": host}', 'headers={"Host": "other.test"}'),
        "https", box.gateway, str(port), "wiki.arkbox.test", "/"])
    assert json.loads(result.output)["status"] == 421


def test_service_ports_are_not_reachable_from_outside(
        box: Box, base_state: None) -> None:
    for service, port in (("calendar", 5232), ("db", 5432), ("wiki", 80)):
        container = box.client.containers.get(box.naming.container(service))
        assert container.ports == {} or all(not v for v in container.ports.values())
        address = next(iter(container.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
        assert box.connect(address, port).startswith("closed"), f"{service} reachable"
        assert box.connect(service, port).startswith("closed")  # no name either


def test_containers_are_hardened_and_hold_no_secret_in_env(
        box: Box, base_state: None) -> None:
    secrets = {p.read_text().strip() for p in (box.config_dir / "secrets").iterdir()}
    for service in ("calendar", "wiki", "webmail", "db"):
        attrs = box.client.api.inspect_container(box.naming.container(service))
        host = attrs["HostConfig"]
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
        assert host["SecurityOpt"] == ["no-new-privileges:true"]
        assert host["ReadonlyRootfs"] is True
        assert "/tmp" in host["Tmpfs"]
        assert host["PidsLimit"] > 0 and host["Memory"] > 0
        assert host["RestartPolicy"]["Name"] == "unless-stopped"
        assert not host["PortBindings"]
        assert attrs["Config"]["Labels"]["arkbox.config-hash"]
        env = " ".join(attrs["Config"]["Env"] or [])
        assert not any(secret in env for secret in secrets)
    published = box.client.api.inspect_container(box.naming.proxy_container)["HostConfig"][
        "PortBindings"]
    assert sorted(published) == ["443/tcp", "80/tcp"]


def test_volumes_belong_to_the_app_user(box: Box, base_state: None) -> None:
    data = box.root / "srv/arkbox/volumes/db/data"
    assert (data.stat().st_uid, data.stat().st_mode & 0o777) == (220, 0o700)
    assert (data / "PG_VERSION").exists()  # PostgreSQL initialised its cluster there
    users = box.root / "srv/arkbox/secrets/mounts/calendar/etc_radicale_users"
    assert (users.stat().st_uid, users.stat().st_mode & 0o777) == (210, 0o400)


def test_manifest_describes_the_box(box: Box, base_state: None) -> None:
    manifest = json.loads((box.root / "srv/arkbox/manifest.json").read_text())
    assert sorted(s["name"] for s in manifest["services"]) == ["calendar", "db", "webmail",
                                                               "wiki"]
    ids = {c.labels["arkbox.service"]: c.attrs["Image"]
           for c in box.client.containers.list(filters=box.naming.filters())}
    for service in manifest["services"]:
        assert service["image"]["id"] == ids[service["name"]]
    assert manifest["proxy"]["image"]["id"] == ids["proxy"]


def test_rerun_changes_nothing(box: Box, base_state: None) -> None:
    ctx = box.context(box.configure(base_config_data()))
    before = box.container_ids()
    manifest = (box.root / "srv/arkbox/manifest.json").read_bytes()
    started = time.monotonic()
    assert services.run(ctx).changed is False
    assert proxy.run(ctx).changed is False
    assert health.run(ctx).summary.startswith("5/5 services healthy")
    assert services.verify(ctx) is None and proxy.verify(ctx) is None
    print(f"\nre-run: {time.monotonic() - started:.1f} s")
    assert box.container_ids() == before
    assert (box.root / "srv/arkbox/manifest.json").read_bytes() == manifest


# ---------------------------------------------------------------- a config change


def test_apply_adds_moves_and_removes_exactly_what_changed(
        box: Box, base_state: None) -> None:
    box.converged_to = None
    ctx = box.context(box.configure(applied_config_data()))
    sentinel = box.root / "srv/arkbox/volumes/calendar/collections/kept.txt"
    sentinel.write_text("calendar data")
    before = box.container_ids()

    # Requests to an untouched route keep being answered while the proxy reloads.
    failures: list[str] = []
    stop = threading.Event()
    pin = box.certificate_sha256

    def keep_asking() -> None:
        while not stop.is_set():
            problem = route_problem(box.port(443), "webmail.arkbox.test", "/", pin)
            if problem:
                failures.append(problem)

    asking = threading.Thread(target=keep_asking)
    asking.start()
    try:
        services_outcome = services.run(ctx)
        proxy_outcome = proxy.run(ctx)
    finally:
        stop.set()
        asking.join()
    assert services_outcome.summary == "created notes; removed calendar (volumes kept); 3 unchanged"
    assert "reloaded" in proxy_outcome.summary and "container" not in proxy_outcome.summary
    assert failures == []

    after = box.container_ids()
    assert set(after) == {"db", "notes", "proxy", "webmail", "wiki"}
    for unchanged in ("db", "webmail", "wiki", "proxy"):
        assert after[unchanged] == before[unchanged], f"{unchanged} was recreated"
    assert sentinel.read_text() == "calendar data"
    networks = {n.name for n in box.client.networks.list(filters=box.naming.filters("service"))}
    assert box.naming.network("calendar") not in networks

    assert health.run(ctx).summary == (
        "5/5 services healthy, 3/3 routes answer (self-signed fallback)")
    assert "Welcome to your wiki" in box.request("https", "docs.arkbox.test",
                                                 "/doku.php?id=start")["body"]
    assert box.request("https", "notes.arkbox.test", "/doku.php?id=start")["status"] == 200
    assert "tls_error" in box.request("https", "wiki.arkbox.test")  # the old name is gone
    assert "tls_error" in box.request("https", "cal.arkbox.test")

    # And once converged, another run changes nothing.
    assert services.run(ctx).summary == "4/4 services unchanged"
    assert proxy.run(ctx).changed is False
    box.converged_to = "applied"


class PowerCut(BaseException):
    """Stands for SIGKILL at a checkpoint: nothing after it runs."""


def cut_power_at(ctx: FirstbootContext, point: str) -> None:
    def checkpoint(step: str, reached: str) -> None:
        if reached == point:
            raise PowerCut(f"{step}:{point}")

    ctx.on_checkpoint = checkpoint


def test_power_cuts_inside_the_steps_converge_on_the_next_run(
        box: Box, applied_state: None) -> None:
    # From the apply test's config (notes, docs.arkbox.test), the wiki gets more memory
    # (its container is recreated) and its old host name back.
    data = applied_config_data()
    data["services"]["wiki"]["route"]["hostname"] = "wiki.arkbox.test"
    data["services"]["wiki"]["resources"]["memory"] = "384M"
    box.converged_to = None
    config = box.configure(data)

    interrupted = box.context(config)
    cut_power_at(interrupted, "created-wiki")  # created, never started
    with pytest.raises(PowerCut):
        services.run(interrupted)
    cut_power_at(interrupted, "files-written")  # new config on disk, nginx not reloaded
    with pytest.raises(PowerCut):
        proxy.run(interrupted)

    ctx = box.context(config)
    assert services.run(ctx).summary == "started wiki; 3 unchanged"
    proxy_outcome = proxy.run(ctx)
    assert "reloaded" in proxy_outcome.summary
    assert health.run(ctx).summary.startswith("5/5 services healthy, 3/3 routes answer")
    wiki = box.client.api.inspect_container(box.naming.container("wiki"))
    assert wiki["HostConfig"]["Memory"] == 384 * 1024**2
    assert box.request("https", "wiki.arkbox.test", "/doku.php?id=start")["status"] == 200
    assert services.run(ctx).changed is False and proxy.run(ctx).changed is False
