"""Step `tls`: a certificate for every host name, at once: self-signed until ACME brings a real one.

Nothing waits for DNS or a CA: the proxy starts with this fallback certificate, and the
`acme` step replaces it in the background. The files and their layout are described in
firstboot/certs/certificate.py.
"""

from __future__ import annotations

from firstboot.certs import certificate as cert
from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.files import atomic_write, ensure_dir
from firstboot.core.step import Outcome

NAME = "tls"


def applies(config: Appliance) -> bool:
    return True


def run(ctx: FirstbootContext) -> Outcome:
    files = cert.live_files(ctx)
    if cert.finish_staged(files, cert.staged_files(ctx)) is not None:
        ctx.log.info("installed the certificate a renewal had staged before an interruption")
    names = cert.wanted_names(ctx.config)
    now = ctx.now()
    current = cert.read_current(files)
    renew = cert.why_renew(current, names, now)
    if renew is None:
        assert current.certificate is not None
        info = cert.certificate_info(current.certificate, cert.recorded_reason(files))
        summary = cert.describe(current.certificate, names)
        ctx.log.info("%s, not renewing", summary)
        fixed = []
        if files.key.stat().st_mode & 0o077:
            files.key.chmod(0o600)
            fixed.append("key made private")
        if cert.write_info(files, info):
            fixed.append("recorded")
        if fixed:
            return Outcome.changed_(f"{summary} ({', '.join(fixed)})", info)
        return Outcome.unchanged(summary, info)
    ensure_dir(ctx.paths.tls, 0o755)
    ensure_dir(files.directory, 0o755)
    key_pem, chain_pem, certificate = cert.make_fallback(names, now)
    atomic_write(files.key, key_pem, 0o600)
    ctx.checkpoint("key-written")
    atomic_write(files.chain, chain_pem, 0o644)
    info = cert.certificate_info(certificate, cert.NO_ACME_YET)
    cert.write_info(files, info)
    ctx.log.info("made a self-signed fallback certificate for %s, because %s; %s",
                 " ".join(names), renew, cert.NO_ACME_YET)
    return Outcome.changed_(cert.describe(certificate, names), info)


def verify(ctx: FirstbootContext) -> str | None:
    files = cert.live_files(ctx)
    current = cert.read_current(files)
    renew = cert.why_renew(current, cert.wanted_names(ctx.config), ctx.now())
    if renew is not None:
        return renew
    if not files.info.is_file():
        return f"{files.info} is missing"
    if files.key.stat().st_mode & 0o077:
        return f"{files.key} is readable by others"
    return None
