"""`arkbox-installer renew`: get or renew the ACME certificate, install it, reload nginx.

When: the fallback is served, a host name is missing, or less than a third of
the certificate's lifetime is left (Let's Encrypt's 90 days → renewed at 60).
A failure keeps the current certificate (the fallback, or the old ACME one)
and is retried with backoff: the timer runs the scheduled check every 15
minutes, and a failed attempt waits 15 min, 30 min, 1 h, … up to 6 h before
the next. Every outcome is recorded in /var/lib/arkbox/tls-renew.json for
`arkbox-installer status`; while the fallback is served, its certificate.json
says why, in the CA's words.
"""

from __future__ import annotations

import fcntl
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from cryptography import x509

from firstboot.certs import certificate as cert
from firstboot.certs.acme_client import IssuanceFailed, Request, explain, issue
from firstboot.certs.renew_state import RenewState, state_path
from firstboot.containers.proxy import ProxyFiles, converge_proxy
from firstboot.core.context import FirstbootContext, Paths
from firstboot.core.files import ensure_dir
from firstboot.mail.container import reload_mail_tls
from firstboot.mail.proxy_sites import served_mail_sites

log = logging.getLogger("arkbox.certs")

RENEW_LOCK = "tls-renew.lock"
RUNNER_LOCK = "runner.lock"  # firstboot/runner.py's: held by a first-boot or apply run
ACCOUNT_KEY = "acme/account-key.pem"  # below /srv/arkbox/secrets: a restore brings it back
RENEW_FRACTION_LEFT = 1 / 3
BACKOFF_FIRST = timedelta(minutes=15)
BACKOFF_MAX = timedelta(hours=6)
ISSUED_KEPT = 20
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"


class Result(StrEnum):
    RENEWED = "renewed"  # a new certificate is served
    NOT_DUE = "not due"  # the current certificate is good
    WAITING = "waiting"  # scheduled run inside the backoff after a failure
    FAILED = "failed"  # the CA did not issue; the current certificate stays


@dataclass
class RenewReport:
    result: Result
    summary: str
    reloaded: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- decisions (pure)


def renewal_due(current: cert.Current, names: list[str], now: datetime) -> str | None:
    """Why a certificate must be requested now, or None to keep the current one."""
    certificate = current.certificate
    if certificate is None or current.problem is not None:
        return current.problem or "no certificate yet"
    if cert.is_fallback(certificate):
        return "the self-signed fallback is served"
    missing = sorted(set(names) - set(cert.cert_names(certificate)))
    if missing:
        return f"it lacks {' '.join(missing)}"
    return due_by_lifetime(certificate.not_valid_before_utc, certificate.not_valid_after_utc,
                           now)


def due_by_lifetime(not_before: datetime, not_after: datetime, now: datetime) -> str | None:
    left = not_after - now
    if left < (not_after - not_before) * RENEW_FRACTION_LEFT:
        days = max(left.total_seconds(), 0) / 86400
        return (f"less than a third of its lifetime is left ({days:.1f} days, "
                f"until {not_after:%Y-%m-%d %H:%M} UTC)")
    return None


def backoff(failures: int) -> timedelta:
    """How long to wait after `failures` consecutive failures (15 min doubling, 6 h at most)."""
    if failures <= 0:
        return timedelta(0)
    doubled: timedelta = BACKOFF_FIRST * (2 ** min(failures - 1, 16))
    return min(doubled, BACKOFF_MAX)


# ---------------------------------------------------------------- paths


def account_key_path(paths: Paths) -> Path:
    return paths.secrets / ACCOUNT_KEY


# ---------------------------------------------------------------- the command


def renew(ctx: FirstbootContext, *, force: bool = False, scheduled: bool = False) -> RenewReport:
    """Get a certificate if one is due (or `force`); `scheduled` respects the backoff.

    One renewal at a time. The runner's lock (first boot, apply) is waited for at the
    start — the proxy must be up to answer the challenge — and held only while files
    are installed and nginx reloaded, never while the CA is asked: an `apply` is not
    refused because a CA is slow.
    """
    with _exclusive(ctx.paths.state / RENEW_LOCK):
        with _exclusive(ctx.paths.state / RUNNER_LOCK):
            if cert.finish_staged(cert.live_files(ctx), cert.staged_files(ctx)) is not None:
                log.info("installed the certificate staged before an interruption")
        return _renew(ctx, force=force, scheduled=scheduled)


