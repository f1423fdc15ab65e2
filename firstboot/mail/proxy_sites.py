"""What the reverse proxy serves for the mail server: the MTA-STS policies (mta_sts.py) and
mail client autoconfiguration (autoconfig.py), per mail domain; nothing while mail is off."""

from __future__ import annotations

from firstboot.certs.certificate import live_files
from firstboot.containers.nginx import AutoconfigSite, AutodiscoverSites, MailSites
from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.files import read_bytes
from firstboot.mail.autoconfig import (
    ADDRESS_PATTERN,
    AUTOCONFIG_PATH,
    AUTODISCOVER_PATH,
    WELL_KNOWN_AUTOCONFIG_PATH,
    outlook_answer_parts,
    thunderbird_config,
)
from firstboot.mail.mta_sts import mta_sts_sites
from firstboot.mail.records import client_config_hosts


def mail_sites(config: Appliance, certificate: bytes | None) -> MailSites:
    """The sites for `certificate` (the live chain: the MTA-STS mode depends on it)."""
    if not (config.mail.enabled and config.mail.hostname):
        return MailSites()
    hostname = config.mail.hostname
    domains = config.mail.domains
    autoconfig = tuple(
        AutoconfigSite(client_config_hosts(domain)[0], domain, AUTOCONFIG_PATH,
                       WELL_KNOWN_AUTOCONFIG_PATH, thunderbird_config(hostname, domain))
        for domain in domains)
    autodiscover = AutodiscoverSites(
        tuple(client_config_hosts(domain)[1] for domain in domains), AUTODISCOVER_PATH,
        outlook_answer_parts(hostname), ADDRESS_PATTERN) if domains else None
    return MailSites(tuple(mta_sts_sites(config, certificate)), autoconfig, autodiscover)


def served_mail_sites(ctx: FirstbootContext) -> MailSites:
    """The sites for the certificate in /srv/arkbox/tls/live (what the proxy serves)."""
    return mail_sites(ctx.config, read_bytes(live_files(ctx).chain))
