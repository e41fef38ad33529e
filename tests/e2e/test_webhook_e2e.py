"""The webhook through the real `paynow-service serve` process, on the real emulators.

Queue mode with the real pull worker, sync mode alone, and queue mode without a worker
(to count what was published). Everything is signed the way PayNow signs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud import firestore

from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.webhook import post_async, signed_headers
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.config import Settings
from paynow_service.domain.signature import sign
from paynow_service.sample_webhooks import build_event, flake_id
from tests.support.processes import run_cli, serve
from tests.support.stack import (
    PRODUCT,
    apply_topology,
    doc,
    ledger,
    pull,
    stack_env,
    unique,
    wait_for,
    write_catalog,
)

SECRETS = ("pn-test-secret-one", "pn-test-secret-two")
PATH = "/api/paynow/webhook"


class Stack:
    def __init__(self, env: dict[str, str], http: ServiceProcess, worker: ServiceProcess | None) -> None:
        self.env = env
        self.settings = Settings.from_env(env)
        self.http = http
        self.worker = worker
        self.url = f"http://127.0.0.1:{http.port}{PATH}"
        self.project = self.settings.google_cloud_project

    def post(
        self,
        event: dict[str, Any] | bytes,
        *,
        secret: str = SECRETS[0],
        ts_ms: int | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> httpx.Response:
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        base = signed_headers(secret, body, ts_ms=ts_ms)
        return httpx.post(
            self.url, content=body, headers=headers if headers is not None else base, timeout=timeout
        )

    def balance(self, uid: str) -> int | None:
        wallet = doc(self.project, f"users/{uid}/wallet/points")
        return None if wallet is None else int(wallet["paidBalance"])


def _stack(emulators: EmulatorStack, tmp: Path, *, worker: bool, **overrides: str) -> Iterator[Stack]:
    env = stack_env(emulators.env(), write_catalog(tmp), HTTP_ROUTES="webhook,metrics", **overrides)
    apply_topology(Settings.from_env(env))
    http = serve(env, tmp)
    work = ServiceProcess("worker", env, tmp) if worker else None
    try:
        yield Stack(env, http, work)
    finally:
        http.stop()
        if work is not None:
            work.stop()


@pytest.fixture(scope="module")
def queue_stack(emulators: EmulatorStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from _stack(emulators, tmp_path_factory.mktemp("queue"), worker=True, WEBHOOK_MODE="queue")


@pytest.fixture(scope="module")
def sync_stack(emulators: EmulatorStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from _stack(emulators, tmp_path_factory.mktemp("sync"), worker=False, WEBHOOK_MODE="sync")


@pytest.fixture(scope="module")
def unworked_stack(emulators: EmulatorStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Queue mode with no worker, short lease: what is published stays in the subscription."""
    yield from _stack(
        emulators,
        tmp_path_factory.mktemp("unworked"),
        worker=False,
        WEBHOOK_MODE="queue",
        PUBLISH_LEASE_S="1",
    )


def order(uid: str, **kw: Any) -> dict[str, Any]:
    return build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT, **kw)


# ---- verification and answers ------------------------------------------------------------------


@pytest.mark.parametrize("secret", SECRETS)
def test_each_configured_secret_is_accepted_and_credited(queue_stack: Stack, secret: str) -> None:
    uid = unique("u")
    response = queue_stack.post(order(uid), secret=secret)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"
    assert wait_for(lambda: queue_stack.balance(uid) == 500)


def test_rejections(queue_stack: Stack) -> None:
    event = order(unique("u"))
    body = json.dumps(event).encode()
    ts = str(int(time.time() * 1000))
    good = sign(SECRETS[0], ts, body)
    cases: list[tuple[str, httpx.Response, int, str]] = [
        ("wrong secret", queue_stack.post(event, secret="pn-not-our-secret"), 401, "invalid_signature"),
        (
            "tampered body",
            httpx.post(
                queue_stack.url,
                content=body + b" ",
                headers={"PayNow-Signature": good, "PayNow-Timestamp": ts},
            ),
            401,
            "invalid_signature",
        ),
        ("no headers", queue_stack.post(event, headers={}), 401, "invalid_signature"),
        (
            "no timestamp",
            queue_stack.post(event, headers={"PayNow-Signature": good}),
            401,
            "invalid_timestamp",
        ),
        (
            "6 min old",
            queue_stack.post(event, ts_ms=int(time.time() * 1000) - 360_000),
            401,
            "invalid_timestamp",
        ),
        (
            "6 min ahead",
            queue_stack.post(event, ts_ms=int(time.time() * 1000) + 360_000),
            401,
            "invalid_timestamp",
        ),
        ("not JSON", queue_stack.post(b"{not json"), 400, "malformed"),
        ("no event_id", queue_stack.post({"event_type": "ON_ORDER_COMPLETED", "body": {}}), 400, "malformed"),
        (
            "body not object",
            queue_stack.post({"event_type": "ON_REFUND", "event_id": "1", "body": []}),
            400,
            "malformed",
        ),
        ("too large", queue_stack.post(b"{" + b" " * 300_000 + b"}"), 413, "too_large"),
    ]
    for name, response, status, code in cases:
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"] == code, name
        assert SECRETS[0] not in response.text
    assert httpx.get(queue_stack.url).status_code == 405
    assert httpx.put(queue_stack.url).status_code == 405
    logs = queue_stack.http.logs()
    assert '"rejection_reason":"invalid_signature"' in logs
    assert SECRETS[0] not in logs
    assert good not in logs


