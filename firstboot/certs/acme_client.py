"""One certificate for a list of host names from an RFC 8555 CA, over HTTP-01.

The protocol is the `acme` library's (ClientV2); keys and the CSR are made with
`cryptography`. What is ours: which key types, how long to be patient with a CA
that rejects nonces, and turning a CA's error into a sentence an operator can
act on ("DNS for x.example does not point here yet").
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from acme import challenges, client, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID
from josepy.jwa import ES256, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from firstboot.core.files import atomic_write, ensure_dir

log = logging.getLogger("arkbox.certs")

USER_AGENT = "arkbox-installer (acme-python)"
NETWORK_TIMEOUT_S = 30
# How long one issuance may take: validation by the CA, then finalization.
ORDER_DEADLINE = timedelta(minutes=3)
# The acme library retries a badNonce once; a CA may legitimately reject more in a row
# (RFC 8555 §6.5: the client SHOULD retry), Pebble rejects a share on purpose. One issuance
# makes some 30 POSTs: with half the nonces rejected, 10 tries per POST failed an issuance
# in about 3 % of runs (seen in CI); 30 tries make that about 3 in 100 million.
BAD_NONCE_RETRIES = 30
COMMON_NAME_MAX = 64


# ---------------------------------------------------------------- keys and CSR


def new_private_key(key_type: str) -> PrivateKeyTypes:
    """A fresh key of the config's `tls.key_type` (ecdsa-p256, ecdsa-p384, rsa-2048/4096)."""
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type in ("rsa-2048", "rsa-4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise ValueError(f"unknown key type {key_type!r}")


def key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_csr(key: PrivateKeyTypes, names: list[str]) -> bytes:
    """A PEM CSR for every name in the SAN (the first also as CN when it fits)."""
    subject = (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
               if len(names[0]) <= COMMON_NAME_MAX else x509.Name([]))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                       critical=False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]  # every key new_private_key makes
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def load_or_create_account_key(path: Path) -> JWK:
    """The ACME account key, made once (ECDSA P-256) and kept 0600 where backups reach it."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        pem = key_pem(ec.generate_private_key(ec.SECP256R1()))
        ensure_dir(path.parent, 0o700)
        atomic_write(path, pem, 0o600)
        log.info("made an ACME account key in %s", path)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{path} holds neither an EC nor an RSA key")
    return JWKEC(key=key) if isinstance(key, ec.EllipticCurvePrivateKey) else JWKRSA(
        key=key)


def _signing_algorithm(key: JWK) -> JWASignature:
    if isinstance(key, JWKEC):
        return ES256
    return RS256


# ---------------------------------------------------------------- why it failed


@dataclass(frozen=True)
class CaProblem:
    """A failure to get a certificate, as the CA (or the way to it) reported it."""

    kind: str  # an ACME error code (dns, connection, ...) or unreachable | untrusted | timeout
    detail: str
    name: str | None = None  # the host name it concerns, when the CA said


class IssuanceFailed(Exception):
    def __init__(self, problem: CaProblem) -> None:
        super().__init__(explain(problem))
        self.problem = problem


def explain(problem: CaProblem) -> str:
    """One sentence for status: what is wrong, in the operator's terms, with the CA's words."""
    name = problem.name or "a host name"
    said = f" (CA: {problem.detail})" if problem.detail else ""
    reasons = {
        "dns": f"DNS for {name} does not resolve yet{said}",
        "unknownHost": f"DNS for {name} does not resolve yet{said}",
        "connection": f"DNS for {name} does not point here yet, or port 80 is not reachable "
                      f"from the internet{said}",
        "incorrectResponse": f"DNS for {name} does not point here yet (another server "
                             f"answered the challenge){said}",
        "unauthorized": f"DNS for {name} does not point here yet (the challenge was not "
                        f"answered by this box){said}",
        "caa": f"a CAA record of {name} forbids this CA{said}",
        "rejectedIdentifier": f"the CA will not issue for {name}{said}",
        "rateLimited": f"the CA's rate limit was reached; retrying later{said}",
        "unreachable": f"the ACME CA is unreachable{said}",
        "untrusted": f"the ACME CA's HTTPS certificate is not trusted (set tls.ca_bundle "
                     f"for a private CA){said}",
        "timeout": f"the CA did not finish validating in time{said}",
    }
    return reasons.get(problem.kind, f"the CA refused: {problem.kind}{said}")


def problem_from_acme_error(error: messages.Error) -> CaProblem:
    """The most specific problem in an ACME error (subproblems name the host)."""
    for sub in error.subproblems or ():
        return problem_from_acme_error(sub)
    name = error.identifier.value if error.identifier is not None else None
    return CaProblem(error.code or str(error.typ), (error.detail or "").strip(), name)


def problem_from_exception(err: Exception, directory: str) -> CaProblem:
    if isinstance(err, IssuanceFailed):
        return err.problem
    if isinstance(err, errors.ValidationError):
        for authzr in err.failed_authzrs:
            for challb in authzr.body.challenges:
                if challb.error is not None:
                    problem = problem_from_acme_error(challb.error)
                    return CaProblem(problem.kind, problem.detail,
                                     problem.name or authzr.body.identifier.value)
        return CaProblem("unauthorized", "validation failed")
    if isinstance(err, messages.Error):
        return problem_from_acme_error(err)
    if isinstance(err, errors.IssuanceError):
        return problem_from_acme_error(err.error)
    if isinstance(err, requests.exceptions.SSLError):
        return CaProblem("untrusted", f"{directory}: {_short(err)}")
    if isinstance(err, requests.exceptions.RequestException):
        return CaProblem("unreachable", f"{directory}: {_short(err)}")
    if isinstance(err, errors.TimeoutError):
        return CaProblem("timeout", "")
    return CaProblem(type(err).__name__, str(err))


def _short(err: Exception) -> str:
    """The innermost reason of a requests/urllib3 error, not its whole repr chain."""
    text = str(err)
    for marker in ("Failed to resolve", "Name or service not known", "Connection refused",
                   "certificate verify failed", "timed out", "No route to host"):
        if marker in text:
            return marker
    return text[:200]


# ---------------------------------------------------------------- the client


class PatientNetwork(client.ClientNetwork):
    """acme's network layer, retrying badNonce more than once, trusting an extra CA file."""

    def __init__(self, key: JWK, ca_file: str | None) -> None:
        super().__init__(key, alg=_signing_algorithm(key), user_agent=USER_AGENT,
                         timeout=NETWORK_TIMEOUT_S)
        if ca_file is not None:
            # requests takes a CA file path where acme passes its verify flag.
            self.verify_ssl = ca_file  # type: ignore[assignment]

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for attempt in range(1, BAD_NONCE_RETRIES + 1):
            try:
                return self._post_once(*args, **kwargs)
            except messages.Error as error:
                if error.code != "badNonce" or attempt == BAD_NONCE_RETRIES:
                    raise
                log.debug("badNonce from the CA, retrying (%d)", attempt)
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class Request:
    directory: str
    names: list[str]
    key_type: str
    account_key: Path
    webroot: Path  # served as http://NAME/ on port 80 (the proxy's ACME root)
    contact_email: str | None = None
    ca_file: str | None = None  # trust for the directory's HTTPS, when not the system's


