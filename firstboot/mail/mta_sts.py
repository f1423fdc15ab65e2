"""MTA-STS: the policy sites (mta-sts.DOMAIN) the reverse proxy serves for the mail server
(with the rest of what it serves for mail: proxy_sites.py)."""

from __future__ import annotations

from cryptography import x509

from firstboot.certs.certificate import is_fallback
from firstboot.containers.nginx import MtaStsSite
from firstboot.core.config import Appliance
from firstboot.mail.records import mta_sts_policy


def mta_sts_sites(config: Appliance, certificate: bytes | None) -> list[MtaStsSite]:
    """mta-sts.DOMAIN for each mail domain. The policy enforces only with a CA's
    certificate: senders that honour it would refuse the self-signed fallback."""
    if not (config.mail.enabled and config.mail.hostname):
        return []
    enforce = certificate is not None and not is_fallback(
        x509.load_pem_x509_certificate(certificate))
    policy = mta_sts_policy(config, enforce)
    return [MtaStsSite(f"mta-sts.{domain}", policy) for domain in config.mail.domains]

