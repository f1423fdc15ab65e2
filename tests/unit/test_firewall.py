"""The firewall: the rendered ruleset (golden), `nft -c`, the step's commands, and the rules at
work in throw-away network namespaces (never in this host's own ruleset)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require, require_tool

from firstboot import firewall_rules
from firstboot.core.config import DEFAULT_CONFIG_PATH, Appliance, load_config
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.execute import Completed
from firstboot.steps import firewall

GOLDEN = Path(__file__).resolve().parents[1] / "data/golden/nftables-default.conf"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF6YilbxuYcReyoVRXRnJrBiinY8edFG7Xgx8AxGsXkQ ops@laptop"


@pytest.fixture(scope="module")
def default() -> Appliance:
    return load_config(DEFAULT_CONFIG_PATH)


def config_from(tmp_path: Path, text: str) -> Appliance:
    path = tmp_path / "appliance.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(path)


@pytest.fixture
def restricted(tmp_path: Path) -> Appliance:
    return config_from(tmp_path, f"""
        appliance:
          name: alt
          domain: example.org
          hostname: box.example.org
          admin:
            user: ops
            ssh_keys: ["{KEY}"]
            ssh_port: 2222
            allow_from: [203.0.113.0/24, "2001:db8::/32"]
        firewall:
          allow:
            - {{port: 51820, proto: udp, comment: WireGuard}}
            - {{port: 8443, allow_from: ["2001:db8::/32"], comment: admin panel}}
        """)


def nft_check(path: Path) -> subprocess.CompletedProcess[str]:
    require_tool("nft")
    require(os.geteuid() == 0, "root (nft -c needs CAP_NET_ADMIN)")
    return subprocess.run(list(firewall.check_argv(path)), capture_output=True, text=True)


# ---------------------------------------------------------------- rendering


def test_default_ruleset_matches_the_golden_file(default: Appliance) -> None:
    rendered = firewall.render_ruleset(default)
    if os.environ.get("ARKBOX_UPDATE_GOLDEN"):
        GOLDEN.write_text(rendered)
    assert rendered == GOLDEN.read_text(), "re-render with ARKBOX_UPDATE_GOLDEN=1 and review"


def test_golden_ruleset_passes_nft_check() -> None:
    result = nft_check(GOLDEN)
    assert result.returncode == 0, result.stderr


def test_ruleset_replaces_only_arkbox_table_and_never_flushes(default: Appliance) -> None:
    text = firewall.render_ruleset(default)
    commands = [line for line in text.splitlines() if line and not line.startswith(("#", "\t"))]
    assert commands[:3] == ["table inet arkbox", "delete table inet arkbox", "table inet arkbox {"]
    assert "flush" not in text.replace('"flush ruleset"', "")
    assert "policy drop" in text and text.count("hook input") == 1


def test_default_opens_admin_web_and_mail_ports(default: Appliance) -> None:
    text = firewall.render_ruleset(default)
    assert "tcp dport 22 ct state new jump admin_ssh" in text
    assert "tcp dport { 80, 443, 25, 465, 587, 993 } accept" in text
    assert "ct original proto-dst { 80, 443, 25, 465, 587, 993 } accept" in text
    assert firewall.Plan.of(default).summary() == "open: 22(admin) 80 443 25 465 587 993"


def test_restricted_admin_and_extra_ports(restricted: Appliance, tmp_path: Path) -> None:
    text = firewall.render_ruleset(restricted)
    assert "elements = { 203.0.113.0/24 }" in text
    assert "elements = { 2001:db8::/32 }" in text
    assert "tcp dport 2222 ct state new jump admin_ssh" in text
    assert "tcp dport { 80, 443 } accept" in text  # mail is off
    assert '\t\tudp dport 51820 accept comment "WireGuard"' in text
    assert 'ip6 saddr { 2001:db8::/32 } tcp dport 8443 accept comment "admin panel"' in text
    assert firewall.Plan.of(restricted).summary() == (
        "open: 2222(admin from 2 nets) 80 443 51820/udp(WireGuard) 8443(admin panel)")
    path = tmp_path / "rules.nft"
    path.write_text(text)
    result = nft_check(path)
    assert result.returncode == 0, result.stderr


def test_admin_from_one_family_only_leaves_the_other_set_empty(tmp_path: Path) -> None:
    config = config_from(tmp_path, f"""
        appliance:
          name: alt
          domain: example.org
          hostname: box.example.org
          admin: {{user: ops, ssh_keys: ["{KEY}"], allow_from: [198.51.100.7/32]}}
        """)
    text = firewall.render_ruleset(config)
    v6_set = text[text.index("set admin_ssh_v6"):text.index("set ssh_meter_v4")]
    assert "elements" not in v6_set  # an empty set: no IPv6 source reaches SSH
    path = tmp_path / "rules.nft"
    path.write_text(text)
    assert nft_check(path).returncode == 0


@pytest.mark.parametrize(("networks", "expected"), [
    (["0.0.0.0/0", "::/0"], [""]),
    (["0.0.0.0/0"], ["meta nfproto ipv4"]),
    (["0.0.0.0/0", "2001:db8::/32"], ["meta nfproto ipv4", "ip6 saddr { 2001:db8::/32 }"]),
    (["10.0.0.0/8", "192.0.2.1/32"], ["ip saddr { 10.0.0.0/8, 192.0.2.1/32 }"]),
    (["::/0"], ["meta nfproto ipv6"]),
])
def test_source_matches(networks: list[str], expected: list[str]) -> None:
    assert firewall_rules.source_matches(networks) == expected


def test_ruleset_id_is_a_digest_of_the_rules(default: Appliance, restricted: Appliance) -> None:
    ids = {firewall.ruleset_id_of(firewall.render_ruleset(c)) for c in (default, restricted)}
    assert len(ids) == 2 and None not in ids
    listing = 'table inet arkbox {\n\tcomment "arkbox 0123456789abcdef"\n\tchain input {\n'
    assert firewall.ruleset_id_of(listing) == "0123456789abcdef"


# ---------------------------------------------------------------- the step, with a fake nft


class FakeNft:
    """Records argv; `nft list table` answers with the last loaded file's comment."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.loaded: str | None = None

    def __call__(self, argv: tuple[str, ...], **kwargs: Any) -> Completed:
        self.calls.append(tuple(argv))
        if argv[:2] == ("nft", "-f"):
            self.loaded = Path(argv[2]).read_text()
        if argv[:3] == ("nft", "list", "table"):
            if self.loaded is None:
                return Completed(tuple(argv), 1, "", "Error: No such file or directory")
            return Completed(tuple(argv), 0, self.loaded.split("delete table inet arkbox", 1)[1])
        return Completed(tuple(argv), 0)