@dataclass(frozen=True)
class Issued:
    key_pem: bytes
    fullchain_pem: bytes


def issue(request: Request) -> Issued:
    """One order for all names; raises IssuanceFailed saying why the CA did not issue."""
    try:
        return _issue(request)
    except IssuanceFailed:
        raise
    except (errors.Error, messages.Error, requests.exceptions.RequestException) as err:
        raise IssuanceFailed(problem_from_exception(err, request.directory)) from err


def _issue(request: Request) -> Issued:
    account_key = load_or_create_account_key(request.account_key)
    net = PatientNetwork(account_key, request.ca_file)
    directory = client.ClientV2.get_directory(request.directory, net)
    acme = client.ClientV2(directory, net)
    contact = (f"mailto:{request.contact_email}",) if request.contact_email else ()
    registration = messages.NewRegistration.from_data(terms_of_service_agreed=True)
    if contact:
        registration = registration.update(contact=contact)
    try:
        acme.new_account(registration)
    except errors.ConflictError as existing:
        # The key is registered already (every run after the first): use that account.
        net.account = messages.RegistrationResource(uri=existing.location,
                                                    body=messages.Registration())
    key = new_private_key(request.key_type)
    order = acme.new_order(make_csr(key, request.names))
    deadline = datetime.now() + ORDER_DEADLINE
    with _challenges(acme, order, request.webroot) as answered:
        for challb in answered:
            acme.answer_challenge(challb, challb.response(account_key))
        order = acme.poll_and_finalize(order, deadline)
    if not order.fullchain_pem:
        raise IssuanceFailed(CaProblem("serverInternal", "the order has no certificate"))
    return Issued(key_pem(key), order.fullchain_pem.encode())


@contextmanager
def _challenges(acme: client.ClientV2, order: messages.OrderResource,
                webroot: Path) -> Iterator[list[messages.ChallengeBody]]:
    """Write each pending authorization's HTTP-01 answer into the webroot; remove them after."""
    directory = webroot / ".well-known" / "acme-challenge"
    written: list[Path] = []
    answered: list[messages.ChallengeBody] = []
    account_key = acme.net.key
    assert account_key is not None
    try:
        for authzr in order.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue  # validated recently for this account: nothing to prove
            challb = next((c for c in authzr.body.challenges
                           if isinstance(c.chall, challenges.HTTP01)), None)
            if challb is None:
                raise IssuanceFailed(CaProblem(
                    "unsupportedChallenge", "the CA offers no http-01 challenge",
                    authzr.body.identifier.value))
            chall = challb.chall
            assert isinstance(chall, challenges.HTTP01)
            path = directory / chall.encode("token")
            atomic_write(path, chall.validation(account_key), 0o644)
            written.append(path)
            answered.append(challb)
        yield answered
    finally:
        for path in written:
            path.unlink(missing_ok=True)
