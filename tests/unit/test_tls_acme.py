"""ACME: the renewal decision, backoff, CSR and keys, CA errors in words, install, status."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from acme import challenges, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from rich.console import Console

from firstboot.certs import acme_client, renew, renew_state, timer
from firstboot.certs import certificate as cert
from firstboot.certs.acme_client import CaProblem, explain, make_csr, new_private_key
from firstboot.core.config import DEFAULT_CONFIG_PATH, Appliance, load_config
from firstboot.core.context import FirstbootContext, Paths
from firstboot.status import Status, StepReport, StepState
from firstboot.status_view import render_status
from firstboot.steps import acme as acme_step
from firstboot.steps import tls as tls_step

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
NAMES = ["arkbox.test", "autoconfig.arkbox.test", "autodiscover.arkbox.test",
         "cal.arkbox.test", "mail.arkbox.test", "mta-sts.arkbox.test", "webmail.arkbox.test",
         "wiki.arkbox.test"]


@pytest.fixture(scope="module")
def config() -> Appliance:
    return load_config(DEFAULT_CONFIG_PATH)


def ca_issued(names: list[str], not_before: datetime, days: float) -> tuple[bytes, bytes]:
    """A certificate as a CA issues it (not the fallback's organisation): key PEM, chain PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Pebble Intermediate CA")])
    certificate = (
        x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(issuer)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_before + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256()))
    return acme_client.key_pem(key), certificate.public_bytes(serialization.Encoding.PEM)


def current(names: list[str], not_before: datetime, days: float) -> cert.Current:
    _, chain = ca_issued(names, not_before, days)
    return cert.Current(x509.load_pem_x509_certificate(chain), None)


# ---------------------------------------------------------------- when to renew


def test_the_fallback_and_a_missing_certificate_are_due() -> None:
    _, _, fallback = cert.make_fallback(NAMES, NOW)
    assert renew.renewal_due(cert.Current(fallback, None), NAMES, NOW) == (
        "the self-signed fallback is served")
    assert renew.renewal_due(cert.Current(None, "no certificate yet"), NAMES, NOW) == (
        "no certificate yet")


def test_a_fresh_ca_certificate_is_kept_until_a_third_of_its_life_is_left() -> None:
    issued = NOW - timedelta(days=59)
    assert renew.renewal_due(current(NAMES, issued, 90), NAMES, NOW) is None
    due = renew.renewal_due(current(NAMES, issued, 90), NAMES, NOW + timedelta(days=1, hours=1))
    assert due is not None and due.startswith("less than a third of its lifetime is left")
    # Short-lived certificates follow the same rule: 6 days → renewed with 2 left.
    assert renew.renewal_due(current(NAMES, NOW, 6), NAMES, NOW + timedelta(days=3.9)) is None
    assert renew.renewal_due(current(NAMES, NOW, 6), NAMES, NOW + timedelta(days=4.1))


def test_a_certificate_lacking_a_new_name_is_due() -> None:
    assert renew.renewal_due(current(NAMES[:-1], NOW, 90), NAMES, NOW) == (
        "it lacks wiki.arkbox.test")


def test_backoff_doubles_from_15_minutes_to_6_hours() -> None:
    minutes = [renew.backoff(n).total_seconds() / 60 for n in range(0, 8)]
    assert minutes == [0, 15, 30, 60, 120, 240, 360, 360]
    assert renew.backoff(10_000) == timedelta(hours=6)


def test_status_warns_from_14_days_before_expiry() -> None:
    assert renew_state.expiry_warning(NOW + timedelta(days=15), NOW) is None
    warning = renew_state.expiry_warning(NOW + timedelta(days=13, hours=2), NOW)
    assert warning == "the certificate expires in 13 days (2025-06-14) and was not renewed"
    expired = renew_state.expiry_warning(NOW - timedelta(hours=1), NOW)
    assert expired is not None and expired.startswith("the certificate expired on")


# ---------------------------------------------------------------- keys and CSR


def test_csr_carries_every_name_and_the_key_type() -> None:
    key = new_private_key("ecdsa-p256")
    csr = x509.load_pem_x509_csr(make_csr(key, NAMES))
    assert csr.is_signature_valid
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == NAMES
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "arkbox.test"
    public = csr.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    rsa_key = new_private_key("rsa-2048")
    rsa_public = x509.load_pem_x509_csr(make_csr(rsa_key, ["a.example"])).public_key()
    assert isinstance(rsa_public, rsa.RSAPublicKey) and rsa_public.key_size == 2048