def step_ctx(config: Appliance, root: Path, nft: FakeNft) -> FirstbootContext:
    unit = root / firewall.UNIT_FILE.lstrip("/")
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text("[Unit]\n")
    return FirstbootContext(config=config, paths=Paths(root), run=nft)


def test_step_checks_then_loads_then_persists(default: Appliance, tmp_path: Path) -> None:
    nft = FakeNft()
    ctx = step_ctx(default, tmp_path, nft)
    outcome = firewall.run(ctx)
    rendered = tmp_path / "etc/arkbox/rendered/nftables.conf"
    assert outcome.changed and outcome.summary == "open: 22(admin) 80 443 25 465 587 993"
    assert [c[:2] for c in nft.calls] == [("nft", "-c"), ("nft", "list"), ("nft", "-f")]
    assert nft.calls[0][3].endswith("nftables.conf.new")  # checked before it replaces the file
    assert nft.calls[2] == ("nft", "-f", str(rendered))
    assert rendered.read_text() == firewall.render_ruleset(default)
    assert oct(rendered.stat().st_mode & 0o777) == "0o600"
    boot = (tmp_path / "etc/nftables.conf").read_text()
    assert 'include "/etc/arkbox/rendered/nftables.conf"' in boot
    assert "flush ruleset" not in boot.replace('"flush ruleset"', "")
    link = tmp_path / "etc/systemd/system/sysinit.target.wants/nftables.service"
    assert str(link.readlink()) == "/usr/lib/systemd/system/nftables.service"
    drop_in = (tmp_path / "etc/systemd/system/nftables.service.d/arkbox.conf").read_text()
    assert "ExecStop=\nExecStop=/usr/sbin/nft delete table inet arkbox" in drop_in
    assert firewall.verify(ctx) is None


