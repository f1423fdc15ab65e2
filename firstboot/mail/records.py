"""The DNS records an appliance needs published, as data (pure: no DNS, no files).

`arkbox-installer dns` prints them as a zone-file snippet or JSON; `check mail`
compares what DNS serves with them. The PTR record is the odd one: it lives in the
provider's reverse zone, so it is listed with `publish_at: provider`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from dataclasses import asdict, dataclass
from typing import Any

from firstboot.core.config import Appliance
from firstboot.mail import dkim

TTL = 3600
MX_PREFERENCE = 10
MTA_STS_MAX_AGE = 604800  # one week, as RFC 8461 suggests for a stable setup
ZONE = "zone"
PROVIDER = "provider"
# Addresses nothing answers: connecting a UDP socket sends no packet, it only makes
# the kernel pick the source address it would route from.
PROBE_V4 = "192.0.2.1"
PROBE_V6 = "2001:db8::1"


@dataclass(frozen=True)
class Record:
    name: str  # absolute, with the trailing dot
    type: str
    value: str  # presentation form without quotes (TXT: the whole text)
    purpose: str
    ttl: int = TTL
    publish_at: str = ZONE  # zone | provider (the PTR)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BoxAddresses:
    ipv4: str | None
    ipv6: str | None


def fqdn(name: str) -> str:
    return name.rstrip(".").lower() + "."


def client_config_hosts(domain: str) -> tuple[str, str]:
    """The names mail clients look up for DOMAIN to configure themselves: Thunderbird's,
    then Outlook's (the proxy serves both: firstboot/mail/autoconfig.py)."""
    return f"autoconfig.{domain}", f"autodiscover.{domain}"


def mta_sts_policy(config: Appliance, enforce: bool) -> str:
    """The policy file served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt."""
    assert config.mail.hostname is not None
    mode = "enforce" if enforce else "testing"
    return (f"version: STSv1\nmode: {mode}\nmx: {config.mail.hostname}\n"
            f"max_age: {MTA_STS_MAX_AGE}\n")


def mta_sts_id(policy: str) -> str:
    """The TXT record's id: changes whenever the policy does (RFC 8461 section 3.1)."""
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def report_address(config: Appliance) -> str:
    mail = config.mail
    return mail.dmarc_report_to or f"postmaster@{mail.domains[0]}"


