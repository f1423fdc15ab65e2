"""The service images, built offline from the trixie base, really work.

One session fixture builds every recipe (or reuses the cached images). Each image is
then run the way its recipe.yaml says (cap-drop ALL plus only its capabilities,
no-new-privileges, read-only root fs, its tmpfs mounts) on a private network, and
spoken to with a real client over a port published on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.client
import imaplib
import re
import shutil
import smtplib
import socket
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from conftest import require_tool
from docker.models.containers import Container
from docker.models.networks import Network

from builder.pipeline.cache import cache_dir_from_env
from builder.pipeline.service_images import (
    BaseSpec,
    BuiltImage,
    RecipeState,
    base_key,
    build_service_images,
    docker_build_argv,
    list_recipes,
    mmdebstrap_argv,
    rebuild_reason,
    recipe_files,
    recipe_key,
)
from firstboot.core.recipe import Recipe, RecipeInvalid, load_recipe, recipe_path


def integration(test: Callable[..., None]) -> Callable[..., None]:
    """Needs the Docker Engine and builds images (the pure checks below run anywhere)."""
    return pytest.mark.slow(pytest.mark.integration(test))


RECIPES = Path(__file__).resolve().parents[2] / "image" / "recipes"
EXPECTED = {"proxy", "mail", "radicale", "dokuwiki", "roundcube", "postgres", "backup-server"}
READY_TIMEOUT_S = 120


def recipe(name: str) -> Recipe:
    return load_recipe(recipe_path(RECIPES, name))


# ---------------------------------------------------------------- fixtures


@dataclass
class Built:
    images: dict[str, BuiltImage]
    log: list[str]
    seconds: float


@pytest.fixture(scope="session")
def client(docker_engine: None) -> docker.DockerClient:
    return docker.from_env()


def build_all(client: docker.DockerClient, what: str) -> Built:
    """Every recipe, built or reused, with the build's log lines and its time printed."""
    log: list[str] = []
    started = time.monotonic()
    images = build_service_images(RECIPES, None, cache_dir_from_env(), log=log.append,
                                  client=client)
    seconds = time.monotonic() - started
    print("\n".join(log) + f"\n{what} {seconds:.1f} s")
    return Built({i.name: i for i in images}, log, seconds)


@pytest.fixture(scope="session")
def built(client: docker.DockerClient) -> Built:
    return build_all(client, "service images ready in")


@dataclass
class Lab:
    """Containers, volumes and a private network made by one test, removed after it."""

    client: docker.DockerClient
    images: dict[str, BuiltImage]
    network: Network
    tag: str
    containers: list[Container] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    def volume(self, name: str) -> str:
        full = f"arkbox-test-{name}-{self.tag}"
        self.client.volumes.create(full)
        self.volumes.append(full)
        return full

    def run(self, name: str, *, ports: tuple[int, ...] = (), env: dict[str, str] | None = None,
            volumes: dict[str, dict[str, str]] | None = None,
            hostname: str | None = None) -> Service:
        """Start the image of recipe `name` as its recipe.yaml says it runs; wait until healthy."""
        meta = recipe(name)
        container = self.client.containers.run(
            self.images[name].tag,
            detach=True,
            name=f"arkbox-test-{name}-{self.tag}",
            hostname=hostname,
            network=self.network.name,
            cap_drop=["ALL"],
            cap_add=list(meta.capabilities),
            security_opt=["no-new-privileges"],
            read_only=meta.read_only,
            tmpfs=dict.fromkeys(meta.tmpfs, ""),
            environment=env or {},
            volumes=volumes or {},
            ports={f"{p}/tcp": ("127.0.0.1", None) for p in ports},
        )
        self.containers.append(container)
        service = Service(container)
        service.wait_healthy()
        return service

    def cleanup(self) -> None:
        for container in reversed(self.containers):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        for name in self.volumes:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.volumes.get(name).remove(force=True)
        self.network.remove()


