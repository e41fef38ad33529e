"""The worker end to end, twice: the streaming-pull `paynow-service worker`, and Pub/Sub pushing
to the running HTTP app's push endpoint (PUSH_AUTH=disabled: the emulator sends no token).

Events enter as signed webhooks in queue mode; results are read from Firestore itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from google.pubsub_v1.services.publisher import PublisherClient as GapicPublisher
from google.pubsub_v1.types import PubsubMessage

from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.webhook import post
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.adapters.event_codec import encode_event
from paynow_service.adapters.pubsub_infra import InfraOverrides
from paynow_service.config import Settings
from paynow_service.domain.paynow import parse_webhook
from paynow_service.sample_webhooks import build_event, flake_id
from tests.support.processes import serve
from tests.support.stack import (
    PLAN,
    PRODUCT,
    apply_topology,
    doc,
    ledger,
    pull,
    signed,
    stack_env,
    unique,
    wait_for,
)
from tests.support.stack import write_catalog as _catalog

SECRET = "pn-test-secret-one"


class WorkerStack:
    def __init__(
        self, kind: str, env: dict[str, str], http: ServiceProcess, worker: ServiceProcess | None
    ) -> None:
        self.kind = kind
        self.env = env
        self.settings = Settings.from_env(env)
        self.http = http
        self.worker = worker
        self.project = self.settings.google_cloud_project

    def send(self, event: dict[str, Any]) -> httpx.Response:
        url = f"http://127.0.0.1:{self.http.port}/api/paynow/webhook"
        return post(url, json.dumps(event).encode(), SECRET)

    def publish_raw(self, event: dict[str, Any]) -> None:
        """Publish straight to the topic, signed as the webhook signs, as a redelivery would."""
        now = int(time.time() * 1000)
        data, attributes = encode_event(
            parse_webhook(json.dumps(event).encode(), received_at_ms=now, sent_at_ms=now)
        )
        attributes = signed(data, attributes)
        client = GapicPublisher()
        client.publish(
            topic=self.settings.topic_path(self.settings.pubsub_topic),
            messages=[
                PubsubMessage(data=data, attributes=attributes, ordering_key=attributes["ordering_key"])
            ],
        )

    def wallet(self, uid: str) -> dict[str, Any] | None:
        return doc(self.project, f"users/{uid}/wallet/points")

    def paid(self, uid: str) -> int | None:
        wallet = self.wallet(uid)
        return None if wallet is None else int(wallet["paidBalance"])

    def worker_logs(self) -> str:
        return (self.worker or self.http).logs()


@pytest.fixture(scope="module", params=["pull", "push"])
def stack(
    request: pytest.FixtureRequest, emulators: EmulatorStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerStack]:
    kind = request.param
    tmp = tmp_path_factory.mktemp(kind)
    env = stack_env(
        emulators.env(),
        _catalog(tmp),
        WEBHOOK_MODE="queue",
        FIRESTORE_TIMEOUT_S="3",
        HTTP_ROUTES="webhook,push,metrics" if kind == "push" else "webhook,metrics",
    )
    http = serve(env, tmp)
    overrides = InfraOverrides(
        ack_deadline_s=10,
        min_backoff_s=1,
        max_backoff_s=2,
        push_endpoint=f"http://127.0.0.1:{http.port}/api/tasks/paynow/process" if kind == "push" else None,
    )
    apply_topology(Settings.from_env(env), overrides)
    worker = ServiceProcess("worker", env, tmp) if kind == "pull" else None
    try:
        yield WorkerStack(kind, env, http, worker)
    finally:
        http.stop()
        if worker is not None:
            worker.stop()


def order(uid: str, **kw: Any) -> dict[str, Any]:
    return build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT, **kw)


def test_orders_end_with_exact_balances_and_ledgers(stack: WorkerStack) -> None:
    uids = [unique("u") for _ in range(3)]
    for n, uid in enumerate(uids, start=1):
        assert stack.send(order(uid, quantity=n)).status_code == 200
    for n, uid in enumerate(uids, start=1):
        assert wait_for(lambda uid=uid, n=n: stack.paid(uid) == 500 * n), (stack.kind, uid, stack.paid(uid))
        entries = ledger(stack.project, uid)
        assert [e["amount"] for e in entries.values()] == [500 * n]


def test_event_delivered_twice_credits_once(stack: WorkerStack) -> None:
    uid = unique("u")
    event = order(uid)
    assert stack.send(event).status_code == 200
    stack.publish_raw(event)
    assert wait_for(lambda: stack.paid(uid) == 500)
    assert wait_for(lambda: "Event already processed - skipping" in stack.worker_logs())
    assert stack.paid(uid) == 500
    assert len(ledger(stack.project, uid)) == 1


def test_three_events_for_one_user_apply_in_order(stack: WorkerStack) -> None:
    uid = unique("u")
    for quantity in (1, 2, 3):
        assert stack.send(order(uid, quantity=quantity)).status_code == 200
    assert wait_for(lambda: stack.paid(uid) == 3000, timeout=30)
    entries = sorted(ledger(stack.project, uid).values(), key=lambda e: e["pre"]["paid"])
    assert [(e["pre"]["paid"], e["post"]["paid"]) for e in entries] == [(0, 500), (500, 1500), (1500, 3000)]


def test_customer_mapped_order_credits_the_mapped_user(stack: WorkerStack) -> None:
    uid, customer = unique("u"), flake_id()
    assert stack.send(order(uid, customer_id=customer)).status_code == 200
    assert wait_for(lambda: stack.paid(uid) == 500)
    anonymous = order("", customer_id=customer)
    assert stack.send(anonymous).status_code == 200
    assert wait_for(lambda: stack.paid(uid) == 1000)


def test_subscription_credits_the_plan_once_per_cycle(stack: WorkerStack) -> None:
    uid, sub_id = unique("u"), flake_id()
    purchase = order(uid)
    purchase["body"]["lines"][0].update(product_id=PLAN, subscription_id=sub_id)
    assert stack.send(purchase).status_code == 200
    for cycle, kind in ((1, "ON_SUBSCRIPTION_ACTIVATED"), (2, "ON_SUBSCRIPTION_RENEWED")):
        event = build_event(
            kind, uid=uid, product_id=PLAN, subscription_id=sub_id, billing_cycle_sequence=cycle
        )
        assert stack.send(event).status_code == 200
        stack.publish_raw(event)  # redelivered: still once
    # Plans credit promo points (the app's default): one lot per cycle.
    assert wait_for(lambda: (stack.wallet(uid) or {}).get("promoBalance") == 2000, timeout=30)
    time.sleep(1)
    assert [lot["id"] for lot in (stack.wallet(uid) or {})["promoLots"]] == [
        f"paynow:sub:{sub_id}:cycle:1",
        f"paynow:sub:{sub_id}:cycle:2",
    ]
    assert set(ledger(stack.project, uid)) == {f"paynow:sub:{sub_id}:cycle:1", f"paynow:sub:{sub_id}:cycle:2"}


def test_refund_reverses_once_and_won_chargeback_recredits_once(stack: WorkerStack) -> None:
    uid, order_id, other_order = unique("u"), flake_id(), flake_id()
    assert stack.send(order(uid, order_id=order_id)).status_code == 200
    assert stack.send(order(uid, order_id=other_order)).status_code == 200
    assert wait_for(lambda: stack.paid(uid) == 1000)
    refund = build_event("ON_REFUND", uid=uid, product_id=PRODUCT, order_id=order_id, status="completed")
    assert stack.send(refund).status_code == 200
    stack.publish_raw(refund)
    assert wait_for(lambda: stack.paid(uid) == 500)
    chargeback = build_event("ON_CHARGEBACK", uid=uid, product_id=PRODUCT, order_id=other_order)
    assert stack.send(chargeback).status_code == 200
    assert wait_for(lambda: stack.paid(uid) == 0)
    won = build_event(
        "ON_CHARGEBACK_CLOSED", uid=uid, product_id=PRODUCT, order_id=other_order, chargeback_status="won"
    )
    won["body"]["id"] = chargeback["body"]["id"]
    assert stack.send(won).status_code == 200
    stack.publish_raw(won)
    assert wait_for(lambda: stack.paid(uid) == 500)
    time.sleep(1)
    entries = ledger(stack.project, uid)
    assert stack.paid(uid) == 500
    assert sum(e["amount"] for e in entries.values()) == 500
    assert sorted(entries) == sorted(
        [
            f"paynow:order:{order_id}:line:{refund_line(entries, order_id)}",
            f"paynow:order:{other_order}:line:{refund_line(entries, other_order)}",
            f"rev:paynow:order:{order_id}:line:{refund_line(entries, order_id)}",
            f"rev:paynow:order:{other_order}:line:{refund_line(entries, other_order)}",
            f"recredit:paynow:order:{other_order}:line:{refund_line(entries, other_order)}",
        ]
    )


def refund_line(entries: dict[str, Any], order_id: str) -> str:
    prefix = f"paynow:order:{order_id}:line:"
    return next(e[len(prefix) :] for e in entries if e.startswith(prefix))


def test_unknown_product_and_user_are_dead_lettered_without_retries(stack: WorkerStack) -> None:
    bad_product = build_event("ON_ORDER_COMPLETED", uid=unique("u"), product_id="42")
    no_user = order("")
    for event in (bad_product, no_user):
        assert stack.send(event).status_code == 200
    for event, reason in ((bad_product, "unknown_product"), (no_user, "user_not_found")):
        record = wait_for(
            lambda event=event: (
                (doc(stack.project, f"webhookEvents/{event['event_id']}") or {}).get("status")
                == "failed_terminal"
                and doc(stack.project, f"webhookEvents/{event['event_id']}")
            )
        )
        assert record, (stack.kind, reason)
        assert record["failureReason"] == reason
    letters = pull(stack.settings, stack.settings.pubsub_dlq_subscription, want=2)
    reasons = {m.attributes["event_id"]: m.attributes["reason"] for m in letters}
    assert reasons == {bad_product["event_id"]: "unknown_product", no_user["event_id"]: "user_not_found"}
    assert {m.attributes["error_class"] for m in letters} == {"terminal"}
    logs = stack.worker_logs()
    for event in (bad_product, no_user):
        received = [
            line
            for line in logs.splitlines()
            if "Worker received message" in line and event["event_id"] in line
        ]
        assert len(received) == 1, (stack.kind, received)


def test_firestore_outage_is_retried_then_credited(stack: WorkerStack, emulators: EmulatorStack) -> None:
    uid = unique("u")
    event = order(uid)
    emulators.firestore.pause()
    try:
        stack.publish_raw(event)  # the webhook itself needs Firestore: publish as a redelivery would
        assert wait_for(lambda: "Transient failure - will retry" in stack.worker_logs(), timeout=30), (
            stack.kind
        )
    finally:
        emulators.firestore.resume()
    assert wait_for(lambda: stack.paid(uid) == 500, timeout=60), stack.kind
    assert len(ledger(stack.project, uid)) == 1
