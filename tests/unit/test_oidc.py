"""IdTokenVerifier with tokens signed by generated keys and certs served from loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from paynow_service.adapters import oidc
from paynow_service.adapters.emulators import free_port
from paynow_service.adapters.oidc import (
    CertsUnavailableError,
    IdTokenVerifier,
    PermissionDeniedError,
    UnauthenticatedError,
)
from tests.support.tokens import CertsServer, TokenIssuer, unsigned_token

AUDIENCE = "https://points.example.test"
CALLER = "caller@project.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer()


@pytest.fixture(scope="module")
def foreign() -> TokenIssuer:
    return TokenIssuer()


@pytest.fixture
def certs(issuer: TokenIssuer) -> Iterator[CertsServer]:
    with CertsServer(issuer) as server:
        yield server


@pytest.fixture
def verifier(certs: CertsServer) -> IdTokenVerifier:
    return IdTokenVerifier(AUDIENCE, [CALLER, "other@example.com"], certs.url)


async def test_valid_token_gives_the_caller_email(verifier: IdTokenVerifier, issuer: TokenIssuer) -> None:
    assert await verifier.verify(issuer.bearer(audience=AUDIENCE, email=CALLER)) == CALLER
    assert (
        await verifier.verify("bearer " + issuer.token(audience=AUDIENCE, email=CALLER.upper()))
        == CALLER.upper()
    )


async def test_both_google_issuers_are_accepted(verifier: IdTokenVerifier, issuer: TokenIssuer) -> None:
    assert await verifier.verify(issuer.bearer(audience=AUDIENCE, email=CALLER, issuer="accounts.google.com"))


@pytest.mark.parametrize(
    "overrides",
    [
        {"audience": "https://someone-else.example"},
        {"expires_in": -120},
        {"issued_at": int(time.time()) + 600},
        {"issuer": "https://evil.example.com"},
    ],
    ids=["wrong-audience", "expired", "issued-in-the-future", "wrong-issuer"],
)
async def test_invalid_claims_are_unauthenticated(
    verifier: IdTokenVerifier, issuer: TokenIssuer, overrides: dict[str, object]
) -> None:
    claims: dict[str, object] = {"audience": AUDIENCE, "email": CALLER, **overrides}
    with pytest.raises(UnauthenticatedError):
        await verifier.verify(issuer.bearer(**claims))  # type: ignore[arg-type]


async def test_wrong_email_is_permission_denied(verifier: IdTokenVerifier, issuer: TokenIssuer) -> None:
    with pytest.raises(PermissionDeniedError):
        await verifier.verify(issuer.bearer(audience=AUDIENCE, email="intruder@example.com"))


async def test_unverified_email_is_permission_denied(verifier: IdTokenVerifier, issuer: TokenIssuer) -> None:
    with pytest.raises(PermissionDeniedError):
        await verifier.verify(issuer.bearer(audience=AUDIENCE, email=CALLER, email_verified=False))


async def test_alg_none_is_refused(verifier: IdTokenVerifier, issuer: TokenIssuer) -> None:
    claims = issuer.claims(audience=AUDIENCE, email=CALLER)
    with pytest.raises(UnauthenticatedError):
        await verifier.verify(f"Bearer {unsigned_token(claims, kid=issuer.kid)}")
    with pytest.raises(UnauthenticatedError):
        await verifier.verify(f"Bearer {unsigned_token(claims)}")


async def test_foreign_key_is_refused(verifier: IdTokenVerifier, foreign: TokenIssuer) -> None:
    with pytest.raises(UnauthenticatedError):
        await verifier.verify(foreign.bearer(audience=AUDIENCE, email=CALLER))


async def test_foreign_key_claiming_a_known_kid_is_refused(
    verifier: IdTokenVerifier, issuer: TokenIssuer
) -> None:
    impostor = TokenIssuer(kid=issuer.kid)  # same key id, another private key
    with pytest.raises(UnauthenticatedError):
        await verifier.verify(impostor.bearer(audience=AUDIENCE, email=CALLER))


async def test_tampered_claims_are_refused(verifier: IdTokenVerifier, issuer: TokenIssuer) -> None:
    header, _, signature = issuer.token(audience=AUDIENCE, email="intruder@example.com").split(".")
    _, claims, _ = unsigned_token(issuer.claims(audience=AUDIENCE, email=CALLER)).split(".")
    with pytest.raises(UnauthenticatedError):
        await verifier.verify(f"Bearer {header}.{claims}.{signature}")


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer not.a.jwt", "Bearer x"]
)
async def test_missing_or_malformed_header(verifier: IdTokenVerifier, header: str | None) -> None:
    with pytest.raises(UnauthenticatedError):
        await verifier.verify(header)


async def test_certs_are_fetched_once_and_cached(
    verifier: IdTokenVerifier, certs: CertsServer, issuer: TokenIssuer, foreign: TokenIssuer
) -> None:
    token = issuer.bearer(audience=AUDIENCE, email=CALLER)
    await asyncio.gather(*(verifier.verify(token) for _ in range(20)))
    # A stream of unknown key ids must not turn into a stream of fetches.
    for _ in range(5):
        with pytest.raises(UnauthenticatedError):
            await verifier.verify(foreign.bearer(audience=AUDIENCE, email=CALLER))
    assert certs.requests == 1


async def test_rotated_key_is_picked_up(
    verifier: IdTokenVerifier, certs: CertsServer, issuer: TokenIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    await verifier.verify(issuer.bearer(audience=AUDIENCE, email=CALLER))
    rotated = TokenIssuer()
    certs.issuers.append(rotated)
    monkeypatch.setattr(oidc, "_MIN_REFRESH_S", 0.0)
    assert await verifier.verify(rotated.bearer(audience=AUDIENCE, email=CALLER)) == CALLER
    assert certs.requests == 2


async def test_unreachable_certs_without_a_cache_is_transient(issuer: TokenIssuer) -> None:
    verifier = IdTokenVerifier(AUDIENCE, [CALLER], f"http://127.0.0.1:{free_port()}/certs")
    with pytest.raises(CertsUnavailableError):
        await verifier.verify(issuer.bearer(audience=AUDIENCE, email=CALLER))


def test_an_audience_is_required(certs: CertsServer) -> None:
    with pytest.raises(ValueError, match="audience"):
        IdTokenVerifier("", [CALLER], certs.url)