def test_lower_case_header_names(queue_stack: Stack) -> None:
    uid = unique("u")
    body = json.dumps(order(uid)).encode()
    ts = str(int(time.time() * 1000))
    response = httpx.post(
        queue_stack.url,
        content=body,
        headers={"paynow-signature": sign(SECRETS[1], ts, body), "paynow-timestamp": ts},
    )
    assert response.status_code == 200
    assert wait_for(lambda: queue_stack.balance(uid) == 500)


def test_unhandled_type_is_acknowledged_and_recorded_ignored(queue_stack: Stack) -> None:
    event = build_event("ON_DELIVERY_ITEM_ADDED", uid=unique("u"), product_id=PRODUCT)
    response = queue_stack.post(event)
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    record = doc(queue_stack.project, f"webhookEvents/{event['event_id']}")
    assert record is not None
    assert record["status"] == "ignored"


def test_duplicate_delivery_credits_once(queue_stack: Stack) -> None:
    uid = unique("u")
    event = order(uid)
    assert queue_stack.post(event).json()["status"] == "queued"
    assert queue_stack.post(event).json()["status"] == "duplicate"
    assert wait_for(lambda: queue_stack.balance(uid) == 500)
    time.sleep(1)
    assert queue_stack.balance(uid) == 500
    assert len(ledger(queue_stack.project, uid)) == 1


def test_same_id_other_body_is_a_conflict_not_processed(queue_stack: Stack) -> None:
    uid = unique("u")
    event = order(uid)
    queue_stack.post(event)
    changed = json.loads(json.dumps(event))
    changed["body"]["lines"][0]["quantity"] = 9
    response = queue_stack.post(changed)
    assert response.status_code == 200
    assert response.json()["status"] == "conflict"
    assert wait_for(lambda: queue_stack.balance(uid) == 500)


# ---- published exactly once ----------------------------------------------------------------------


def test_concurrent_duplicates_publish_once(unworked_stack: Stack) -> None:
    event = order(unique("u"))

    async def burst() -> list[int]:
        body = json.dumps(event).encode()
        async with httpx.AsyncClient(timeout=10) as client:

            async def one() -> int:
                return (await post_async(client, unworked_stack.url, body, SECRETS[0])).status_code

            return await asyncio.gather(*(one() for _ in range(10)))

    assert asyncio.run(burst()) == [200] * 10
    messages = pull(unworked_stack.settings, unworked_stack.settings.pubsub_subscription, want=10, wait_s=4)
    mine = [m for m in messages if m.attributes.get("event_id") == event["event_id"]]
    assert len(mine) == 1
    assert mine[0].attributes["event_type"] == "ON_ORDER_COMPLETED"
    assert mine[0].attributes["schema_version"] == "1"
    assert mine[0].attributes["ordering_key"] == event["body"]["checkout"]["metadata"]["uid"]


def _strand(stack: Stack, event: dict[str, Any]) -> None:
    """Make the event look recorded-but-never-published, its lease long expired."""
    path = f"webhookEvents/{event['event_id']}"
    # publishedAt is written in a batch shortly after the answer: let it land, then undo it.
    assert wait_for(lambda: (doc(stack.project, path) or {}).get("publishedAt") is not None)
    client = firestore.Client(project=stack.project)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    client.document(f"webhookEvents/{event['event_id']}").update({"publishedAt": None, "leaseAt": old})
    client.close()


