"""The zone `arkbox try` serves from `arkbox-installer dns --json` (builder/rig/dns.py)."""

from __future__ import annotations

import shlex

import pytest

from builder.rig.dns import address_options, doctor_command, nsd_conf, zone_files, zones_for

RECORDS = [
    {"name": "mail.arkbox.test.", "type": "A", "value": "172.31.7.3", "purpose": "mail host",
     "ttl": 3600, "publish_at": "zone"},
    {"name": "arkbox.test.", "type": "MX", "value": "10 mail.arkbox.test.", "purpose": "mx",
     "ttl": 3600, "publish_at": "zone"},
    {"name": "_dmarc.arkbox.test.", "type": "TXT", "value": "v=DMARC1; p=quarantine",
     "purpose": "dmarc", "ttl": 3600, "publish_at": "zone"},
    {"name": "arkbox._domainkey.arkbox.test.", "type": "TXT", "value": "v=DKIM1; p=" + "A" * 400,
     "purpose": "dkim", "ttl": 3600, "publish_at": "zone"},
    {"name": "mail.other.example.", "type": "A", "value": "172.31.7.3", "purpose": "x",
     "ttl": 3600, "publish_at": "zone"},
    {"name": "3.7.31.172.in-addr.arpa.", "type": "PTR", "value": "mail.arkbox.test.",
     "purpose": "ptr", "ttl": 3600, "publish_at": "provider"},
]


def test_records_go_into_their_domain_the_ptr_into_the_reverse_zone() -> None:
    zones = zones_for(RECORDS, "172.31.7.3", ["arkbox.test"])
    assert sorted(zones) == ["7.31.172.in-addr.arpa", "arkbox.test", "mail.other.example"]
    arkbox = zones["arkbox.test"]
    assert arkbox.startswith("$ORIGIN arkbox.test.\n") and " IN SOA " in arkbox
    assert "mail.arkbox.test. 3600 IN A 172.31.7.3\n" in arkbox
    assert "arkbox.test. 3600 IN MX 10 mail.arkbox.test.\n" in arkbox
    assert '_dmarc.arkbox.test. 3600 IN TXT "v=DMARC1; p=quarantine"\n' in arkbox
    # A long TXT is split into strings of at most 255 characters, in parentheses.
    (dkim,) = [line for line in arkbox.splitlines() if "_domainkey" in line]
    assert dkim.split(" IN TXT ")[1].startswith('( "v=DKIM1; p=') and '" "' in dkim
    assert "3.7.31.172.in-addr.arpa. 3600 IN PTR mail.arkbox.test.\n" in \
        zones["7.31.172.in-addr.arpa"]
    assert "PTR" not in arkbox
    # A name under no domain of the config gets a zone of its own.
    assert "mail.other.example. 3600 IN A" in zones["mail.other.example"]


def test_a_ptr_outside_the_rig_subnet_is_left_out() -> None:
    zones = zones_for(RECORDS, "172.31.8.3", ["arkbox.test"])
    assert "PTR" not in "".join(zones.values())
    with pytest.raises(ValueError):
        zones_for(RECORDS, "not-an-address", ["arkbox.test"])


def test_nsd_serves_every_zone_from_its_file() -> None:
    zones = zones_for(RECORDS, "172.31.7.3", ["arkbox.test"])
    conf = nsd_conf(zones)
    for name in zones:
        assert f"zone:\n    name: {name}\n    zonefile: {name}.zone\n" in conf
    files = zone_files(zones)
    assert set(files) == {"/etc/nsd/nsd.conf", *(f"/etc/nsd/zones/{n}.zone" for n in zones)}
    assert all(mode == 0o644 for _, mode in files.values())


def test_nsd_never_rate_limits_the_rig() -> None:
    """Response rate limiting off: over 200 answers a second to the appliance's /24, nsd
    dropped answers and rspamd waited out DNS timeouts (bench/mail.py, docs/mail.md)."""
    conf = nsd_conf({})
    assert "    rrl-ratelimit: 0\n" in conf
    assert "    rrl-whitelist-ratelimit: 0\n" in conf


def test_the_doctor_command_runs_in_the_appliance_against_the_rig_dns() -> None:
    command = doctor_command("arkbox-try-appliance", "172.31.7.9", "172.31.7.3",
                             "/etc/arkbox/try-test-ca-root.pem")
    assert shlex.split(command) == [
        "docker", "exec", "arkbox-try-appliance", "arkbox-installer", "check", "mail",
        "--resolver", "172.31.7.9", *address_options("172.31.7.3"),
        "--ca-file", "/etc/arkbox/try-test-ca-root.pem"]
    assert "--ca-file" not in doctor_command("a", "1.2.3.4", "1.2.3.5", None)