def test_a_long_first_name_goes_in_the_san_only() -> None:
    long_name = "x" * 60 + ".example"
    csr = x509.load_pem_x509_csr(make_csr(new_private_key("ecdsa-p256"), [long_name]))
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []


def test_the_account_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "secrets/acme/account-key.pem"
    first = acme_client.load_or_create_account_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    second = acme_client.load_or_create_account_key(path)
    assert first.thumbprint() == second.thumbprint()


def test_the_account_key_lives_with_the_secrets_a_backup_carries() -> None:
    assert renew.account_key_path(Paths(Path("/"))) == Path(
        "/srv/arkbox/secrets/acme/account-key.pem")


# ---------------------------------------------------------------- the CA's errors in words


def acme_error(code: str, detail: str) -> messages.Error:
    return messages.Error.with_code(code, detail=detail)


def test_a_dns_problem_names_the_host_in_the_cas_words() -> None:
    error = messages.Error.from_json({
        "type": "urn:ietf:params:acme:error:compound", "detail": "Errors",
        "subproblems": [{"type": "urn:ietf:params:acme:error:dns",
                         "detail": "NXDOMAIN looking up A for wiki.x.example",
                         "identifier": {"type": "dns", "value": "wiki.x.example"}}]})
    problem = acme_client.problem_from_exception(error, "https://ca/dir")
    assert problem == CaProblem("dns", "NXDOMAIN looking up A for wiki.x.example",
                                "wiki.x.example")
    assert explain(problem) == ("DNS for wiki.x.example does not resolve yet "
                                "(CA: NXDOMAIN looking up A for wiki.x.example)")


def test_a_failed_validation_says_dns_does_not_point_here_yet() -> None:
    challb = messages.ChallengeBody(
        chall=challenges.HTTP01(token=b"t" * 32), status=messages.STATUS_INVALID,
        uri="https://ca/chall/1",
        error=acme_error("connection", "Connection refused"))
    authzr = messages.AuthorizationResource(uri="https://ca/authz/1", body=messages.Authorization(
        identifier=messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="x.example"),
        challenges=[challb], status=messages.STATUS_INVALID))
    problem = acme_client.problem_from_exception(errors.ValidationError([authzr]), "u")
    assert explain(problem).startswith("DNS for x.example does not point here yet")
    assert "(CA: Connection refused)" in explain(problem)


def test_an_unreachable_or_untrusted_ca_is_said_so() -> None:
    unreachable = acme_client.problem_from_exception(
        requests.exceptions.ConnectionError("Failed to resolve 'pebble' ([Errno -2] ...)"),
        "https://pebble:14000/dir")
    assert explain(unreachable) == ("the ACME CA is unreachable "
                                    "(CA: https://pebble:14000/dir: Failed to resolve)")
    untrusted = acme_client.problem_from_exception(
        requests.exceptions.SSLError("certificate verify failed: unable to get local issuer"),
        "https://ca/dir")
    assert "set tls.ca_bundle" in explain(untrusted)
    assert explain(CaProblem("rateLimited", "too many")).startswith("the CA's rate limit")


def test_bad_nonces_are_retried_more_than_once(monkeypatch: pytest.MonkeyPatch) -> None:
    net = acme_client.PatientNetwork(_jwk(), None)
    calls: list[int] = []

    def post_once(*args: Any, **kwargs: Any) -> requests.Response:
        calls.append(1)
        if len(calls) < 5 or len(calls) > 5:
            raise acme_error("badNonce", "bad")
        return requests.Response()

    monkeypatch.setattr(net, "_post_once", post_once)
    net.post("https://ca/x", messages.NewRegistration())
    assert len(calls) == 5  # acme's own ClientNetwork gives up after 2
    with pytest.raises(messages.Error):
        net.post("https://ca/x", messages.NewRegistration())
    assert len(calls) == 5 + acme_client.BAD_NONCE_RETRIES


def _jwk() -> Any:
    from josepy.jwk import JWKEC

    return JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


def test_the_ca_bundle_is_used_for_the_directorys_https() -> None:
    net = acme_client.PatientNetwork(_jwk(), "/etc/arkbox/pebble-ca.pem")
    assert net.verify_ssl == "/etc/arkbox/pebble-ca.pem"  # type: ignore[comparison-overlap]
    assert acme_client.PatientNetwork(_jwk(), None).verify_ssl is True


