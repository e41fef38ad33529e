"""The push endpoint while Google's certs URL fails, through a real `serve` process.

The certs URL is a loopback server that answers 500 or accepts and never answers; the
fetches are counted there. 200 pushes cost a handful of fetches, not one each; a warm
instance keeps accepting valid tokens on its last good keys; a cold one answers 503
quickly and, once PUSH_CERTS_GRACE_S has passed without keys, reports not ready.
The last test drives /readyz's check in-process: shared by a burst of probes, cached,
and saying "unavailable" rather than what failed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import httpx
import pytest

from paynow_loadtest.processes import CLI, ServiceProcess
from paynow_service.adapters.emulators import EmulatorStack, free_port
from paynow_service.config import Settings
from paynow_service.entrypoints.http_app import _Readiness
from tests.e2e.test_push_auth_e2e import ACCOUNT, AUDIENCE, PushTarget, envelope
from tests.support.stack import apply_topology, stack_env, unique, write_catalog
from tests.support.tokens import CertsServer, TokenIssuer

pytestmark = [pytest.mark.emulators, pytest.mark.e2e, pytest.mark.timeout(120)]

GRACE_S = 2.0
PUSHES = 200
MAX_FETCHES = 5
# `serve` with the floor on the certs' max-age lowered from 60 s to 1 s: the warm instance then
# refreshes (and meets the failing certs URL) within the test instead of 48 s in.
SERVE_WITH_SHORT_CERTS_MAX_AGE = (
    "import functools, sys\n"
    "from paynow_service.adapters import oidc\n"
    "oidc.CertsTimings = functools.partial(oidc.CertsTimings, min_max_age_s=1.0)\n"
    "from paynow_service.entrypoints.cli import main\n"
    "sys.exit(main(['serve']))\n"
)


Failure = Literal["error", "hang"]


def serve_push(
    emulators: EmulatorStack, tmp: Path, issuer: TokenIssuer, certs: CertsServer, argv: list[str]
) -> PushTarget:
    """The push route with OIDC on, its certs from `certs`, served by the process `argv` starts."""
    env = stack_env(
        emulators.env(),
        write_catalog(tmp),
        HTTP_ROUTES="push",
        PUSH_AUTH="enabled",
        PUSH_AUDIENCE=AUDIENCE,
        PUSH_SERVICE_ACCOUNT=ACCOUNT,
        PUSH_CERTS_URL=certs.url,
        PUSH_CERTS_GRACE_S=str(GRACE_S),
        PORT=str(free_port()),
    )
    settings = Settings.from_env(env)
    apply_topology(settings)
    http = ServiceProcess("serve", env, tmp, port=settings.port, argv=argv).wait_ready()
    return PushTarget(f"http://127.0.0.1:{http.port}/api/tasks/paynow/process", settings, issuer, http)


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer()


@pytest.fixture
def certs(issuer: TokenIssuer) -> Iterator[CertsServer]:
    # Stopped after the service (fixtures end in reverse): hanging answers are let go first.
    with CertsServer(issuer, max_age=1) as server:
        yield server


def readyz(target: PushTarget) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{target.http.port}/readyz", timeout=10)


def timed_push(target: PushTarget, authorization: str) -> tuple[int, float]:
    body, _ = envelope(unique("u"))
    started = time.perf_counter()
    status = target.push(body, authorization).status_code
    return status, time.perf_counter() - started


def push_all(target: PushTarget, tokens: list[str]) -> list[tuple[int, float]]:
    """(status, seconds) of one push per token, 8 at a time as Pub/Sub would."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda token: timed_push(target, token), tokens))