@dataclass
class Service:
    container: Container

    @property
    def name(self) -> str:
        return str(self.container.name)

    def port(self, container_port: int) -> int:
        self.container.reload()
        bindings = self.container.attrs["NetworkSettings"]["Ports"][f"{container_port}/tcp"]
        return int(bindings[0]["HostPort"])

    def exec(self, *argv: str, user: str = "") -> tuple[int, str]:
        result = self.container.exec_run(list(argv), user=user)
        return int(result.exit_code), result.output.decode(errors="replace")

    def logs(self) -> str:
        return bytes(self.container.logs()).decode(errors="replace")

    def wait_healthy(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Poll the image's own healthcheck (the HEALTHCHECK command) until it passes."""
        deadline = time.monotonic() + timeout
        while True:
            self.container.reload()
            if self.container.status != "running":
                pytest.fail(f"{self.name} stopped ({self.container.status}):\n{self.logs()}")
            code, _ = self.exec("/usr/local/bin/healthcheck")
            if code == 0:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} not healthy after {timeout} s:\n{self.logs()}")
            time.sleep(1)


@pytest.fixture
def lab(client: docker.DockerClient, built: Built) -> Iterator[Lab]:
    tag = uuid.uuid4().hex[:8]
    network = client.networks.create(f"arkbox-test-{tag}", driver="bridge")
    lab = Lab(client, built.images, network, tag)
    try:
        yield lab
    finally:
        lab.cleanup()


# ---------------------------------------------------------------- helpers