# ---------------------------------------------------------------- installing


def test_install_makes_the_pair_live_and_records_it(config: Appliance, tmp_path: Path) -> None:
    ctx = FirstbootContext(config=config, paths=Paths(tmp_path), now=lambda: NOW)
    tls_step.run(ctx)  # the fallback first
    key, chain = ca_issued(NAMES, NOW, 90)
    cert.install(cert.live_files(ctx), cert.staged_files(ctx), key, chain)
    live = cert.live_files(ctx)
    assert live.chain.read_bytes() == chain and live.key.stat().st_mode & 0o777 == 0o600
    info = json.loads(live.info.read_text())
    assert info["source"] == "acme" and info["names"] == NAMES and "reason" not in info
    assert not cert.staged_files(ctx).chain.exists()
    # The tls step keeps a valid certificate from the CA (also a restored one).
    assert not tls_step.run(ctx).changed


def test_a_pair_staged_before_a_power_cut_is_installed_by_the_next_run(
        config: Appliance, tmp_path: Path) -> None:
    ctx = FirstbootContext(config=config, paths=Paths(tmp_path), now=lambda: NOW)
    tls_step.run(ctx)
    key, chain = ca_issued(NAMES, NOW, 90)

    def cut(point: str) -> None:
        raise KeyboardInterrupt(point)

    with pytest.raises(KeyboardInterrupt):
        cert.install(cert.live_files(ctx), cert.staged_files(ctx), key, chain, cut)
    assert cert.is_fallback(cert.read_current(cert.live_files(ctx)).certificate)  # type: ignore
    tls_step.run(ctx)
    assert cert.live_files(ctx).chain.read_bytes() == chain
    # Half a pair (only the key) is dropped, never installed.
    staged = cert.staged_files(ctx)
    staged.directory.mkdir(exist_ok=True)
    staged.key.write_bytes(ca_issued(NAMES, NOW, 90)[0])
    assert cert.finish_staged(cert.live_files(ctx), staged) is None
    assert not staged.key.exists() and cert.live_files(ctx).chain.read_bytes() == chain


def test_a_failure_is_recorded_as_the_fallbacks_reason(config: Appliance,
                                                        tmp_path: Path) -> None:
    ctx = FirstbootContext(config=config, paths=Paths(tmp_path), now=lambda: NOW)
    tls_step.run(ctx)
    cert.record_reason(cert.live_files(ctx), "DNS for x.example does not point here yet")
    assert json.loads(cert.live_files(ctx).info.read_text())["reason"] == (
        "DNS for x.example does not point here yet")
    assert not tls_step.run(ctx).changed  # the step keeps the recorded reason


# ---------------------------------------------------------------- step, timer, status, CLI


def test_the_step_installs_the_timer_and_requests_in_the_background(
        config: Appliance, tmp_path: Path) -> None:
    ctx = FirstbootContext(config=config, paths=Paths(tmp_path), now=lambda: NOW)
    tls_step.run(ctx)
    outcome = acme_step.run(ctx)
    assert outcome.changed
    assert outcome.summary == ("certificate requested in the background from "
                               "https://acme-v02.api.letsencrypt.org/directory: "
                               "the self-signed fallback is served")
    assert acme_step.verify(ctx) is None
    service = (tmp_path / "etc/systemd/system" / timer.SERVICE).read_text()
    assert "ExecStart=/usr/local/sbin/arkbox-installer renew --scheduled" in service
    assert "SuccessExitStatus=75" in service
    assert "OnUnitInactiveSec=15min" in (tmp_path / "etc/systemd/system" / timer.TIMER).read_text()


def test_status_says_why_the_fallback_is_served_and_when_it_retries(
        config: Appliance, tmp_path: Path) -> None:
    ctx = FirstbootContext(config=config, paths=Paths(tmp_path), now=lambda: NOW)
    tls_step.run(ctx)
    cert.record_reason(cert.live_files(ctx), "DNS for wiki.x.example does not point here yet")
    renew_state.RenewState(failures=1, last_error="DNS for wiki.x.example does not point here yet",
                     next_attempt="2025-06-01T12:15:00+00:00").save(
        renew_state.state_path(ctx.paths))
    facts = renew_state.status_facts(ctx.paths, NOW)
    assert facts is not None and facts["renewal"]["failures"] == 1
    shown = _render(facts)
    assert ("certificate: fallback (self-signed), valid until 2025-08-30 12:00:00 UTC: DNS for "
            "wiki.x.example does not point here yet") in shown
    assert "next attempt 2025-06-01 12:15:00 UTC" in shown