def test_stranded_event_is_published_on_redelivery(unworked_stack: Stack) -> None:
    event = order(unique("u"))
    assert unworked_stack.post(event).json()["status"] == "queued"
    pull(unworked_stack.settings, unworked_stack.settings.pubsub_subscription, want=1, wait_s=5)
    _strand(unworked_stack, event)
    assert unworked_stack.post(event).json()["status"] == "queued"
    assert unworked_stack.post(event).json()["status"] == "duplicate"
    messages = pull(unworked_stack.settings, unworked_stack.settings.pubsub_subscription, want=5, wait_s=4)
    assert [m.attributes["event_id"] for m in messages] == [event["event_id"]]
    record = doc(unworked_stack.project, f"webhookEvents/{event['event_id']}")
    assert record is not None
    assert record["publishedAt"] is not None


def test_sweep_publishes_stranded_events(unworked_stack: Stack) -> None:
    event = order(unique("u"))
    assert unworked_stack.post(event).json()["status"] == "queued"
    pull(unworked_stack.settings, unworked_stack.settings.pubsub_subscription, want=1, wait_s=5)
    _strand(unworked_stack, event)
    dry = run_cli("sweep", "--dry-run", env=unworked_stack.env)
    assert dry.returncode == 0, dry.stderr
    assert event["event_id"] in dry.stdout
    result = run_cli("sweep", env=unworked_stack.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Stranded event re-published" in result.stdout
    messages = pull(unworked_stack.settings, unworked_stack.settings.pubsub_subscription, want=5, wait_s=4)
    assert event["event_id"] in [m.attributes["event_id"] for m in messages]
    again = run_cli("sweep", env=unworked_stack.env)
    assert event["event_id"] not in again.stdout


# ---- sync mode ---------------------------------------------------------------------------------------


def test_sync_mode_credits_inline(sync_stack: Stack) -> None:
    uid = unique("u")
    response = sync_stack.post(order(uid, quantity=2))
    assert response.status_code == 200
    assert response.json()["status"] == "processed"
    assert sync_stack.balance(uid) == 1000


def test_sync_mode_terminal_failure_is_acknowledged_and_dead_lettered(sync_stack: Stack) -> None:
    event = build_event("ON_ORDER_COMPLETED", uid=unique("u"), product_id="123456")
    response = sync_stack.post(event)
    assert response.status_code == 200
    assert response.json()["status"] == "failed_terminal"
    record = doc(sync_stack.project, f"webhookEvents/{event['event_id']}")
    assert record is not None
    assert record["status"] == "failed_terminal"
    assert record["failureReason"] == "unknown_product"
    letters = pull(sync_stack.settings, sync_stack.settings.pubsub_dlq_subscription, want=1)
    assert [m.attributes["reason"] for m in letters] == ["unknown_product"]


def test_sync_mode_refund_before_its_order_is_parked_then_applied_with_it(sync_stack: Stack) -> None:
    uid, order_id = unique("u"), flake_id()
    refund = build_event("ON_REFUND", uid=uid, product_id=PRODUCT, order_id=order_id, status="completed")
    first = sync_stack.post(refund)
    assert first.status_code == 200  # acknowledged: stored on its order, not retried for days by PayNow
    assert (doc(sync_stack.project, f"webhookEvents/{refund['event_id']}") or {}).get("status") == "parked"
    assert sync_stack.post(order(uid, order_id=order_id)).status_code == 200
    assert sync_stack.balance(uid) == 0  # the order's credit and the parked refund, in one transaction
    assert (doc(sync_stack.project, f"webhookEvents/{refund['event_id']}") or {}).get("status") == "processed"
    again = sync_stack.post(refund)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert sync_stack.balance(uid) == 0


# ---- outages ------------------------------------------------------------------------------------------


def test_pubsub_paused_falls_back_inline_and_loses_nothing(
    queue_stack: Stack, emulators: EmulatorStack
) -> None:
    uid = unique("u")
    emulators.pubsub.pause()
    try:
        started = time.monotonic()
        response = queue_stack.post(order(uid), timeout=20)
        elapsed = time.monotonic() - started
    finally:
        emulators.pubsub.resume()
    assert elapsed < 6, f"answer took {elapsed:.1f} s"
    assert response.status_code in (200, 503)
    if response.status_code == 200:
        assert queue_stack.balance(uid) == 500  # credited through the inline fallback
    fell_back = lambda: '"path":"fallback"' in queue_stack.http.logs()  # noqa: E731
    assert response.status_code == 503 or wait_for(fell_back, timeout=5)
    # After SIGCONT: nothing lost, nothing doubled, and the queue path works again.
    uid2 = unique("u")
    assert queue_stack.post(order(uid2)).status_code == 200
    assert wait_for(lambda: queue_stack.balance(uid2) == 500, timeout=30)
    assert queue_stack.balance(uid) == 500
    assert len(ledger(queue_stack.project, uid)) == 1
