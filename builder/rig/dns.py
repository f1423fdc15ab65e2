"""The DNS of `arkbox try`: nsd serving the zone the appliance asks to be published.

Once first boot is done (the DKIM key exists), `arkbox-installer dns --json` in the
appliance gives the records for its rig address; nsd (the rig-internet image, built
offline and cached like the service images) serves them, with the PTR a VPS provider
would set in the reverse zone of the rig's /24. `arkbox-installer check mail
--resolver <nsd>` in the appliance then checks the records as they are served.

The rig's DNS is authoritative for these zones only: it does not recurse, so the DNS
blocklists and the outbound port 25 probe (a host on the internet) cannot be asked
from the rig; the doctor reports those as warnings (docs/try.md).
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from builder.pipeline.cache import cache_dir_from_env
from builder.rig.parts import (
    ApplianceContainer,
    Rig,
    RigContainer,
    RigError,
    RigWait,
    rig_image,
)
from firstboot.mail.records import Record, zone_value

SOURCE_DIR = Path(__file__).resolve().parents[2]
ROLE = "dns"
RECIPE = "rig-internet"
NSD_CONF_PATH = "/etc/nsd/nsd.conf"
ZONES_DIR = "/etc/nsd/zones"
# The test CA's root, laid into the appliance so the doctor trusts the MTA-STS policy's
# HTTPS as a sender would trust a real CA's certificate.
CA_ROOT_PATH = "/etc/arkbox/try-test-ca-root.pem"
# nsd's response rate limiting is off: every query in the rig comes from one /24, and the
# appliance's lookups of the public lists (which nsd refuses, not serving their zones) come
# at hundreds a second while mail arrives (rspamd asks ~20 per message). Over
# rrl-ratelimit (200/s) nsd dropped every other answer, so rspamd waited out its DNS
# timeout (1 s, then a retry) on each: bench/mail.py measured filtering at 7 messages/s
# instead of 30. The internet's resolvers answer such queries at once.
NSD_CONF = """\
server:
    ip-address: 0.0.0.0
    port: 53
    username: nsd
    zonesdir: /etc/nsd/zones
    verbosity: 1
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: yes
    control-interface: /run/nsd/nsd.ctl
"""
SERIAL = 1


def dns_image() -> str:
    return rig_image(SOURCE_DIR, cache_dir_from_env(), RECIPE)


def address_options(ipv4: str) -> list[str]:
    """The appliance's rig address, said explicitly (detection looks for a public one)."""
    return ["--ipv4", ipv4, "--ipv6", "none"]


def soa(origin: str) -> str:
    return (f"$ORIGIN {origin}.\n$TTL 300\n@ IN SOA ns.{origin}. hostmaster.{origin}. "
            f"( {SERIAL} 3600 600 86400 300 )\n@ IN NS ns.invalid.\n")


def reverse_origin(ipv4: str) -> str:
    """The reverse zone of the address's /24 (the rig's subnet)."""
    return ".".join(reversed(ipv4.split(".")[:3])) + ".in-addr.arpa"


def zones_for(records: list[dict[str, Any]], ipv4: str, domains: list[str]) -> dict[str, str]:
    """The zone files nsd serves (origin -> text), from `arkbox-installer dns --json`'s
    records (pure: unit-tested). Each record goes into the longest of `domains` that
    holds its name, else into a zone of its own name; the provider's PTR into the
    reverse zone of the /24."""
    ipaddress.IPv4Address(ipv4)
    reverse = reverse_origin(ipv4)
    origins = sorted({d.rstrip(".").lower() for d in domains}, key=len, reverse=True)
    zones: dict[str, str] = {reverse: soa(reverse)}
    for item in records:
        record = Record(**item)
        name = record.name.rstrip(".").lower()
        if record.publish_at == "provider":
            if not name.endswith("." + reverse):
                continue  # an IPv6 PTR, or an address outside the rig's /24
            origin = reverse
        else:
            origin = next((o for o in origins if name == o or name.endswith("." + o)), name)
        text = zones.get(origin) or soa(origin)
        zones[origin] = text + f"{name}. {record.ttl} IN {record.type} {zone_value(record)}\n"
    return zones