@pytest.mark.parametrize("failure", ["error", "hang"])
def test_a_warm_instance_keeps_accepting_valid_tokens_while_the_certs_url_fails(
    emulators: EmulatorStack, tmp_path: Path, issuer: TokenIssuer, certs: CertsServer, failure: Failure
) -> None:
    argv = [sys.executable, "-c", SERVE_WITH_SHORT_CERTS_MAX_AGE]
    target = serve_push(emulators, tmp_path, issuer, certs, argv)
    try:
        assert timed_push(target, target.good())[0] == 204  # the keys are in
        certs.failure = failure
        ok_fetches = certs.requests
        deadline = time.monotonic() + 5
        while certs.requests == ok_fetches:  # the refresh ahead of the 1 s max-age now fails
            assert time.monotonic() < deadline, "no refresh reached the certs URL"
            time.sleep(0.05)
        forged = TokenIssuer().bearer(audience=AUDIENCE, email=ACCOUNT)  # an unknown kid
        tokens = [forged if i % 4 == 3 else target.good() for i in range(PUSHES)]
        answers = push_all(target, tokens)
        valid = [a for t, a in zip(tokens, answers, strict=True) if t != forged]
        refused = [a for t, a in zip(tokens, answers, strict=True) if t == forged]
        assert {status for status, _ in valid} == {204}
        assert {status for status, _ in refused} == {401}
        failed_fetches = certs.requests - ok_fetches
        print(
            f"warm/{failure}: {PUSHES} pushes, {failed_fetches} failed fetches, slowest answer"
            f" {max(s for _, s in valid):.2f} s (valid), {max(s for _, s in refused):.2f} s (unknown kid)"
        )
        assert 1 <= failed_fetches <= MAX_FETCHES
        # Valid pushes never wait on the failing refresh; an unknown kid at most 1 s.
        assert max(elapsed for _, elapsed in answers) < 3.0
        assert readyz(target).json()["checks"]["push_certs"] == "ok"
        assert "Signing certs fetch failed - serving the last good keys" in target.http.logs()
    finally:
        certs.failure = None
        target.http.stop()


@pytest.mark.parametrize("failure", ["error", "hang"])
def test_a_cold_instance_answers_503_quickly_then_reports_not_ready_after_the_grace(
    emulators: EmulatorStack, tmp_path: Path, issuer: TokenIssuer, certs: CertsServer, failure: Failure
) -> None:
    certs.failure = failure
    target = serve_push(emulators, tmp_path, issuer, certs, [*CLI, "serve"])
    started = time.monotonic()  # a little after the process started, and with it the grace
    try:
        early, early_at = readyz(target), time.monotonic() - started
        answers = push_all(target, [target.good()] * PUSHES)
        assert {status for status, _ in answers} == {503}
        slowest = max(elapsed for _, elapsed in answers)
        print(
            f"cold/{failure}: {PUSHES} pushes in {time.monotonic() - started:.1f} s, "
            f"{certs.requests} fetches, slowest answer {slowest:.2f} s, readyz at start {early.status_code}"
        )
        assert slowest < 3.0
        assert certs.requests <= MAX_FETCHES
        if early_at < GRACE_S / 2:  # surely within the grace (unless serve was slow to answer)
            assert early.status_code == 200, early.text
        deadline = started + GRACE_S + 5  # the grace, then the 2 s the answer may be cached
        while (ready := readyz(target)).status_code != 503:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.2)
        assert ready.json() == {"ready": False, "checks": {"firestore": "ok", "push_certs": "not ready"}}
        assert time.monotonic() - started >= GRACE_S
    finally:
        certs.failure = None
        target.http.stop()


async def test_readyz_probes_share_one_check_and_answer_without_internals() -> None:
    reads = 0
    failing = False

    class ProbeDocument:
        async def get(self, **_: object) -> None:  # timeout=, as Firestore takes it
            nonlocal reads
            reads += 1
            await asyncio.sleep(0.05)
            if failing:
                raise ConnectionResetError("connection to 10.1.2.3:443 reset")

    db = SimpleNamespace(collection=lambda _: SimpleNamespace(document=lambda _: ProbeDocument()))
    container: Any = SimpleNamespace(db=db, settings=Settings(http_routes=("push",)))
    readiness = _Readiness(container, push_verifier=None, cache_s=0.3)
    probes = await asyncio.gather(*(readiness.handle(None) for _ in range(20)))  # type: ignore[arg-type]
    assert {p.status_code for p in probes} == {200}
    assert reads == 1  # one check for the burst
    assert (await readiness.handle(None)).status_code == 200  # type: ignore[arg-type]
    assert reads == 1  # and for the next 0.3 s
    failing = True
    await asyncio.sleep(0.35)
    down = await readiness.handle(None)  # type: ignore[arg-type]
    assert down.status_code == 503
    assert json.loads(bytes(down.body)) == {"ready": False, "checks": {"firestore": "unavailable"}}