def mail_records(config: Appliance, box: BoxAddresses, dkim_key_pem: bytes,
                 enforce_mta_sts: bool = False) -> list[Record]:
    """Every record the box needs, in the order an operator publishes them."""
    records: list[Record] = []
    hosts = [config.appliance.hostname]
    hosts += [s.route.hostname for s in config.services.values() if s.route is not None]
    mail = config.mail
    if mail.enabled and mail.hostname:
        hosts.append(mail.hostname)
        hosts += [f"mta-sts.{domain}" for domain in mail.domains]
        hosts += [host for domain in mail.domains for host in client_config_hosts(domain)]
    for host in sorted(set(hosts), key=lambda h: (h.count("."), h)):
        purpose = "the mail server (MX target, HELO name)" if host == mail.hostname else \
            "web (served by the proxy)"
        if box.ipv4:
            records.append(Record(fqdn(host), "A", box.ipv4, purpose))
        if box.ipv6:
            records.append(Record(fqdn(host), "AAAA", box.ipv6, purpose))
    if not (mail.enabled and mail.hostname):
        return records
    mx = fqdn(mail.hostname)
    rua = report_address(config)
    policy = mta_sts_policy(config, enforce_mta_sts)
    txt = dkim.txt_value(dkim_key_pem)
    records.append(Record(mx, "TXT", "v=spf1 a -all",
                          "SPF for the HELO name: only this server uses it"))
    for domain in mail.domains:
        name = fqdn(domain)
        records += [
            Record(name, "MX", f"{MX_PREFERENCE} {mx}", "mail for the domain goes here"),
            Record(name, "TXT", "v=spf1 mx -all", "SPF: only the MX host sends the "
                   "domain's mail"),
            Record(fqdn(dkim.record_name(mail.dkim_selector, domain)), "TXT", txt,
                   "DKIM public key (selector " + mail.dkim_selector + ")"),
            Record(fqdn(f"_dmarc.{domain}"), "TXT",
                   f"v=DMARC1; p=quarantine; adkim=s; aspf=s; rua=mailto:{rua}",
                   "DMARC: unauthenticated mail is quarantined; reports to " + rua),
            Record(fqdn(f"_mta-sts.{domain}"), "TXT", f"v=STSv1; id={mta_sts_id(policy)}",
                   "MTA-STS: senders must use TLS (policy at https://mta-sts."
                   f"{domain}/.well-known/mta-sts.txt)"),
            Record(fqdn(f"_smtp._tls.{domain}"), "TXT", f"v=TLSRPTv1; rua=mailto:{rua}",
                   "TLS-RPT: reports of TLS failures to " + rua),
        ]
        rua_domain = rua.rpartition("@")[2].lower()
        if rua_domain != domain.lower():
            # RFC 7489 section 7.1: the report domain agrees to take this domain's reports.
            records.append(Record(fqdn(f"{domain}._report._dmarc.{rua_domain}"), "TXT",
                                  "v=DMARC1", f"lets {rua_domain} receive {domain}'s "
                                  "DMARC reports"))
    for address in (box.ipv4, box.ipv6):
        if address:
            records.append(Record(ipaddress.ip_address(address).reverse_pointer + ".", "PTR",
                                  mx, "reverse DNS: set by your VPS provider, must name "
                                  "the mail server", publish_at=PROVIDER))
    return records


def zone_value(record: Record) -> str:
    """The record's data as a zone file writes it (TXT quoted, split at 255 characters)."""
    if record.type != "TXT":
        return record.value
    chunks = [record.value[i:i + dkim.TXT_CHUNK]
              for i in range(0, len(record.value), dkim.TXT_CHUNK)] or [""]
    quoted = " ".join('"' + chunk.replace("\\", "\\\\").replace('"', '\\"') + '"'
                      for chunk in chunks)
    return f"( {quoted} )" if len(chunks) > 1 else quoted


def zone_snippet(records: list[Record], appliance: str) -> str:
    """A zone-file snippet to paste at the DNS provider (absolute names, explicit TTLs)."""
    lines = [f"; DNS records for the arkbox appliance {appliance!r}: publish these in your "
             "zone.", "; Generated by `arkbox-installer dns`; check with `arkbox-installer "
             "check mail`."]
    width = max((len(r.name) for r in records), default=0)
    current = ""
    for record in records:
        if record.publish_at != ZONE:
            continue
        if record.purpose != current:
            lines.append(f"; {record.purpose}")
            current = record.purpose
        lines.append(f"{record.name:<{width}} {record.ttl} IN {record.type:<4} "
                     f"{zone_value(record)}")
    provider = [r for r in records if r.publish_at == PROVIDER]
    if provider:
        lines.append(";")
        lines.append("; Not in your zone: ask your VPS provider to set the reverse DNS (PTR):")
        lines += [f";   {r.name} {r.ttl} IN PTR {r.value}" for r in provider]
    return "\n".join(lines) + "\n"


def detect_addresses() -> BoxAddresses:
    """The box's own outbound source addresses (a VPS: its public ones)."""
    return BoxAddresses(_source_address(socket.AF_INET, PROBE_V4),
                        _source_address(socket.AF_INET6, PROBE_V6))


def _source_address(family: socket.AddressFamily, probe: str) -> str | None:
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((probe, 53))
            address = str(sock.getsockname()[0])
    except OSError:
        return None  # no route in that family
    parsed = ipaddress.ip_address(address)
    if parsed.is_loopback or parsed.is_link_local:
        return None
    return address
