"""Step `tls`: a certificate for every host name, at once: self-signed until ACME brings a real one.

Nothing waits for DNS or a CA: the proxy starts with this fallback certificate, and the
`acme` step replaces it in the background. The files and their layout are described in
firstboot/certs/certificate.py.
"""

from __future__ import annotations

from firstboot.certs.certificate import (
    NO_ACME_YET,
    certificate_info,
    describe,
    finish_staged,
    live_files,
    make_fallback,
    read_current,
    recorded_reason,
    staged_files,
    wanted_names,
    why_renew,
    write_info,
)
from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.files import atomic_write, ensure_dir
from firstboot.core.step import Outcome

NAME = "tls"


def applies(config: Appliance) -> bool:
    return True




def run(ctx: FirstbootContext) -> Outcome:
    files = live_files(ctx)
    if finish_staged(files, staged_files(ctx)) is not None:
        ctx.log.info("installed the certificate a renewal had staged before an interruption")
    names = wanted_names(ctx.config)
    now = ctx.now()
    current = read_current(files)
    renew = why_renew(current, names, now)
    if renew is None:
        assert current.certificate is not None
        info = certificate_info(current.certificate, recorded_reason(files))
        summary = describe(current.certificate, names)
        ctx.log.info("%s, not renewing", summary)
        fixed = []
        if files.key.stat().st_mode & 0o077:
            files.key.chmod(0o600)
            fixed.append("key made private")
        if write_info(files, info):
            fixed.append("recorded")
        if fixed:
            return Outcome.changed_(f"{summary} ({', '.join(fixed)})", info)
        return Outcome.unchanged(summary, info)
    ensure_dir(ctx.paths.tls, 0o755)
    ensure_dir(files.directory, 0o755)
    key_pem, chain_pem, certificate = make_fallback(names, now)
    atomic_write(files.key, key_pem, 0o600)
    ctx.checkpoint("key-written")
    atomic_write(files.chain, chain_pem, 0o644)
    info = certificate_info(certificate, NO_ACME_YET)
    write_info(files, info)
    ctx.log.info("made a self-signed fallback certificate for %s, because %s; %s",
                 " ".join(names), renew, NO_ACME_YET)
    return Outcome.changed_(describe(certificate, names), info)


def verify(ctx: FirstbootContext) -> str | None:
    files = live_files(ctx)
    current = read_current(files)
    renew = why_renew(current, wanted_names(ctx.config), ctx.now())
    if renew is not None:
        return renew
    if not files.info.is_file():
        return f"{files.info} is missing"
    if files.key.stat().st_mode & 0o077:
        return f"{files.key} is readable by others"
    return None