def nsd_conf(zones: dict[str, str]) -> str:
    return NSD_CONF + "".join(f"zone:\n    name: {name}\n    zonefile: {name}.zone\n"
                              for name in sorted(zones))


def zone_files(zones: dict[str, str]) -> dict[str, tuple[bytes, int]]:
    files = {f"{ZONES_DIR}/{name}.zone": (text.encode(), 0o644) for name, text in zones.items()}
    files[NSD_CONF_PATH] = (nsd_conf(zones).encode(), 0o644)
    return files


class NsdAnswers(RigWait):
    """nsd answers its control socket, and accepts every zone laid in (a zone it refuses
    ends the wait at once: waiting cannot mend it)."""

    what = "nsd to answer"

    def check(self, container: RigContainer) -> str | None:
        if (reason := container.not_running()) is not None:
            return reason
        code, out = container.exec("nsd-control", "-c", NSD_CONF_PATH, "status")
        if code != 0:
            return f"nsd-control: {out.strip() or 'not answering'}"
        zones = sorted(p.removeprefix(f"{ZONES_DIR}/").removesuffix(".zone")
                       for p in container.files if p.startswith(ZONES_DIR))
        for zone in zones:
            code, out = container.exec("nsd-checkzone", zone, f"{ZONES_DIR}/{zone}.zone")
            if code != 0:
                raise RigError(f"nsd refused the zone {zone}: {out.strip()}")
        return None


class ZoneDNSContainer(RigContainer):
    """nsd (the rig-internet image) serving the zones laid into /etc/nsd/zones before it
    starts; ready when it answers and accepts each zone."""

    def __init__(self, rig: Rig, role: str, image: str, aliases: Sequence[str] = (),
                 command: Sequence[str] | None = ("dns",),
                 files: dict[str, tuple[bytes, int]] | None = None,
                 ipv4_address: str | None = None, *, timeout: float = 60) -> None:
        super().__init__(rig, role, image, aliases, command=command, files=files,
                         ipv4_address=ipv4_address)
        self.waiting_for(NsdAnswers(timeout))


def records_of(appliance: ApplianceContainer, ipv4: str) -> list[dict[str, Any]]:
    """`arkbox-installer dns --json` in the appliance, for its rig address."""
    code, out = appliance.exec("arkbox-installer", "dns", "--json", *address_options(ipv4))
    if code != 0 or "{" not in out:
        raise RigError(f"arkbox-installer dns --json exited {code}: {out.strip()[-300:]}")
    data = json.loads(out[out.index("{"):])
    return [dict(r) for r in data["records"]]


def start_dns(rig: Rig, image: str, appliance: ApplianceContainer,
              domains: list[str]) -> ZoneDNSContainer:
    """Serve the appliance's zone on the rig (its first boot must be done)."""
    ipv4 = appliance.ip(4)
    zones = zones_for(records_of(appliance, ipv4), ipv4, domains)
    dns = ZoneDNSContainer(rig=rig, role=ROLE, image=image, aliases=[ROLE],
                           files=zone_files(zones))
    rig.add(dns)
    return dns


def give_ca_root(appliance: ApplianceContainer, root_pem: bytes) -> str:
    """Lay the test CA's root into the appliance (for the doctor's --ca-file)."""
    appliance.put_files({CA_ROOT_PATH: (root_pem, 0o644)})
    return CA_ROOT_PATH


def doctor_command(container: str, resolver: str, ipv4: str, ca_file: str | None) -> str:
    """The one command, run on this machine, that runs the mail doctor in the appliance
    against the rig's DNS (pure)."""
    argv = ["docker", "exec", container, "arkbox-installer", "check", "mail",
            "--resolver", resolver, *address_options(ipv4)]
    if ca_file:
        argv += ["--ca-file", ca_file]
    return shlex.join(argv)
