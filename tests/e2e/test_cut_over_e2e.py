"""Cut-over from the app's own webhook, end to end on the emulators with `serve` and the pull worker.

Firestore is seeded with the app's history as its contract describes it: `webhookEvents` records in
the app's shape (`rawEventType`, no `eventType`, its own `payloadHash`) in each of its states, an
order it credited through its wallet-ledger, a customer mapping; the topic holds messages of its old
JSON publisher. Then PayNow redelivers (the webhook, queue and sync mode), and messages of ours meet
the app's records in the worker's transaction:
- `processed` / `skipped`: a duplicate, nothing credited, the record left as the app wrote it;
- `queued` (the app never credited it): credited once, our record replaces the app's;
- `received` / `failed` / `failed_terminal`: a duplicate, flagged `app_unfinished`, nothing credited;
- the old JSON messages: dead-lettered as `legacy_message`, with what they are and what to do.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore
from google.pubsub_v1.services.publisher import PublisherClient as GapicPublisher
from google.pubsub_v1.types import PubsubMessage

from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.webhook import post
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.adapters.event_codec import encode_event
from paynow_service.config import Settings
from paynow_service.domain.paynow import parse_webhook
from paynow_service.sample_webhooks import build_event, flake_id
from tests.support.processes import run_cli, serve
from tests.support.stack import (
    PRODUCT,
    apply_topology,
    doc,
    ledger,
    pull,
    signed,
    stack_env,
    unique,
    wait_for,
    write_catalog,
)

pytestmark = [pytest.mark.emulators, pytest.mark.e2e, pytest.mark.timeout(240)]

SECRET = "pn-test-secret-one"
POINTS = 500  # PRODUCT in the test catalog
APP_HASH = "f" * 64  # the app hashes its own re-serialisation of the body: never equal to ours
HANDLED = ("processed", "skipped")
UNFINISHED = ("received", "failed", "failed_terminal")


def app_record(event_id: str, status: str) -> dict[str, Any]:
    """webhookEvents/{id} as the app's webhook wrote it (its sync webhook, or its queue mode)."""
    now = dt.datetime.now(dt.UTC)
    record: dict[str, Any] = {
        "eventId": event_id,
        "rawEventType": "ON_ORDER_COMPLETED",
        "status": status,
        "receivedAt": now - dt.timedelta(hours=2),
        "timestamp": (now - dt.timedelta(hours=2)).isoformat(),
        "payloadHash": APP_HASH,
        "region": "us-central1",
    }
    if status == "queued":
        record.update(attempts=0, expiresAt=now + dt.timedelta(days=30))
    else:
        record.update(expiresAt=now + dt.timedelta(days=90), processedAt=now - dt.timedelta(hours=2))
        record["result" if status in HANDLED else "error"] = {"note": "the app's own"}
    return record


def legacy_message(event_id: str, order_id: str) -> tuple[bytes, dict[str, str]]:
    """A message of the app's old queue publisher, as it may still sit on the topic at cut-over."""
    body = {
        "version": 2,
        "minCompatible": 1,
        "eventId": event_id,
        "eventType": "ON_ORDER_COMPLETED",
        "timestamp": "2026-11-30T10:00:00Z",
        "region": "us-central1",
        "data": {
            "order": {
                "id": order_id,
                "prettyId": "ABC-123",
                "customerId": "422222222222222222",
                "items": [{"productId": PRODUCT, "quantity": 1, "price": 999}],
            }
        },
    }
    attributes = {
        "event_id": event_id,
        "event_type": "ON_ORDER_COMPLETED",
        "ordering_key": "legacy-user",
        "uid": "legacy-user",
        "order_id": order_id,
        "points": "500",
    }
    return json.dumps(body).encode(), attributes


class CutOverStack:
    """`serve` (webhook) and the unary pull worker on fresh topics, with an admin Firestore client."""

    def __init__(self, mode: str, emulators: EmulatorStack, tmp: Path) -> None:
        self.mode = mode
        self.env = stack_env(
            emulators.env(),
            write_catalog(tmp),
            WEBHOOK_MODE=mode,
            HTTP_ROUTES="webhook",
            WORKER_PULL_MODE="unary",
        )
        self.settings = Settings.from_env(self.env)
        self.project = self.settings.google_cloud_project
        apply_topology(self.settings)
        self.db = firestore.Client(project=self.project)
        self.http = serve(self.env, tmp)
        self.worker = ServiceProcess("worker", self.env, tmp)

    def stop(self) -> None:
        self.http.stop()
        self.worker.stop()
        self.db.close()

    def seed(self, path: str, data: dict[str, Any]) -> None:
        self.db.document(path).set(data)

    def send(self, event: dict[str, Any]) -> int:
        url = f"http://127.0.0.1:{self.http.port}/api/paynow/webhook"
        return post(url, json.dumps(event).encode(), SECRET).status_code

    def publish(self, data: bytes, attributes: dict[str, str]) -> None:
        GapicPublisher().publish(
            topic=self.settings.topic_path(self.settings.pubsub_topic),
            messages=[
                PubsubMessage(
                    data=data, attributes=attributes, ordering_key=attributes.get("ordering_key", "")
                )
            ],
        )

    def paid(self, uid: str) -> int:
        return int((doc(self.project, f"users/{uid}/wallet/points") or {}).get("paidBalance", 0))