def http_request(port: int, method: str, path: str, *, body: str | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        text = response.read().decode(errors="replace")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, text
    finally:
        conn.close()


def basic_auth(user: str, password: str) -> dict[str, str]:
    import base64

    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _assert_in(needle: str, haystack: str) -> None:
    assert needle in haystack, haystack[-2000:]


def retry(action: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


# ---------------------------------------------------------------- pure: argv, keys, recipes


def test_base_is_a_minbase_without_docs_from_debian_only() -> None:
    spec = BaseSpec(mirror="http://mirror.test/debian", security_mirror="http://sec.test/ds")
    argv = mmdebstrap_argv(spec, Path("/out/base.tar"))
    assert argv[:2] == ("mmdebstrap", "--variant=minbase")
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in argv
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in argv
    assert "--dpkgopt=path-exclude=/usr/share/locale/*" in argv
    assert argv[-5:-3] == ("trixie", "/out/base.tar")
    assert argv[-3:] == ("deb http://mirror.test/debian trixie main",
                         "deb http://mirror.test/debian trixie-updates main",
                         "deb http://sec.test/ds trixie-security main")


def test_base_key_changes_exactly_with_its_inputs() -> None:
    spec = BaseSpec()
    assert base_key(spec) == base_key(BaseSpec())
    assert base_key(spec) != base_key(BaseSpec(mirror="http://other.test/debian"))
    assert base_key(spec) != base_key(BaseSpec(source_date_epoch=1))


def test_recipe_key_covers_every_file_and_its_mode(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "a.conf").write_text("a\n")
    files = recipe_files(tmp_path)
    key = recipe_key("sha256:layer", files)
    assert set(files) == {"Dockerfile", "conf/a.conf"}
    assert recipe_key("sha256:other", files) != key
    (tmp_path / "conf" / "a.conf").chmod(0o755)
    assert recipe_key("sha256:layer", recipe_files(tmp_path)) != key
    (tmp_path / "conf" / "a.conf").chmod(0o644)
    assert recipe_key("sha256:layer", recipe_files(tmp_path)) == key
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"")
    assert recipe_key("sha256:layer", recipe_files(tmp_path)) == key


def test_rebuild_reason_names_what_changed() -> None:
    old = RecipeState("k", "sha256:layer", {"Dockerfile": "1", "entrypoint": "1", "x": "1"})
    new = {"Dockerfile": "2", "entrypoint": "1", "y": "1"}
    assert rebuild_reason(None, "sha256:layer", new) == "no earlier build"
    assert rebuild_reason(old, "sha256:new", new) == "base image changed"
    assert rebuild_reason(old, "sha256:layer", new) == (
        "recipe changed: Dockerfile, x (removed), y (added)")
    assert rebuild_reason(old, "sha256:layer", dict(old.files)) == "image missing from the engine"


def test_build_never_pulls_and_uses_the_local_base() -> None:
    argv = docker_build_argv(Path("/r/proxy"), "arkbox/proxy:k", "arkbox/base:b", "k")
    assert argv[:3] == ("docker", "build", "--pull=false")
    assert "BASE=arkbox/base:b" in argv and argv[-1] == "/r/proxy"
    for name in list_recipes(RECIPES):
        dockerfile = (RECIPES / name / "Dockerfile").read_text()
        froms = [line for line in dockerfile.splitlines() if line.startswith("FROM")]
        assert froms == ["FROM ${BASE}"], f"{name}: FROM must be the imported base"


def test_every_recipe_says_how_it_runs() -> None:
    assert set(list_recipes(RECIPES)) >= EXPECTED
    for name in list_recipes(RECIPES):
        meta = recipe(name)
        assert meta.healthcheck.command and meta.user.name, name
        if name == "client":  # the rig's outside client serves nothing and is never baked in
            continue
        assert meta.ports, name
        assert "/tmp" in meta.tmpfs, name
    assert recipe("postgres").backup.dump is not None
    assert recipe("postgres").backup.dump[0] == "pg_dumpall"


def test_a_bad_recipe_yaml_fails_the_build_reporting_every_problem(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\n")
    (tmp_path / "bad" / "recipe.yaml").write_text(
        "description: x\ncapabilities: {cap_net_admin: x}\nbackup: {consistency: maybe}\n")
    # Checked before the engine is asked anything: no client is given, none is made.
    with pytest.raises(RecipeInvalid) as caught:
        build_service_images(tmp_path, ["bad"], tmp_path / "cache", log=lambda _: None)
    message = str(caught.value)
    assert str(tmp_path / "bad" / "recipe.yaml") in message
    assert "line 1  user: required key is missing" in message
    assert "line 1  healthcheck: required key is missing" in message
    assert "cap_net_admin" in message and "line 3  backup.consistency" in message


# ---------------------------------------------------------------- the images


@integration
def test_every_recipe_is_built_from_the_local_base(built: Built, client: docker.DockerClient,
                                                   ) -> None:
    assert set(list_recipes(RECIPES)) >= EXPECTED
    assert set(built.images) == set(list_recipes(RECIPES))
    base_tags = [t for i in client.images.list(name="arkbox/base") for t in i.tags]
    assert base_tags, "the base image is imported from the mmdebstrap tarball"
    base_layer = client.images.get(base_tags[0]).attrs["RootFS"]["Layers"][0]
    for image in built.images.values():
        attrs = client.images.get(image.tag).attrs
        assert attrs["Id"] == image.image_id
        assert attrs["RootFS"]["Layers"][0] == base_layer, f"{image.name} is not FROM the base"
        assert attrs["Config"]["Healthcheck"]["Test"], f"{image.name} has no HEALTHCHECK"
        meta = recipe(image.name)
        assert attrs["Config"]["Healthcheck"]["Test"] == ["CMD", *meta.healthcheck.command]
        assert meta.backup.consistency in ("pause", "dump", "none")


@integration
def test_proxy_redirects_to_https_and_serves_acme_challenges(lab: Lab) -> None:
    webroot = lab.volume("acme")
    # The TLS step (root on the host) writes challenge files into the webroot volume.
    lab.client.containers.run(
        lab.images["proxy"].tag, remove=True, user="root", entrypoint=["sh", "-c"],
        command=["echo token-123.thumbprint > /var/www/acme/.well-known/acme-challenge/token-123"],
        volumes={webroot: {"bind": "/var/www/acme", "mode": "rw"}}, network_disabled=True)
    proxy = lab.run("proxy", ports=(80,),
                    volumes={webroot: {"bind": "/var/www/acme", "mode": "ro"}})
    port = proxy.port(80)

    status, headers, _ = http_request(port, "GET", "/inbox?x=1", headers={"Host": "ex.test"})
    assert status == 301
    assert headers["location"] == "https://ex.test/inbox?x=1"

    status, _, body = http_request(port, "GET", "/.well-known/acme-challenge/token-123",
                                   headers={"Host": "ex.test"})
    assert (status, body.strip()) == (200, "token-123.thumbprint")
    status, _, _ = http_request(port, "GET", "/.well-known/acme-challenge/missing")
    assert status == 404
    code, user = proxy.exec("id", "-un")
    assert (code, user.strip()) == (0, "www-data")


@integration
def test_radicale_creates_a_calendar_and_stores_an_event(lab: Lab, tmp_path: Path) -> None:
    require_tool("openssl")
    hashed = subprocess.run(["openssl", "passwd", "-6", "s3cret"], capture_output=True,
                            text=True, check=True).stdout.strip()
    users = tmp_path / "users"
    users.write_text(f"alice:{hashed}\n")
    users.chmod(0o644)
    radicale = lab.run("radicale", ports=(5232,), volumes={
        lab.volume("radicale"): {"bind": "/var/lib/radicale/collections", "mode": "rw"},
        str(users): {"bind": "/etc/radicale/users", "mode": "ro"},
    })
    port = radicale.port(5232)
    auth = basic_auth("alice", "s3cret")

    status, _, _ = http_request(port, "MKCALENDAR", "/alice/work/", headers=auth)
    assert status == 201
    event = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//arkbox//test//EN\r\nBEGIN:VEVENT\r\n"
             "UID:standup-1\r\nDTSTAMP:20250101T090000Z\r\nDTSTART:20250102T090000Z\r\n"
             "SUMMARY:Stand-up\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    status, _, _ = http_request(port, "PUT", "/alice/work/standup-1.ics", body=event,
                                headers={**auth, "Content-Type": "text/calendar"})
    assert status == 201
    status, _, body = http_request(port, "PROPFIND", "/alice/", headers={**auth, "Depth": "1"})
    assert status == 207 and "/alice/work/" in body
    status, _, body = http_request(port, "GET", "/alice/work/standup-1.ics", headers=auth)
    assert status == 200 and "SUMMARY:Stand-up" in body
    status, _, _ = http_request(port, "PROPFIND", "/alice/", headers=basic_auth("alice", "no"))
    assert status == 401


@integration
def test_dokuwiki_serves_a_real_page_without_the_installer(lab: Lab) -> None:
    wiki = lab.run("dokuwiki", ports=(80,), env={"DOKUWIKI_ADMIN_PASSWORD": "wiki-admin-pw"},
                   volumes={
                       lab.volume("wiki-data"): {"bind": "/var/lib/dokuwiki/data", "mode": "rw"},
                       lab.volume("wiki-acl"): {"bind": "/var/lib/dokuwiki/acl", "mode": "rw"},
                   })
    port = wiki.port(80)
    status, _, body = http_request(port, "GET", "/doku.php?id=start")
    assert status == 200
    assert "DokuWiki" in body and "Welcome to your wiki" in body
    # (wiki:syntax embeds an RSS feed, which Debian's libphp-simplepie cannot parse yet)
    status, _, body = http_request(port, "GET", "/doku.php?id=wiki:dokuwiki")
    assert status == 200 and "DokuWiki is a simple to use" in body
    for private in ("/inc/init.php", "/conf/local.php", "/install.php"):
        assert http_request(port, "GET", private)[0] in (403, 404), private
    assert "created the admin account admin" in wiki.logs()
    status, _, body = http_request(port, "GET", "/doku.php?id=start&do=register")
    assert "Register" not in body or "disabled" in body.lower() or status != 200


# Inside the container from its first second: is the server "ready" (the health check's
# pg_isready) while PID 1 is still the entrypoint, i.e. the private init-time server?
READY_ONLY_WHEN_SERVING = """
for _ in $(seq 1500); do
  if pg_isready -q; then
    comm=$(cat /proc/1/comm)
    [ "$comm" = postgres ] && exit 0
    echo "pg_isready answered while PID 1 is $comm (the init-time server)"; exit 1
  fi
  sleep 0.02
done
echo "never ready"; exit 1
"""


@integration
def test_postgres_is_ready_only_once_the_real_server_runs(lab: Lab) -> None:
    """A restore loads its dump as soon as the health check passes; during initialisation a
    private server runs and is then stopped, so it must not count as ready."""
    container = lab.client.containers.run(
        lab.images["postgres"].tag, detach=True, name=f"{lab.tag}-pg-init",
        environment={"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "pw"})
    try:
        result = container.exec_run(["sh", "-c", READY_ONLY_WHEN_SERVING])
        assert result.exit_code == 0, result.output.decode(errors="replace")
    finally:
        container.remove(force=True)


@integration
def test_postgres_answers_and_roundcube_initialises_its_schema(lab: Lab) -> None:
    postgres = lab.run("postgres", env={
        "POSTGRES_USER": "roundcube", "POSTGRES_DB": "roundcube",
        "POSTGRES_PASSWORD": "pg-pw-with-'quote",
    }, volumes={lab.volume("pgdata"): {"bind": "/var/lib/postgresql/data", "mode": "rw"}})
    code, out = postgres.exec("psql", "-Atc", "SELECT 6 * 7")
    assert (code, out.strip()) == (0, "42")

    roundcube = lab.run("roundcube", ports=(80,), env={
        "ROUNDCUBE_DB_HOST": postgres.name,
        "ROUNDCUBE_DB_PASSWORD": "pg-pw-with-'quote",
        "ROUNDCUBE_DES_KEY": "abcdefghijklmnopqrstuvwx",
    })
    status, headers, body = http_request(roundcube.port(80), "GET", "/")
    assert status == 200
    assert "rcmloginuser" in body and "rcmloginpwd" in body
    assert "empty database: creating the schema" in roundcube.logs()
    # A failed login reaches the container log (Roundcube's userlogins log is stderr).
    token = re.search(r'name="_token" value="([^"]+)"', body)
    assert token
    cookie = headers.get("set-cookie", "").split(";")[0]
    form = urllib.parse.urlencode({"_token": token.group(1), "_task": "login",
                                   "_action": "login", "_user": "nobody", "_pass": "wrong"})
    http_request(roundcube.port(80), "POST", "/?_task=login", body=form, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
    retry(lambda: _assert_in("nobody", roundcube.logs()), timeout=20)
    assert '"GET / HTTP/1.1" 200' in roundcube.logs()  # lighttpd's access log

    code, out = postgres.exec("psql", "-Atd", "roundcube", "-c",
                              "SELECT name FROM system WHERE name = 'roundcube-version'")
    assert (code, out.strip()) == (0, "roundcube-version")
    code, out = postgres.exec("psql", "-Atd", "roundcube", "-c",
                              "SELECT count(*) FROM session")
    assert code == 0 and int(out.strip()) >= 1, "the login page made a session in postgres"

    # The backup's consistent copy: pg_dumpall streams SQL out of the container.
    stream = lab.client.api.exec_create(postgres.container.id, ["pg_dumpall", "--clean",
                                                                "--if-exists"])
    chunks = lab.client.api.exec_start(stream["Id"], stream=True)
    dump = b"".join(chunks).decode(errors="replace")
    assert "PostgreSQL database cluster dump" in dump
    assert "CREATE TABLE public.users" in dump and "roundcube-version" in dump
    assert lab.client.api.exec_inspect(stream["Id"])["ExitCode"] == 0


@integration
def test_mail_greets_on_smtp_and_imap(lab: Lab) -> None:
    mail = lab.run("mail", ports=(25, 143), hostname="mail.example.test", volumes={
        lab.volume("queue"): {"bind": "/var/spool/postfix", "mode": "rw"},
        lab.volume("mailboxes"): {"bind": "/var/mail", "mode": "rw"},
        lab.volume("spam"): {"bind": "/var/lib/rspamd", "mode": "rw"},
    })

    def ehlo() -> tuple[int, bytes, bytes]:
        with smtplib.SMTP("127.0.0.1", mail.port(25), timeout=20) as smtp:
            banner = smtp.docmd("NOOP")
            code, features = smtp.ehlo("client.example.test")
            return code, features, banner[1]

    code, features, _ = retry(ehlo)
    assert code == 250
    assert b"mail.example.test" in features and b"STARTTLS" in features

    imap = retry(lambda: imaplib.IMAP4("127.0.0.1", mail.port(143), timeout=20))
    try:
        assert b"Dovecot ready" in imap.welcome
        assert "IMAP4REV1" in imap.capabilities and "STARTTLS" in imap.capabilities
    finally:
        imap.logout()
    code, out = mail.exec("ps", "-o", "user=,comm=", "-p", "1")
    assert code == 0 and "entrypoint" in out

    # Through the queue (cleanup, the opendkim milter, qmgr) to local delivery.
    with smtplib.SMTP("127.0.0.1", mail.port(25), timeout=20) as smtp:
        refused = smtp.sendmail("someone@example.net", ["root@localhost"],
                                "Subject: queue test\r\n\r\nthrough the queue\r\n")
    assert refused == {}

    def delivered() -> None:
        code, out = mail.exec("cat", "/var/mail/root")
        assert code == 0 and "through the queue" in out, mail.logs()

    retry(delivered, timeout=30)


@integration
def test_mail_supervisor_stops_everything_on_sigterm(lab: Lab) -> None:
    mail = lab.run("mail", volumes={
        lab.volume("queue"): {"bind": "/var/spool/postfix", "mode": "rw"},
        lab.volume("mailboxes"): {"bind": "/var/mail", "mode": "rw"},
        lab.volume("spam"): {"bind": "/var/lib/rspamd", "mode": "rw"},
    })
    started = time.monotonic()
    mail.container.stop(timeout=20)
    mail.container.reload()
    assert mail.container.attrs["State"]["ExitCode"] == 0, mail.logs()
    assert time.monotonic() - started < 15
    assert "mail: stopping" in mail.logs()


@integration
def test_backup_server_is_key_only_ssh_with_borg(lab: Lab, tmp_path: Path) -> None:
    require_tool("ssh")
    require_tool("ssh-keygen")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = tmp_path / "authorized_keys"
    shutil.copy(key.with_suffix(".pub"), authorized)
    authorized.chmod(0o644)
    server = lab.run("backup-server", ports=(2222,), env={"SSH_PORT": "2222"}, volumes={
        lab.volume("repos"): {"bind": "/var/lib/borg", "mode": "rw"},
        lab.volume("hostkeys"): {"bind": "/etc/ssh/host_keys", "mode": "rw"},
        str(authorized): {"bind": "/etc/arkbox/authorized_keys", "mode": "ro"},
    })
    port = server.port(2222)

    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        banner = sock.recv(256).decode()
    assert banner.startswith("SSH-2.0-OpenSSH_")

    def ssh(*command: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        argv = ["ssh", "-p", str(port), "-i", str(key), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", *extra, "borg@127.0.0.1", *command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    result = ssh("borg", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("borg 1.4")
    refused = ssh("true", extra=("-o", "PreferredAuthentications=password,keyboard-interactive",
                                 "-o", "PubkeyAuthentication=no"))
    assert refused.returncode != 0 and "Permission denied (publickey)" in refused.stderr
    code, out = server.exec("borg", "--version", user="borg")
    assert code == 0 and out.startswith("borg 1.4")


# ---------------------------------------------------------------- the cache


@integration
def test_second_build_reuses_every_image(built: Built, client: docker.DockerClient) -> None:
    again = build_all(client, "warm build")
    assert all(image.cached for image in again.images.values())
    assert {n: i.image_id for n, i in again.images.items()} == {
        n: i.image_id for n, i in built.images.items()}
    assert again.log[0].startswith("base: cached (inputs unchanged)")
    for name in again.images:
        assert f"{name}: cached (recipe unchanged)" in "\n".join(again.log)
    assert again.seconds < 30


@integration
def test_changing_one_recipe_file_rebuilds_only_that_image(
    built: Built, client: docker.DockerClient, tmp_path: Path
) -> None:
    # Copies under other names, so the real images' tags are not touched.
    recipes = tmp_path / "recipes"
    for source, copy in (("proxy", "cachetest-proxy"), ("radicale", "cachetest-radicale")):
        shutil.copytree(RECIPES / source, recipes / copy)
    cache = tmp_path / "cache"
    names = ["cachetest-proxy", "cachetest-radicale"]
    try:
        first = build_service_images(recipes, names, cache, log=lambda _: None, client=client)
        with (recipes / "cachetest-radicale" / "config").open("a") as f:
            f.write("# a changed comment\n")
        log: list[str] = []
        second = build_service_images(recipes, names, cache, log=log.append, client=client)
        by_name = {i.name: i for i in second}
        assert by_name["cachetest-proxy"].cached
        assert by_name["cachetest-proxy"].image_id == first[0].image_id
        assert not by_name["cachetest-radicale"].cached
        assert by_name["cachetest-radicale"].reason == "recipe changed: config"
        assert any(line.startswith("cachetest-radicale: built in") and
                   "(recipe changed: config)" in line for line in log)
        assert "cachetest-proxy: cached (recipe unchanged)" in "\n".join(log)
    finally:
        # By tag: a copy built from identical files is the very image the real tag names
        # (the engine's build cache), and removing it by ID removed the real one too.
        for name in names:
            for image in client.images.list(name=f"arkbox/{name}"):
                for tag in image.tags:
                    if tag.startswith(f"arkbox/{name}:"):
                        client.images.remove(tag)
    for name in ("proxy", "radicale"):
        real = built.images[name]
        assert client.images.get(real.tag).id == real.image_id, f"{real.tag} was touched"