def test_step_rerun_changes_nothing(default: Appliance, tmp_path: Path) -> None:
    nft = FakeNft()
    ctx = step_ctx(default, tmp_path, nft)
    firewall.run(ctx)
    nft.calls.clear()
    outcome = firewall.run(ctx)
    assert not outcome.changed
    assert nft.calls == [("nft", "list", "table", "inet", "arkbox")]


def test_step_reloads_when_the_kernel_lost_the_table(default: Appliance, tmp_path: Path) -> None:
    nft = FakeNft()
    ctx = step_ctx(default, tmp_path, nft)
    firewall.run(ctx)
    nft.loaded = None  # e.g. someone ran `nft flush ruleset`
    assert firewall.verify(ctx) == (
        "the kernel does not hold the config's ruleset (table inet arkbox)")
    assert firewall.run(ctx).changed
    assert nft.calls[-1][:2] == ("nft", "-f")


def test_step_after_config_change_verify_says_why(default: Appliance, restricted: Appliance,
                                                  tmp_path: Path) -> None:
    nft = FakeNft()
    firewall.run(step_ctx(default, tmp_path, nft))
    changed = FirstbootContext(config=restricted, paths=Paths(tmp_path), run=nft)
    assert "differs from the config's ruleset" in (firewall.verify(changed) or "")
    assert firewall.run(changed).changed
    assert firewall.verify(changed) is None


# ---------------------------------------------------------------- in network namespaces

PROBE = textwrap.dedent("""
    import json, socket, sys
    results = {}
    for target in sys.argv[1:]:
        host, port = target.rsplit(":", 1)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1.5)
            try:
                s.connect((host.strip("[]"), int(port)))
                results[target] = "open" if s.recv(3) == b"ok\\n" else "odd"
            except ConnectionRefusedError:
                results[target] = "refused"
            except OSError:
                results[target] = "filtered"
    print(json.dumps(results))
""")
LISTEN = textwrap.dedent("""
    import socket, sys, threading
    def serve(port):
        s = socket.socket(socket.AF_INET6)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port)); s.listen()
        while True:
            c, _ = s.accept(); c.sendall(b"ok\\n"); c.close()
    for p in sys.argv[1:]:
        threading.Thread(target=serve, args=(int(p),), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()
""")


