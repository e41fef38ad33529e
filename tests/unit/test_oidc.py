"""IdTokenVerifier with tokens signed by generated keys and certs served from loopback.

The certs tests give the verifier timings in tenths of a second (production's are seconds
to minutes) and break the loopback certs server as a certs URL breaks: 500s, or hanging.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from paynow_service.adapters.emulators import free_port
from paynow_service.adapters.oidc import (
    CertsTimings,
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
async def verifier(certs: CertsServer) -> AsyncIterator[IdTokenVerifier]:
    verifier = IdTokenVerifier(AUDIENCE, [CALLER, "other@example.com"], certs.url)
    yield verifier
    await verifier.aclose()


def quick(**overrides: Any) -> CertsTimings:
    """Timings short enough for a test, no jitter; `overrides` replace any of them."""
    timings = CertsTimings(
        fetch_timeout_s=0.5,
        backoff_first_s=0.1,
        backoff_cap_s=0.4,
        backoff_jitter=0.0,
        grace_s=0.3,
        request_wait_s=0.2,
    )
    return dataclasses.replace(timings, **overrides)


MakeVerifier = Callable[..., IdTokenVerifier]


@pytest.fixture
async def make_verifier() -> AsyncIterator[MakeVerifier]:
    """`make_verifier(url, **timings)`: a verifier with quick() timings, closed after the test."""
    made: list[IdTokenVerifier] = []

    def make(url: str, **timings: Any) -> IdTokenVerifier:
        made.append(IdTokenVerifier(AUDIENCE, [CALLER], url, timings=quick(**timings)))
        return made[-1]

    yield make
    for verifier in made:
        await verifier.aclose()


async def eventually(predicate: Callable[[], bool], within_s: float = 3.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.01)


def fetches(result: str) -> float:
    return REGISTRY.get_sample_value("paynow_oidc_certs_fetches_total", {"result": result}) or 0.0


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
        {"issued_in_s": 600},  # made into `issued_at` when the test runs, not when it is collected
        {"issuer": "https://evil.example.com"},
    ],
    ids=["wrong-audience", "expired", "issued-in-the-future", "wrong-issuer"],
)
async def test_invalid_claims_are_unauthenticated(
    verifier: IdTokenVerifier, issuer: TokenIssuer, overrides: dict[str, object]
) -> None:
    claims: dict[str, object] = {"audience": AUDIENCE, "email": CALLER, **overrides}
    if "issued_in_s" in claims:
        claims["issued_at"] = int(time.time()) + int(claims.pop("issued_in_s"))  # type: ignore[call-overload]
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
    make_verifier: MakeVerifier, certs: CertsServer, issuer: TokenIssuer
) -> None:
    verifier = make_verifier(certs.url, unknown_kid_interval_s=0.0)
    await verifier.verify(issuer.bearer(audience=AUDIENCE, email=CALLER))
    rotated = TokenIssuer()
    certs.issuers.append(rotated)
    assert await verifier.verify(rotated.bearer(audience=AUDIENCE, email=CALLER)) == CALLER
    assert certs.requests == 2


async def test_unreachable_certs_without_a_cache_is_transient(
    make_verifier: MakeVerifier, issuer: TokenIssuer
) -> None:
    verifier = make_verifier(f"http://127.0.0.1:{free_port()}/certs")
    with pytest.raises(CertsUnavailableError):
        await verifier.verify(issuer.bearer(audience=AUDIENCE, email=CALLER))


def test_an_audience_is_required(certs: CertsServer) -> None:
    with pytest.raises(ValueError, match="audience"):
        IdTokenVerifier("", [CALLER], certs.url)


def test_backoff_doubles_from_5_s_to_a_5_minute_cap_with_jitter() -> None:
    timings = CertsTimings()
    for failures, full in [(1, 5), (2, 10), (3, 20), (7, 300), (10_000, 300)]:
        waits = [timings.backoff_s(failures) for _ in range(50)]
        assert all(0.8 * full <= w <= full for w in waits), (failures, min(waits), max(waits))
        assert len(set(waits)) > 1  # jittered: instances do not retry in step
    assert all(0.8 * 3600 <= timings.refresh_after_s(3600) <= 0.9 * 3600 for _ in range(50))


async def test_start_fetches_before_any_request_and_aclose_stops_refreshing(
    make_verifier: MakeVerifier, issuer: TokenIssuer
) -> None:
    with CertsServer(issuer, max_age=1) as certs:
        verifier = make_verifier(certs.url, min_max_age_s=0.0, refresh_ahead=(0.1, 0.1))
        verifier.start()
        await eventually(lambda: certs.requests >= 2)  # the warm-up, then refreshes every 0.1 s
        assert verifier.ready()
        await verifier.aclose()
        stopped_at = certs.requests
        await asyncio.sleep(0.3)
        assert certs.requests == stopped_at


async def test_refresh_ahead_runs_in_the_background_and_requests_do_not_wait(
    make_verifier: MakeVerifier, issuer: TokenIssuer
) -> None:
    with CertsServer(issuer, max_age=1) as certs:
        # Keys good for 1 s, refreshed at 0.3 s; a refresh takes the server 0.5 s to answer.
        verifier = make_verifier(certs.url, min_max_age_s=0.0, refresh_ahead=(0.3, 0.3), fetch_timeout_s=2.0)
        token = issuer.bearer(audience=AUDIENCE, email=CALLER)
        await verifier.verify(token)
        rotated = TokenIssuer()
        certs.issuers.append(rotated)
        certs.delay_s = 0.5
        slowest = 0.0
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            started = time.perf_counter()
            assert await verifier.verify(token) == CALLER
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0.005)
        assert certs.requests >= 2
        assert slowest < 0.1, f"a request waited {slowest:.3f} s for a refresh"
        # The new key came with the background refresh: no unknown-kid fetch was allowed.
        fetched = certs.requests
        assert await verifier.verify(rotated.bearer(audience=AUDIENCE, email=CALLER)) == CALLER
        assert certs.requests in (fetched, fetched + 1)  # at most joined a refresh in flight


async def test_a_failing_certs_url_keeps_the_last_good_keys_and_backs_off(
    make_verifier: MakeVerifier, issuer: TokenIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    with CertsServer(issuer, max_age=1) as certs:
        verifier = make_verifier(certs.url, min_max_age_s=0.0, refresh_ahead=(0.2, 0.2))
        token = issuer.bearer(audience=AUDIENCE, email=CALLER)
        await verifier.verify(token)
        certs.failure = "error"
        errors_before = fetches("error")
        verified = 0
        with caplog.at_level(logging.WARNING, logger="paynow_service.oidc"):
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                assert await verifier.verify(token) == CALLER
                verified += 1
                await asyncio.sleep(0.002)
        # Refresh at 0.2 s, then retries after 0.1, 0.2 and 0.4 s: 4 failed fetches in 1 s.
        failed = certs.requests - 1
        assert verified > 200
        assert 2 <= failed <= 5, failed
        assert fetches("error") - errors_before == failed
        lines = [r for r in caplog.records if r.getMessage().startswith("Signing certs fetch failed")]
        assert len(lines) == failed  # one line per failed fetch, none per request
        assert token.removeprefix("Bearer ") not in caplog.text
        assert verifier.ready()
        certs.failure = None
        await eventually(lambda: verifier.certs.failed_fetches == 0)


async def test_a_cold_failing_certs_url_backs_off_instead_of_fetching_per_request(
    make_verifier: MakeVerifier, certs: CertsServer, issuer: TokenIssuer
) -> None:
    certs.failure = "error"
    verifier = make_verifier(certs.url, grace_s=5.0)
    token = issuer.bearer(audience=AUDIENCE, email=CALLER)
    refused = 0
    until = time.monotonic() + 1.0
    while time.monotonic() < until:
        with pytest.raises(CertsUnavailableError):
            await verifier.verify(token)
        refused += 1
        await asyncio.sleep(0.002)
    # Fetches at 0, 0.1, 0.3 and 0.7 s (the back-off doubles from 0.1 s): not one per request.
    assert refused > 200
    assert 2 <= certs.requests <= 5, certs.requests


async def test_unknown_kids_refresh_at_most_once_per_interval(
    make_verifier: MakeVerifier, certs: CertsServer, issuer: TokenIssuer, foreign: TokenIssuer
) -> None:
    verifier = make_verifier(certs.url, unknown_kid_interval_s=0.3)
    await verifier.verify(issuer.bearer(audience=AUDIENCE, email=CALLER))
    forged = foreign.bearer(audience=AUDIENCE, email=CALLER)
    for _ in range(10):  # within the interval since the first fetch: no refresh
        with pytest.raises(UnauthenticatedError):
            await verifier.verify(forged)
    assert certs.requests == 1
    await asyncio.sleep(0.35)
    for _ in range(10):
        with pytest.raises(UnauthenticatedError):
            await verifier.verify(forged)
    assert certs.requests == 2


async def test_unknown_kids_never_fetch_during_a_backoff(
    make_verifier: MakeVerifier, certs: CertsServer, issuer: TokenIssuer, foreign: TokenIssuer
) -> None:
    verifier = make_verifier(certs.url, unknown_kid_interval_s=0.0, backoff_first_s=30.0)
    token = issuer.bearer(audience=AUDIENCE, email=CALLER)
    await verifier.verify(token)
    certs.failure = "error"
    forged = foreign.bearer(audience=AUDIENCE, email=CALLER)
    with pytest.raises(UnauthenticatedError):
        await verifier.verify(forged)  # may look (keys rotate): the look fails, a back-off starts
    assert certs.requests == 2
    for _ in range(20):
        with pytest.raises(UnauthenticatedError):
            await verifier.verify(forged)
        assert await verifier.verify(token) == CALLER
    assert certs.requests == 2


async def test_cold_start_is_unavailable_within_the_grace_then_not_ready_until_keys_arrive(
    make_verifier: MakeVerifier, certs: CertsServer, issuer: TokenIssuer
) -> None:
    certs.failure = "error"
    verifier = make_verifier(certs.url, grace_s=0.3, backoff_first_s=0.05, backoff_cap_s=0.05)
    verifier.start()
    token = issuer.bearer(audience=AUDIENCE, email=CALLER)
    assert verifier.ready()
    with pytest.raises(CertsUnavailableError):
        await verifier.verify(token)
    assert verifier.ready()  # still within the grace
    await asyncio.sleep(0.35)
    assert not verifier.ready()
    with pytest.raises(CertsUnavailableError):
        await verifier.verify(token)
    certs.failure = None
    await eventually(verifier.ready)
    assert await verifier.verify(token) == CALLER


async def test_a_hanging_certs_url_holds_no_request_longer_than_the_request_wait(
    make_verifier: MakeVerifier, certs: CertsServer, issuer: TokenIssuer
) -> None:
    certs.failure = "hang"
    errors_before = fetches("error")
    verifier = make_verifier(certs.url, fetch_timeout_s=0.5, request_wait_s=0.2, backoff_first_s=5.0)
    verifier.start()
    token = issuer.bearer(audience=AUDIENCE, email=CALLER)
    started = time.perf_counter()
    with pytest.raises(CertsUnavailableError):
        await verifier.verify(token)  # waits for the start-up fetch, but only 0.2 s
    assert time.perf_counter() - started < 0.4
    # The fetch itself gives up at its timeout and counts as failed ...
    await eventually(lambda: fetches("error") > errors_before, within_s=1.5)
    # ... after which requests without keys are answered at once.
    for _ in range(20):
        started = time.perf_counter()
        with pytest.raises(CertsUnavailableError):
            await verifier.verify(token)
        assert time.perf_counter() - started < 0.05
    assert certs.requests == 1


async def test_an_unknown_kid_waits_on_a_hanging_certs_url_no_longer_than_the_request_wait(
    make_verifier: MakeVerifier, certs: CertsServer, issuer: TokenIssuer, foreign: TokenIssuer
) -> None:
    verifier = make_verifier(certs.url, unknown_kid_interval_s=0.0, fetch_timeout_s=1.0, request_wait_s=0.2)
    await verifier.verify(issuer.bearer(audience=AUDIENCE, email=CALLER))
    certs.failure = "hang"
    started = time.perf_counter()
    with pytest.raises(UnauthenticatedError):
        await verifier.verify(foreign.bearer(audience=AUDIENCE, email=CALLER))
    assert time.perf_counter() - started < 0.4
    assert certs.requests == 2