@pytest.fixture(scope="module", params=["queue", "sync"])
def stack(
    request: pytest.FixtureRequest, emulators: EmulatorStack, tmp_path_factory: Any
) -> Iterator[CutOverStack]:
    running = CutOverStack(request.param, emulators, tmp_path_factory.mktemp(f"cutover-{request.param}"))
    try:
        yield running
    finally:
        running.stop()


def an_order(uid: str, customer_id: str = "") -> dict[str, Any]:
    return build_event(
        "ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT, customer_id=customer_id or flake_id()
    )


def test_redeliveries_of_what_the_app_handled_credit_nothing(stack: CutOverStack) -> None:
    uid = unique("app-user")
    # The app credited one order through its wallet-ledger before cut-over.
    stack.seed(
        f"users/{uid}/wallet/points", {"paidBalance": POINTS, "promoBalance": 0, "promoLots": [], "v": 1}
    )
    stack.seed(
        f"users/{uid}/ledger/{flake_id()}",
        {
            "amount": POINTS,
            "kind": "purchase",
            "status": "posted",
            "currency": "POINTS",
            "balanceAfter": POINTS,
        },
    )
    events = {status: an_order(uid) for status in (*HANDLED, *UNFINISHED)}
    for status, event in events.items():
        stack.seed(f"webhookEvents/{event['event_id']}", app_record(event["event_id"], status))
    for event in events.values():
        assert stack.send(event) == 200
        assert stack.send(event) == 200  # and once more: still nothing
    time.sleep(2)  # a publish of ours would have reached the worker by now
    assert stack.paid(uid) == POINTS
    assert len(ledger(stack.project, uid)) == 1
    for status, event in events.items():
        record = doc(stack.project, f"webhookEvents/{event['event_id']}") or {}
        assert record["status"] == status, status  # the app's status stays
        assert "eventType" not in record
        assert record["payloadHash"] == APP_HASH
        assert record.get("flag") == ("app_unfinished" if status in UNFINISHED else None), status


def test_an_event_the_app_only_queued_is_credited_once(stack: CutOverStack) -> None:
    uid = unique("app-user")
    event = an_order(uid)
    stack.seed(f"webhookEvents/{event['event_id']}", app_record(event["event_id"], "queued"))
    assert stack.send(event) == 200
    assert wait_for(lambda: stack.paid(uid) == POINTS, timeout=30), stack.http.logs()[-3000:]
    assert stack.send(event) == 200  # redelivered after our take-over: ours now, a duplicate
    time.sleep(2)
    assert stack.paid(uid) == POINTS
    (entry_id,) = ledger(stack.project, uid)
    assert entry_id.startswith(f"paynow:order:{event['body']['id']}:line:")
    path = f"webhookEvents/{event['event_id']}"
    record = wait_for(lambda: (r := doc(stack.project, path) or {}).get("status") == "processed" and r)
    assert record["eventType"] == "ON_ORDER_COMPLETED"
    assert "rawEventType" not in record
    assert record["takenOverFrom"]["by"] == "app"


def test_the_workers_transaction_reads_the_apps_records_too(stack: CutOverStack) -> None:
    """Messages of ours meeting the app's records (a record the app wrote after our publish, a replay):
    the worker's transaction decides as the webhook does."""
    uid = unique("app-user")
    events = {status: an_order(uid) for status in (*HANDLED, "queued", *UNFINISHED)}
    now = int(time.time() * 1000)
    for status, event in events.items():
        stack.seed(f"webhookEvents/{event['event_id']}", app_record(event["event_id"], status))
        parsed = parse_webhook(json.dumps(event).encode(), received_at_ms=now, sent_at_ms=now)
        data, attributes = encode_event(parsed)
        stack.publish(data, signed(data, attributes))
    queued_id = events["queued"]["event_id"]
    assert wait_for(lambda: stack.paid(uid) == POINTS, timeout=30), stack.worker.logs()[-3000:]
    assert wait_for(
        lambda: all(
            (doc(stack.project, f"webhookEvents/{events[s]['event_id']}") or {}).get("flag")
            == "app_unfinished"
            for s in UNFINISHED
        ),
        timeout=30,
    ), stack.worker.logs()[-3000:]
    time.sleep(1)
    assert stack.paid(uid) == POINTS
    assert len(ledger(stack.project, uid)) == 1
    taken = doc(stack.project, f"webhookEvents/{queued_id}") or {}
    assert (taken["status"], taken["eventType"], "rawEventType" in taken) == (
        "processed",
        "ON_ORDER_COMPLETED",
        False,
    )
    for status in HANDLED:
        record = doc(stack.project, f"webhookEvents/{events[status]['event_id']}") or {}
        assert (record["status"], record.get("flag")) == (status, None)