class Netns:
    """Three namespaces: a client, the appliance (our ruleset, a Docker-like DNAT) and a
    container behind the appliance on an interface named like a Docker bridge."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.client, self.box, self.container = (f"ark-{n}-{tag}" for n in ("cl", "box", "ct"))
        self.listeners: list[subprocess.Popen[str]] = []

    def sh(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                                text=True, timeout=60)
        assert not check or result.returncode == 0, (argv, result.stderr)
        return result

    def up(self, ruleset: Path) -> None:
        for ns in (self.client, self.box, self.container):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            self.sh(ns, "ip", "link", "set", "lo", "up")
        box, cl, ct = self.box, self.client, self.container
        self.sh(box, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
                "netns", cl)
        self.sh(box, "ip", "link", "add", "br-arktest", "type", "veth", "peer", "name", "eth0",
                "netns", ct)
        for ns, dev, v4, v6 in ((box, "eth0", "10.99.0.1/24", "fd99::1/64"),
                                (cl, "eth0", "10.99.0.2/24", "fd99::2/64"),
                                (box, "br-arktest", "172.31.99.1/24", None),
                                (ct, "eth0", "172.31.99.2/24", None)):
            self.sh(ns, "ip", "addr", "add", v4, "dev", dev)
            if v6:
                self.sh(ns, "ip", "-6", "addr", "add", v6, "dev", dev, "nodad")
            self.sh(ns, "ip", "link", "set", dev, "up")
        self.sh(ct, "ip", "route", "add", "default", "via", "172.31.99.1")
        # The client may even try to route to the container network directly.
        self.sh(cl, "ip", "route", "add", "172.31.99.0/24", "via", "10.99.0.1")
        self.sh(box, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # What Docker does for published ports: DNAT in its own table. 5232 plays a port
        # the engine would publish by mistake: our forward chain must still drop it.
        dnat = ruleset.with_name("dockerlike.nft")
        dnat.write_text(textwrap.dedent("""
            table ip dockerlike {
                chain prerouting {
                    type nat hook prerouting priority dstnat;
                    iifname "eth0" tcp dport 443 dnat to 172.31.99.2:8443
                    iifname "eth0" tcp dport 5232 dnat to 172.31.99.2:5232
                }
            }
            """))
        self.sh(box, "nft", "-f", str(dnat))
        self.sh(box, "nft", "-f", str(ruleset))
        self.listen(box, 22, 80, 8080)
        self.listen(ct, 8443, 5232)
        self.listen(cl, 9999)

    def listen(self, ns: str, *ports: int) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", LISTEN,
                                 *map(str, ports)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        self.listeners.append(proc)

    def probe(self, ns: str, *targets: str) -> dict[str, str]:
        out = self.sh(ns, sys.executable, "-c", PROBE, *targets).stdout
        return dict(json.loads(out))

    def down(self) -> None:
        for proc in self.listeners:
            proc.kill()
            proc.wait()
        for ns in (self.client, self.box, self.container):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture(scope="module")
def netns(default: Appliance, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Netns]:
    require_tool("ip")
    require_tool("nft")
    require(os.geteuid() == 0, "root (network namespaces)")
    ruleset = tmp_path_factory.mktemp("nft") / "nftables.conf"
    ruleset.write_text(firewall.render_ruleset(default))
    net = Netns()
    try:
        net.up(ruleset)
        time.sleep(0.2)
        yield net
    finally:
        net.down()


def test_in_netns_the_loaded_table_carries_the_digest(netns: Netns, default: Appliance) -> None:
    listing = netns.sh(netns.box, *firewall.list_table_argv()).stdout
    assert firewall.ruleset_id_of(listing) == firewall.ruleset_id_of(
        firewall.render_ruleset(default))
    # the Docker-like table is still there: ours replaced only itself
    assert "dockerlike" in netns.sh(netns.box, "nft", "list", "tables").stdout


def test_in_netns_only_the_allowed_host_ports_answer(netns: Netns) -> None:
    results = netns.probe(netns.client, "10.99.0.1:22", "10.99.0.1:80", "10.99.0.1:8080",
                          "[fd99::1]:22", "[fd99::1]:80", "[fd99::1]:8080")
    assert results == {"10.99.0.1:22": "open", "10.99.0.1:80": "open",
                       "10.99.0.1:8080": "filtered", "[fd99::1]:22": "open",
                       "[fd99::1]:80": "open", "[fd99::1]:8080": "filtered"}


def test_in_netns_only_published_proxy_ports_reach_a_container(netns: Netns) -> None:
    results = netns.probe(netns.client, "10.99.0.1:443", "10.99.0.1:5232",
                          "172.31.99.2:5232", "172.31.99.2:8443")
    assert results == {
        "10.99.0.1:443": "open",  # DNAT-ed to the "proxy" on 8443
        "10.99.0.1:5232": "filtered",  # DNAT-ed too, but not a published proxy/mail port
        "172.31.99.2:5232": "filtered",  # routed straight at the container: no DNAT
        "172.31.99.2:8443": "filtered",
    }


def test_in_netns_a_container_reaches_out(netns: Netns) -> None:
    assert netns.probe(netns.container, "10.99.0.2:9999") == {"10.99.0.2:9999": "open"}


def test_in_netns_the_replacement_is_atomic_and_idempotent(netns: Netns,
                                                           tmp_path: Path,
                                                           restricted: Appliance) -> None:
    # Loading another ruleset replaces ours whole; loading it again is harmless.
    other = tmp_path / "other.nft"
    other.write_text(firewall.render_ruleset(restricted))
    try:
        netns.sh(netns.box, "nft", "-f", str(other))
        netns.sh(netns.box, "nft", "-f", str(other))
        listing = netns.sh(netns.box, "nft", "list", "ruleset").stdout
        assert listing.count("table inet arkbox") == 1
        assert "tcp dport 2222" in listing and "tcp dport 22 " not in listing
        assert netns.probe(netns.client, "10.99.0.1:22") == {"10.99.0.1:22": "filtered"}
    finally:
        netns.sh(netns.box, "nft", "-f", str(GOLDEN))