def _renew(ctx: FirstbootContext, *, force: bool, scheduled: bool) -> RenewReport:
    files = cert.live_files(ctx)
    names = cert.wanted_names(ctx.config)
    now = ctx.now()
    current = cert.read_current(files)
    due = renewal_due(current, names, now)
    if due is None and not force:
        assert current.certificate is not None
        until = current.certificate.not_valid_after_utc
        summary = (f"certificate valid until {until:%Y-%m-%d %H:%M} UTC for "
                   f"{' '.join(names)}; not renewing")
        with _exclusive(ctx.paths.state / RUNNER_LOCK):
            _reload_if_stale(ctx)
        return RenewReport(Result.NOT_DUE, summary)
    why = due or "forced (--force)"
    if scheduled and not ctx.paths.done_marker.exists():
        # The proxy that answers the CA's challenge is made by first boot.
        return RenewReport(Result.WAITING, f"{why}; first boot has not finished yet")
    state_file = state_path(ctx.paths)
    state = RenewState.load(state_file)
    if scheduled and state.next_attempt and datetime.fromisoformat(state.next_attempt) > now:
        return RenewReport(Result.WAITING, f"{why}; the last attempt failed ({state.last_error}); "
                           f"next attempt at {state.next_attempt}")
    log.info("requesting a certificate for %s from %s, because %s", " ".join(names),
             ctx.config.tls.acme_directory, why)
    state.last_attempt = now.isoformat(timespec="seconds")
    try:
        with _trust(ctx) as ca_file:
            issued = issue(Request(
                directory=str(ctx.config.tls.acme_directory), names=names,
                key_type=ctx.config.tls.key_type, account_key=account_key_path(ctx.paths),
                webroot=ProxyFiles.of(ctx).acme_root,
                contact_email=ctx.config.tls.contact_email, ca_file=ca_file))
    except IssuanceFailed as err:
        reason = explain(err.problem)
        state.failures += 1
        state.last_error = reason
        state.next_attempt = (now + backoff(state.failures)).isoformat(timespec="seconds")
        ensure_dir(ctx.paths.state, 0o755)
        state.save(state_file)
        with _exclusive(ctx.paths.state / RUNNER_LOCK):  # the tls step writes it too
            cert.record_reason(files, reason)
        kept = ("the self-signed fallback stays" if current.certificate is None
                or cert.is_fallback(current.certificate) else "the current certificate stays")
        return RenewReport(Result.FAILED, f"{reason}; {kept}; next attempt at "
                           f"{state.next_attempt}")
    with _exclusive(ctx.paths.state / RUNNER_LOCK):
        certificate = cert.install(files, cert.staged_files(ctx), issued.key_pem,
                                  issued.fullchain_pem, ctx.checkpoint)
        reloaded = reload_tls_consumers(ctx)
    ensure_dir(ctx.paths.state, 0o755)
    issued_entry = {"at": now.isoformat(timespec="seconds"),
                    "issuer": certificate.issuer.rfc4514_string(),
                    "not_after": certificate.not_valid_after_utc.isoformat()}
    RenewState(last_success=now.isoformat(timespec="seconds"), last_attempt=state.last_attempt,
               issued=[*state.issued, issued_entry][-ISSUED_KEPT:]).save(state_file)
    return RenewReport(Result.RENEWED, _describe(certificate, why), reloaded)


def reload_tls_consumers(ctx: FirstbootContext) -> list[str]:
    """Make everything that serves the live certificate load it again, without dropping
    connections; returns what was reloaded. Every TLS server of the box belongs here."""
    reloaded = []
    if converge_proxy(ctx, served_mail_sites(ctx)).reloaded:
        reloaded.append("proxy (nginx reloaded)")
    if reload_mail_tls(ctx):
        reloaded.append("mail (Postfix and Dovecot reloaded)")
    return reloaded


def _reload_if_stale(ctx: FirstbootContext) -> None:
    # A renewal cut off between installing and reloading: the next run reloads.
    files = ProxyFiles.of(ctx)
    try:
        served = (files.tls_dir / "fullchain.pem").read_bytes()
    except FileNotFoundError:
        return
    if served != files.certificate_source.read_bytes():
        reload_tls_consumers(ctx)
    else:
        reload_mail_tls(ctx, only_if_stale=True)


def _describe(certificate: x509.Certificate, why: str) -> str:
    return (f"new certificate for {' '.join(cert.cert_names(certificate))}, valid until "
            f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC (because {why})")


@contextmanager
def _trust(ctx: FirstbootContext) -> Iterator[str | None]:
    """The CA file for the directory's HTTPS: the system's (Debian keeps it current), plus
    tls.ca_bundle when set; None falls back to the CAs frozen into the installer (certifi)."""
    system = Path(SYSTEM_CA_FILE)
    bundle = ctx.config.tls.ca_bundle
    if bundle is None:
        yield str(system) if system.is_file() else None
        return
    extra = (ctx.config.base_dir / bundle).read_bytes()
    if system.is_file():
        trusted = system.read_bytes()
    else:
        import certifi  # what requests trusts by default

        trusted = Path(certifi.where()).read_bytes()
    with tempfile.NamedTemporaryFile(prefix="arkbox-ca-", suffix=".pem") as handle:
        handle.write(trusted + b"\n" + extra)
        handle.flush()
        yield handle.name


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold `lock` (flock), waiting for whoever holds it now."""
    ensure_dir(lock.parent, 0o755)
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for %s (%s)", lock,
                     "a first boot or apply runs" if lock.name == RUNNER_LOCK
                     else "another renewal runs")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