def test_the_apps_old_queue_messages_are_dead_lettered_as_legacy(stack: CutOverStack) -> None:
    ids = [flake_id() for _ in range(3)]
    for event_id in ids:
        stack.publish(*legacy_message(event_id, flake_id()))
    letters = pull(stack.settings, stack.settings.pubsub_dlq_subscription, want=len(ids), wait_s=40)
    assert sorted(m.attributes["event_id"] for m in letters) == sorted(ids)
    for message in letters:
        assert message.attributes["reason"] == "legacy_message"
        assert message.attributes["error_class"] == "terminal"
        detail = message.attributes["detail"]
        assert message.attributes["event_id"] in detail
        assert "re-drive the event from PayNow" in detail
        assert "422222222222222222" not in detail  # the customer's id stays out of the DLQ's words
    assert doc(stack.project, "users/legacy-user/wallet/points") is None  # credited nothing
    # Put one back and let an operator see it: the list says what legacy letters are and what to do.
    stack.publish(*legacy_message(flake_id(), flake_id()))
    listed = wait_for(
        lambda: "legacy_message" in (out := run_cli("dlq", "list", env=stack.env).stdout) and out, timeout=30
    )
    assert "the app's old queue messages" in listed
    assert "re-drive each event from PayNow" in listed


def test_a_refund_parked_before_its_order_was_migrated_is_applied_after_sweep(stack: CutOverStack) -> None:
    """A refund of an order the app credited arrives before `migrate orders`: parked on the order. Once
    the order is migrated, `sweep` queues it again and the worker reverses the app's credit once."""
    uid, order_id, app_entry = unique("app-user"), flake_id(), flake_id()
    stack.seed(
        f"users/{uid}/wallet/points", {"paidBalance": POINTS, "promoBalance": 0, "promoLots": [], "v": 1}
    )
    stack.seed(
        f"users/{uid}/ledger/{app_entry}",
        {
            "amount": POINTS,
            "kind": "purchase",
            "status": "posted",
            "currency": "POINTS",
            "balanceAfter": POINTS,
            "source": {"eventId": order_id, "orderId": "ABC-1", "productId": "app-product-doc"},
        },
    )
    refund = build_event("ON_REFUND", uid=uid, product_id=PRODUCT, order_id=order_id, status="completed")
    assert stack.send(refund) == 200  # no paynowOrders document yet: parked
    order_path = f"paynowOrders/{order_id}"
    assert wait_for(lambda: (doc(stack.project, order_path) or {}).get("parked"), timeout=30)
    assert stack.paid(uid) == POINTS
    # What `migrate orders` writes for the app's order (merged: the parked refund stays).
    credits = [{"entryId": app_entry, "points": POINTS, "productId": "app-product-doc"}]
    stack.db.document(order_path).set(
        {"uid": uid, "entryIds": [app_entry], "credits": credits, "points": POINTS, "migratedFrom": "app"},
        merge=True,
    )
    swept = run_cli("sweep", env=stack.env)
    assert swept.returncode == 0, swept.stderr
    assert "parked on credited orders: 1, queued: 1" in swept.stdout
    assert wait_for(lambda: stack.paid(uid) == 0, timeout=30), stack.worker.logs()[-3000:]
    assert f"rev:{app_entry}" in ledger(stack.project, uid)
    order = doc(stack.project, order_path) or {}
    assert "parked" not in order
    assert order["reversedBy"].startswith("refund:")
    assert run_cli("sweep", env=stack.env).stdout.count("parked on credited orders") == 0  # nothing left
    time.sleep(1)
    assert stack.paid(uid) == 0


def test_the_apps_customer_mappings_credit_its_users(stack: CutOverStack) -> None:
    """A PayNow customer the app mapped (`paynowCustomers/{id}`: `uid` and its own fields), an event the
    app only queued, no uid in the checkout: credited to the mapped user; the app's fields stay."""
    uid, customer_id = unique("app-user"), flake_id()
    stack.seed(f"paynowCustomers/{customer_id}", {"uid": uid, "linkedAt": "2025-06-01", "source": "app"})
    event = an_order("", customer_id=customer_id)
    stack.seed(f"webhookEvents/{event['event_id']}", app_record(event["event_id"], "queued"))
    assert stack.send(event) == 200
    assert wait_for(lambda: stack.paid(uid) == POINTS, timeout=30), stack.http.logs()[-3000:]
    mapping = doc(stack.project, f"paynowCustomers/{customer_id}") or {}
    assert (mapping["uid"], mapping["linkedAt"], mapping["source"]) == (uid, "2025-06-01", "app")
