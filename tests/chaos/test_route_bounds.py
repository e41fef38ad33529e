"""Faults in front of Firestore and Pub/Sub never give a 500, and every answer comes in time.

One `serve` with the webhook (queue mode), push and Connect routes, whose Firestore and
Pub/Sub are reached through TCP fault proxies. For each fault (a reset of every connection,
a black hole that accepts and never answers, a slow link; on Firestore, on Pub/Sub, on
both), requests on every route are sent at once and each answer is checked on its own: a
documented code (never 500), within REQUEST_DEADLINE_S plus a small slack.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.webhook import signed_headers
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.adapters.event_codec import encode_event
from paynow_service.config import Settings
from paynow_service.domain.paynow import parse_webhook
from paynow_service.sample_webhooks import build_event, flake_id
from tests.support.fault_proxy import FaultProxy
from tests.support.processes import serve
from tests.support.stack import PRODUCT, apply_topology, signed, stack_env, unique, write_catalog

pytestmark = [pytest.mark.emulators, pytest.mark.e2e, pytest.mark.timeout(240)]

SECRET = "pn-test-secret-one"
DEADLINE_S = 4.0
SLACK_S = 1.5  # the event loop's own scheduling, the client's connect, a loaded 2-core machine
FAULTS = [
    ("firestore", "reset"),
    ("firestore", "blackhole"),
    ("firestore", "delay"),
    ("pubsub", "reset"),
    ("pubsub", "blackhole"),
    ("both", "blackhole"),
]
# What each route may answer under a fault (and without one): never a 500.
ALLOWED = {
    "webhook": {200, 503},
    "push": {204, 503},
    "connect-balance": {200, 503},
    "connect-credit": {200, 409, 503},
}


class FaultedServe:
    def __init__(self, emulators: EmulatorStack, tmp: Path) -> None:
        self.firestore = FaultProxy(("127.0.0.1", emulators.firestore.port), max_lifetime_s=230).start()
        self.pubsub = FaultProxy(("127.0.0.1", emulators.pubsub.port), max_lifetime_s=230).start()
        self.env = stack_env(
            emulators.env(),
            write_catalog(tmp),
            WEBHOOK_MODE="queue",
            HTTP_ROUTES="webhook,push,points",
            FIRESTORE_TIMEOUT_S="1",
            PUBLISH_TIMEOUT_S="1",
            REQUEST_DEADLINE_S=str(DEADLINE_S),
        )
        apply_topology(Settings.from_env(self.env))
        faulted = {
            **self.env,
            "FIRESTORE_EMULATOR_HOST": self.firestore.address,
            "PUBSUB_EMULATOR_HOST": self.pubsub.address,
        }
        self.http: ServiceProcess = serve(faulted, tmp)
        self.base = f"http://127.0.0.1:{self.http.port}"

    def stop(self) -> None:
        self.http.stop()
        self.firestore.stop()
        self.pubsub.stop()

    def set_fault(self, target: str, mode: str) -> None:
        for name, proxy in (("firestore", self.firestore), ("pubsub", self.pubsub)):
            wanted = mode if target in (name, "both") else "pass"
            proxy.set_mode(wanted, delay_ms=3000 if wanted == "delay" else 0)


@pytest.fixture(scope="module")
def stack(emulators: EmulatorStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultedServe]:
    running = FaultedServe(emulators, tmp_path_factory.mktemp("route-bounds"))
    try:
        yield running
    finally:
        running.stop()


def _webhook(base: str, uid: str) -> tuple[str, dict[str, Any]]:
    body = json.dumps(build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT)).encode()
    return f"{base}/api/paynow/webhook", {"content": body, "headers": signed_headers(SECRET, body)}


def _push(base: str, uid: str) -> tuple[str, dict[str, Any]]:
    now = int(time.time() * 1000)
    event = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT)
    data, attributes = encode_event(
        parse_webhook(json.dumps(event).encode(), received_at_ms=now, sent_at_ms=now)
    )
    message = {
        "data": base64.b64encode(data).decode(),
        "attributes": signed(data, attributes),
        "messageId": flake_id(),
    }
    return f"{base}/api/tasks/paynow/process", {"json": {"message": message, "subscription": "s"}}


def _balance(base: str, uid: str) -> tuple[str, dict[str, Any]]:
    return f"{base}/paynow.points.v1.PointsService/GetBalance", {"json": {"uid": uid}}


def _credit(base: str, uid: str) -> tuple[str, dict[str, Any]]:
    request = {
        "uid": uid,
        "amount": "5",
        "idempotencyKey": flake_id(),
        "source": "bounds",
        "kind": "KIND_PAID",
    }
    return f"{base}/paynow.points.v1.PointsService/CreditPoints", {"json": request}


ROUTES = {"webhook": _webhook, "push": _push, "connect-balance": _balance, "connect-credit": _credit}


def _timed(route: str, url: str, kwargs: dict[str, Any]) -> tuple[str, int | str, float]:
    started = time.monotonic()
    try:
        status: int | str = httpx.post(url, timeout=DEADLINE_S + 10, **kwargs).status_code
    except httpx.HTTPError as err:
        status = type(err).__name__
    return route, status, time.monotonic() - started


def _round(stack: FaultedServe, per_route: int) -> list[tuple[str, int | str, float]]:
    calls = [
        (route, *build(stack.base, unique("bounds")))
        for route, build in ROUTES.items()
        for _ in range(per_route)
    ]
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda c: _timed(*c), calls))


@pytest.mark.parametrize(("target", "mode"), FAULTS, ids=[f"{t}-{m}" for t, m in FAULTS])
def test_every_answer_is_documented_and_in_time(stack: FaultedServe, target: str, mode: str) -> None:
    stack.set_fault(target, mode)
    try:
        answers = _round(stack, per_route=4)
    finally:
        stack.set_fault("both", "pass")
    late = [(r, s, round(t, 2)) for r, s, t in answers if t > DEADLINE_S + SLACK_S]
    wrong = [(r, s) for r, s, _ in answers if s not in ALLOWED[r]]
    assert not late, f"answers past {DEADLINE_S} s (+{SLACK_S} s): {late}\n{stack.http.logs()[-2000:]}"
    assert not wrong, f"undocumented answers: {wrong}\n{stack.http.logs()[-3000:]}"
    if target != "pubsub":  # a Pub/Sub fault may be absorbed (the webhook processes inline instead)
        assert any(s == 503 for _, s, _ in answers), f"the fault was not felt: {answers}"


def test_without_faults_the_same_requests_succeed(stack: FaultedServe) -> None:
    """The control: the routes work through the proxies when they pass traffic (after every fault)."""
    stack.set_fault("both", "pass")
    deadline = time.monotonic() + 30
    answers = _round(stack, per_route=2)
    while any(s not in (200, 204) for _, s, _ in answers) and time.monotonic() < deadline:
        time.sleep(1)  # the clients reconnect after a black hole
        answers = _round(stack, per_route=2)
    assert all(s in (200, 204) for _, s, _ in answers), answers