def test_status_warns_when_a_real_certificate_nears_expiry(config: Appliance,
                                                           tmp_path: Path) -> None:
    ctx = FirstbootContext(config=config, paths=Paths(tmp_path), now=lambda: NOW)
    key, chain = ca_issued(NAMES, NOW - timedelta(days=80), 90)
    cert.install(cert.live_files(ctx), cert.staged_files(ctx), key, chain)
    renew_state.RenewState(failures=9, last_error="the ACME CA is unreachable").save(
        renew_state.state_path(ctx.paths))
    facts = renew_state.status_facts(ctx.paths, NOW)
    assert facts is not None
    assert facts["warning"] == ("the certificate expires in 10 days (2025-06-11) and was not "
                                "renewed: the ACME CA is unreachable")
    assert "⚠ the certificate expires in 10 days" in _render(facts)


def _render(facts: dict[str, Any]) -> str:
    status = Status(command="firstboot", installer_version="t", started_at=NOW.isoformat(),
                    steps=[StepReport("tls", StepState.CHANGED)])
    console = Console(width=200, record=True)
    console.print(render_status(status, facts))
    return " ".join(console.export_text().split())


def test_renew_help_documents_its_exit_codes() -> None:
    shown = subprocess.run([sys.executable, "-m", "firstboot", "renew", "--help"],
                           capture_output=True, text=True, check=True)
    text = " ".join(shown.stdout.split())
    assert "--force" in text and "--scheduled" in text
    assert "75 with --scheduled: the CA did not issue, retried later with backoff" in text


# ---------------------------------------------------------------- renew, without a CA


def test_a_failed_request_is_recorded_with_backoff_and_never_holds_the_runner_lock(
        config: Appliance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from firstboot.runner import runner_active

    ctx = FirstbootContext(config=config, paths=Paths(tmp_path), now=lambda: NOW)
    tls_step.run(ctx)
    asked: list[bool] = []

    def unreachable(request: acme_client.Request) -> acme_client.Issued:
        asked.append(runner_active(ctx.paths.state))  # an apply may run meanwhile
        raise acme_client.IssuanceFailed(CaProblem("connection", "refused", "wiki.arkbox.test"))

    monkeypatch.setattr(renew, "issue", unreachable)
    report = renew.renew(ctx)
    assert asked == [False]
    assert report.result is renew.Result.FAILED
    assert report.summary.startswith("DNS for wiki.arkbox.test does not point here yet")
    state = renew_state.RenewState.load(renew_state.state_path(ctx.paths))
    assert state.failures == 1 and state.next_attempt == "2025-06-01T12:15:00+00:00"
    assert json.loads(cert.live_files(ctx).info.read_text())["reason"] == state.last_error
    # The timer's run waits out the backoff (once first boot is done); a manual run does not.
    assert renew.renew(ctx, scheduled=True).summary.endswith("first boot has not finished yet")
    ctx.paths.done_marker.write_text("done\n")
    waiting = renew.renew(ctx, scheduled=True)
    assert waiting.result is renew.Result.WAITING and "next attempt at 2025-06-01T12:15" in \
        waiting.summary
    assert renew.renew(ctx).result is renew.Result.FAILED and len(asked) == 2
    assert renew_state.RenewState.load(renew_state.state_path(ctx.paths)).failures == 2


def test_a_valid_certificate_is_not_renewed(config: Appliance, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = FirstbootContext(config=config, paths=Paths(tmp_path), now=lambda: NOW)
    key, chain = ca_issued(NAMES, NOW - timedelta(days=10), 90)
    cert.install(cert.live_files(ctx), cert.staged_files(ctx), key, chain)
    monkeypatch.setattr(renew, "issue", lambda request: pytest.fail("the CA was asked"))
    report = renew.renew(ctx)
    assert report.result is renew.Result.NOT_DUE
    assert report.summary == ("certificate valid until 2025-08-20 12:00 UTC for "
                              + " ".join(NAMES) + "; not renewing")
