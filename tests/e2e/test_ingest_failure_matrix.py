"""docs/ingest-failures.md, row by row, on the emulators: queue mode records and publishes at once.

Two `serve` instances (queue mode, webhook only), as behind PayNow's URL in production, reach
Firestore and Pub/Sub through fault proxies (tests/support/fault_proxy.py), so each can fail on
the webhook's path alone; the unary pull worker reaches both directly. For every row: the
answer, the wallet (credited exactly once), the record's status, and the dead letters
(`payload_conflict` only where a body conflicts). A delivery an instance has not seen publishes
before it knows whether its event id is recorded: a redelivery sent to the other instance
publishes a copy, and the worker's log shows what became of it ("Event already processed -
skipping"). An instance records a redelivery of an id it saw first, and publishes no copy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.pubsub_v1 import SubscriberClient
from google.pubsub_v1.services.publisher import PublisherClient as GapicPublisher
from google.pubsub_v1.types import PubsubMessage

from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.webhook import post
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.adapters.event_codec import encode_event
from paynow_service.config import Settings
from paynow_service.domain.paynow import parse_webhook, payload_hash
from paynow_service.sample_webhooks import build_event, flake_id
from tests.support.fault_proxy import FaultProxy
from tests.support.processes import serve
from tests.support.stack import (
    PRODUCT,
    apply_topology,
    doc,
    ledger,
    signed,
    stack_env,
    unique,
    wait_for,
    write_catalog,
)

pytestmark = [pytest.mark.emulators, pytest.mark.e2e, pytest.mark.timeout(240)]

SECRET = "pn-test-secret-one"
POINTS = 500  # PRODUCT in the test catalog, per unit
UNKNOWN_PRODUCT = "499999999999999999"
APP_HASH = "f" * 64  # the app hashes its own re-serialisation of the body: never equal to ours
SKIPPED = "Event already processed - skipping"
PROCESSED = "Worker processed event successfully"


class MatrixStack:
    """`serve` behind two fault proxies, the pull worker beside it, and what the checks need."""

    def __init__(self, emulators: EmulatorStack, tmp: Path) -> None:
        self.firestore = FaultProxy(("127.0.0.1", emulators.firestore.port), max_lifetime_s=900).start()
        self.pubsub = FaultProxy(("127.0.0.1", emulators.pubsub.port), max_lifetime_s=900).start()
        self.env = stack_env(emulators.env(), write_catalog(tmp), WORKER_PULL_MODE="unary", LOG_LEVEL="INFO")
        self.settings = Settings.from_env(self.env)
        self.project = self.settings.google_cloud_project
        apply_topology(self.settings)
        faulted = {
            **self.env,
            "WEBHOOK_MODE": "queue",
            "HTTP_ROUTES": "webhook",
            "FIRESTORE_TIMEOUT_S": "2",
            "PUBLISH_TIMEOUT_S": "1",
            "FIRESTORE_EMULATOR_HOST": self.firestore.address,
            "PUBSUB_EMULATOR_HOST": self.pubsub.address,
        }
        self.db = firestore.Client(project=self.project)
        self.http = serve(faulted, tmp)
        self.other = serve(faulted, tmp)  # a second instance: it has seen none of the first's deliveries
        self.bases = {
            "one": f"http://127.0.0.1:{self.http.port}",
            "other": f"http://127.0.0.1:{self.other.port}",
        }
        self.worker = ServiceProcess("worker", self.env, tmp)
        self.letters: dict[str, list[str]] = defaultdict(list)  # event id -> reasons, every letter pulled
        self.conflicted: set[str] = set()  # the event ids whose rows expect a payload_conflict

    def stop(self) -> None:
        self.http.stop()
        self.other.stop()
        self.worker.stop()
        self.firestore.stop()
        self.pubsub.stop()
        self.db.close()

    # -- faults on the webhook's path --------------------------------------------------------
    def fail(self, *targets: str) -> None:
        for target in targets:
            getattr(self, target).set_mode("reset")

    def heal(self) -> None:
        """Both proxies pass again, and `serve` reaches both (its clients reconnect with a back-off)."""
        self.firestore.set_mode("pass")
        self.pubsub.set_mode("pass")
        time.sleep(2.2)  # past /readyz's cache of an answer from before
        for base in self.bases.values():
            ready = wait_for(
                lambda b=base: httpx.get(f"{b}/readyz", timeout=10).status_code == 200, timeout=60
            )
            assert ready, self.http.logs()[-2000:] + self.other.logs()[-2000:]

    @contextlib.contextmanager
    def worker_held(self) -> Iterator[None]:
        """The worker frozen (SIGSTOP) while a delivery is answered, so that the delivery's own copy
        cannot overtake its reads of the record (that race is a row of its own: answered from what
        the worker wrote)."""
        os.killpg(self.worker.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.worker.process.pid, signal.SIGCONT)

    # -- PayNow's side ---------------------------------------------------------------------
    def send(self, event: dict[str, Any], to: str = "one") -> tuple[int, str]:
        url = f"{self.bases[to]}/api/paynow/webhook"
        answer = post(url, json.dumps(event).encode(), SECRET, timeout=20)
        status = answer.json().get("status", "") if answer.status_code == 200 else ""
        return answer.status_code, status

    def send_at_once(self, *deliveries: tuple[dict[str, Any], str]) -> list[tuple[int, str]]:
        with ThreadPoolExecutor(max_workers=len(deliveries)) as pool:
            return list(pool.map(lambda d: self.send(*d), deliveries))

    def publish_signed(self, event: dict[str, Any]) -> None:
        """The message the webhook publishes for `event` (its hash included), straight to the topic."""
        now = int(time.time() * 1000)
        parsed = parse_webhook(json.dumps(event).encode(), received_at_ms=now, sent_at_ms=now)
        data, attributes = encode_event(replace(parsed, payload_hash=payload_hash(event["body"])))
        message = PubsubMessage(
            data=data, attributes=signed(data, attributes), ordering_key=attributes["ordering_key"]
        )
        publisher = GapicPublisher()
        try:
            publisher.publish(topic=self.settings.topic_path(self.settings.pubsub_topic), messages=[message])
        finally:
            publisher.transport.close()

    # -- what came of it ---------------------------------------------------------------------
    def paid(self, uid: str) -> int:
        return int((doc(self.project, f"users/{uid}/wallet/points") or {}).get("paidBalance", 0))

    def record(self, event_id: str) -> dict[str, Any]:
        return doc(self.project, f"webhookEvents/{event_id}") or {}

    def settled(self, event_id: str, status: str = "processed") -> dict[str, Any]:
        record = wait_for(lambda: (r := self.record(event_id)).get("status") == status and r, timeout=30)
        assert record, (self.record(event_id), self.worker.logs()[-3000:])
        return dict(record)

    def worker_said(self, event_id: str, message: str) -> int:
        count = 0
        for line in self.worker.logs().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            count += entry.get("event_id") == event_id and entry.get("message") == message
        return count

    def copies_handled(self, event_id: str, *, processed: int, skipped: int) -> None:
        """Wait until the worker has handled the event's copies: `processed` credited, `skipped` at least."""
        done = wait_for(
            lambda: (
                self.worker_said(event_id, PROCESSED) >= processed
                and self.worker_said(event_id, SKIPPED) >= skipped
            ),
            timeout=30,
        )
        assert done, self.worker.logs()[-3000:]
        assert self.worker_said(event_id, PROCESSED) == processed

    def dead_letters(self, event_id: str, *, want: int, wait_s: float) -> list[str]:
        """The reasons of the event's dead letters (every letter pulled is kept, whoever's it is)."""
        client = SubscriberClient()
        path = self.settings.subscription_path(self.settings.pubsub_dlq_subscription)
        deadline = time.monotonic() + wait_s
        try:
            while len(self.letters[event_id]) < want and time.monotonic() < deadline:
                try:
                    response = client.pull(subscription=path, max_messages=50, timeout=2)
                except gexc.DeadlineExceeded:
                    continue
                if not response.received_messages:
                    continue
                client.acknowledge(subscription=path, ack_ids=[m.ack_id for m in response.received_messages])
                for received in response.received_messages:
                    attributes = received.message.attributes
                    self.letters[attributes.get("event_id", "")].append(attributes.get("reason", ""))
        finally:
            client.close()
        return list(self.letters[event_id])

    def no_dead_letter(self, event_id: str) -> None:
        assert self.dead_letters(event_id, want=1, wait_s=3) == []


@pytest.fixture(scope="module")
def stack(emulators: EmulatorStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MatrixStack]:
    running = MatrixStack(emulators, tmp_path_factory.mktemp("ingest-matrix"))
    try:
        yield running
    finally:
        running.stop()


def an_order(uid: str, *, quantity: int = 1, event_id: str = "", product_id: str = PRODUCT) -> dict[str, Any]:
    return build_event(
        "ON_ORDER_COMPLETED", uid=uid, product_id=product_id, quantity=quantity, event_id=event_id or None
    )


def same_id_other_body(event: dict[str, Any], uid: str) -> dict[str, Any]:
    """A delivery of `event`'s id with another body: three units instead of one."""
    return an_order(uid, quantity=3, event_id=event["event_id"])


# ---- both succeed ------------------------------------------------------------------------------


def test_row_both_succeed_is_queued_then_processed(stack: MatrixStack) -> None:
    uid = unique("matrix")
    event = an_order(uid)
    with stack.worker_held():
        assert stack.send(event) == (200, "queued")
    record = stack.settled(event["event_id"])
    assert wait_for(lambda: stack.record(event["event_id"]).get("publishedAt") is not None, timeout=10)
    assert record["payloadHash"] == payload_hash(event["body"])
    assert stack.paid(uid) == POINTS
    stack.copies_handled(event["event_id"], processed=1, skipped=0)
    stack.no_dead_letter(event["event_id"])


# ---- the record exists: ours, the same body ---------------------------------------------------


def test_row_redelivery_of_a_processed_event_is_a_duplicate_and_its_copy_skipped(stack: MatrixStack) -> None:
    uid = unique("matrix")
    event = an_order(uid)
    assert stack.send(event) == (200, "queued")
    stack.settled(event["event_id"])
    assert stack.send(event, to="other") == (200, "duplicate")
    stack.copies_handled(event["event_id"], processed=1, skipped=1)  # the other instance's copy
    assert stack.paid(uid) == POINTS
    assert len(ledger(stack.project, uid)) == 1
    assert stack.record(event["event_id"])["status"] == "processed"
    stack.no_dead_letter(event["event_id"])


def test_row_deliveries_at_once_are_credited_once(stack: MatrixStack) -> None:
    uid = unique("matrix")
    event = an_order(uid)
    answers = stack.send_at_once((event, "one"), (event, "other"), (event, "one"), (event, "other"))
    assert all(code == 200 for code, _ in answers), answers
    assert {status for _, status in answers} <= {"queued", "duplicate"}, answers  # whoever created it
    stack.settled(event["event_id"])
    # Each instance publishes once (its second delivery waits for its first, then meets the record).
    stack.copies_handled(event["event_id"], processed=1, skipped=1)
    assert stack.paid(uid) == POINTS
    stack.no_dead_letter(event["event_id"])


def test_an_instance_records_first_the_ids_it_has_seen_and_publishes_no_copy(stack: MatrixStack) -> None:
    uid = unique("matrix")
    event = an_order(uid)
    assert stack.send(event) == (200, "queued")
    stack.settled(event["event_id"])
    assert stack.send(event) == (200, "duplicate")
    assert stack.send(same_id_other_body(event, uid)) == (200, "conflict")
    time.sleep(2)
    assert (
        stack.worker_said(event["event_id"], PROCESSED),
        stack.worker_said(event["event_id"], SKIPPED),
    ) == (1, 0)
    assert stack.paid(uid) == POINTS
    stack.no_dead_letter(event["event_id"])


def test_row_the_worker_first_to_the_record_makes_the_webhook_a_duplicate(stack: MatrixStack) -> None:
    uid = unique("matrix")
    event = an_order(uid)
    stack.publish_signed(event)  # the webhook's message, before its record exists
    record = stack.settled(event["event_id"])
    assert record["payloadHash"] == payload_hash(event["body"])  # written by the worker
    assert stack.send(event) == (200, "duplicate")  # its create meets its own hash: not a conflict
    stack.copies_handled(event["event_id"], processed=1, skipped=1)
    assert stack.paid(uid) == POINTS
    assert stack.record(event["event_id"])["status"] == "processed"
    stack.no_dead_letter(event["event_id"])


def our_stranded_record(event: dict[str, Any], *, lease_age_s: float) -> dict[str, Any]:
    """webhookEvents/{id} as our webhook writes it, left `queued` without `publishedAt` (a crash
    between record and publish, or the first delivery still in flight when the lease is young)."""
    now = dt.datetime.now(dt.UTC)
    return {
        "status": "queued",
        "eventType": "ON_ORDER_COMPLETED",
        "orderingKey": event["body"]["checkout"]["metadata"]["uid"],
        "payloadHash": payload_hash(event["body"]),
        "receivedAt": now - dt.timedelta(seconds=lease_age_s),
        "leaseAt": now - dt.timedelta(seconds=lease_age_s),
        "publishedAt": None,
        "attempts": 0,
        "expiresAt": now + dt.timedelta(days=30),
    }


def test_row_a_record_queued_and_published_is_a_duplicate(stack: MatrixStack) -> None:
    # Its message not processed yet (seeded without one: the copy is then the message that credits).
    uid = unique("matrix")
    event = an_order(uid)
    published = {**our_stranded_record(event, lease_age_s=0), "publishedAt": dt.datetime.now(dt.UTC)}
    stack.db.document(f"webhookEvents/{event['event_id']}").set(published)
    assert stack.send(event) == (200, "duplicate")
    stack.settled(event["event_id"])
    stack.copies_handled(event["event_id"], processed=1, skipped=0)
    assert stack.paid(uid) == POINTS
    stack.no_dead_letter(event["event_id"])


@pytest.mark.parametrize(("lease_age_s", "answer"), [(300, "queued"), (0, "duplicate")])
def test_row_an_unmarked_record_is_marked_by_the_redeliverys_confirmed_publish(
    stack: MatrixStack, lease_age_s: float, answer: str
) -> None:
    uid = unique("matrix")
    event = an_order(uid)
    stack.db.document(f"webhookEvents/{event['event_id']}").set(
        our_stranded_record(event, lease_age_s=lease_age_s)
    )
    with stack.worker_held():
        assert stack.send(event) == (200, answer)  # queued: took the expired lease; duplicate: held elsewhere
    stack.settled(event["event_id"])
    # Its copy made the event durable, whoever holds the lease: marked (off the answer's path).
    assert wait_for(lambda: stack.record(event["event_id"]).get("publishedAt") is not None, timeout=10)
    stack.copies_handled(event["event_id"], processed=1, skipped=0)
    assert stack.paid(uid) == POINTS
    stack.no_dead_letter(event["event_id"])


# ---- the record exists: ours, another body ----------------------------------------------------


def test_row_another_body_is_a_conflict_and_its_copy_dead_lettered(stack: MatrixStack) -> None:
    uid = unique("matrix")
    event = an_order(uid)
    other = same_id_other_body(event, uid)
    stack.conflicted.add(event["event_id"])
    assert stack.send(event) == (200, "queued")
    stack.settled(event["event_id"])
    assert stack.send(other, to="other") == (200, "conflict")  # its copy went out with its own hash
    assert stack.dead_letters(event["event_id"], want=1, wait_s=30) == ["payload_conflict"]
    assert stack.paid(uid) == POINTS  # the first body's credit, never the other's three units
    record = stack.record(event["event_id"])
    assert (record["status"], record["payloadHash"]) == ("processed", payload_hash(event["body"]))
    assert record.get("failureReason") is None  # the record is the first body's: not marked


def test_row_two_bodies_at_once_credit_the_recorded_one_and_dead_letter_the_other(stack: MatrixStack) -> None:
    uid = unique("matrix")
    event = an_order(uid)
    other = same_id_other_body(event, uid)
    stack.conflicted.add(event["event_id"])
    answers = dict(zip(("event", "other"), stack.send_at_once((event, "one"), (other, "other")), strict=True))
    record = stack.settled(event["event_id"])
    # Whichever body was recorded first is credited (the webhook's create, or the worker's first
    # transaction); the other is answered "conflict" and its copy dead-lettered.
    winner, loser = (
        ("event", "other") if record["payloadHash"] == payload_hash(event["body"]) else ("other", "event")
    )
    assert record["payloadHash"] == payload_hash((event if winner == "event" else other)["body"])
    assert answers[loser] == (200, "conflict"), answers
    assert answers[winner] in ((200, "queued"), (200, "duplicate")), answers
    assert stack.dead_letters(event["event_id"], want=1, wait_s=30) == ["payload_conflict"]
    time.sleep(1)
    assert stack.paid(uid) == POINTS * (1 if winner == "event" else 3)


# ---- the record is the app's, from before cut-over --------------------------------------------


def app_record(event_id: str, status: str) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "rawEventType": "ON_ORDER_COMPLETED",
        "status": status,
        "receivedAt": firestore.SERVER_TIMESTAMP,
        "payloadHash": APP_HASH,
    }


@pytest.mark.parametrize(("app_status", "answer"), [("processed", "duplicate"), ("received", "duplicate")])
def test_row_app_records_the_app_finished_or_left_unfinished_are_duplicates(
    stack: MatrixStack, app_status: str, answer: str
) -> None:
    uid = unique("matrix")
    event = an_order(uid)
    stack.db.document(f"webhookEvents/{event['event_id']}").set(app_record(event["event_id"], app_status))
    assert stack.send(event) == (200, answer)
    stack.copies_handled(event["event_id"], processed=0, skipped=1)  # the copy meets the app's record
    assert stack.paid(uid) == 0
    record = stack.record(event["event_id"])
    assert (record["status"], record["payloadHash"], "eventType" in record) == (app_status, APP_HASH, False)
    assert record.get("flag") == ("app_unfinished" if app_status == "received" else None)
    stack.no_dead_letter(event["event_id"])


def test_row_an_app_queued_record_is_taken_over_and_credited_once(stack: MatrixStack) -> None:
    uid = unique("matrix")
    event = an_order(uid)
    stack.db.document(f"webhookEvents/{event['event_id']}").set(app_record(event["event_id"], "queued"))
    with stack.worker_held():
        assert stack.send(event) == (200, "queued")  # the webhook's take-over
    record = stack.settled(event["event_id"])
    assert (record["eventType"], "rawEventType" in record) == ("ON_ORDER_COMPLETED", False)
    assert record["payloadHash"] == payload_hash(event["body"])
    assert record["takenOverFrom"]["by"] == "app"
    stack.copies_handled(event["event_id"], processed=1, skipped=0)
    assert stack.paid(uid) == POINTS
    stack.no_dead_letter(event["event_id"])


# ---- Pub/Sub fails on the webhook's path -------------------------------------------------------


def test_row_publish_failed_record_written_is_processed_inline(stack: MatrixStack) -> None:
    uid = unique("matrix")
    event = an_order(uid)
    stack.fail("pubsub")
    try:
        assert stack.send(event) == (200, "processed")
        assert stack.paid(uid) == POINTS  # credited before the answer
    finally:
        stack.heal()
    record = stack.record(event["event_id"])
    assert (record["status"], record.get("publishedAt")) == ("processed", None)
    time.sleep(1)
    assert stack.worker_said(event["event_id"], PROCESSED) == 0  # nothing was published
    assert stack.paid(uid) == POINTS
    stack.no_dead_letter(event["event_id"])


def test_row_an_unmarked_record_and_a_failed_publish_is_processed_inline_by_the_leases_taker(
    stack: MatrixStack,
) -> None:
    uid, held_uid = unique("matrix"), unique("matrix")
    event, held = an_order(uid), an_order(held_uid)
    stack.db.document(f"webhookEvents/{event['event_id']}").set(our_stranded_record(event, lease_age_s=300))
    stack.db.document(f"webhookEvents/{held['event_id']}").set(our_stranded_record(held, lease_age_s=0))
    stack.fail("pubsub")
    try:
        assert stack.send(event) == (200, "processed")  # took the expired lease: inline, no second publish
        assert stack.send(held) == (200, "duplicate")  # the lease's holder is still responsible for it
    finally:
        stack.heal()
    assert (stack.record(event["event_id"])["status"], stack.paid(uid)) == ("processed", POINTS)
    assert (stack.record(held["event_id"])["status"], stack.paid(held_uid)) == ("queued", 0)
    # Its next delivery (Pub/Sub back) publishes it: nothing is left stranded for another test's sweep.
    assert stack.send(held, to="other") == (200, "duplicate")
    stack.settled(held["event_id"])
    assert stack.paid(held_uid) == POINTS
    stack.no_dead_letter(event["event_id"])


def test_row_an_app_queued_record_with_a_failed_publish_is_taken_over_and_processed_inline(
    stack: MatrixStack,
) -> None:
    uid = unique("matrix")
    event = an_order(uid)
    stack.db.document(f"webhookEvents/{event['event_id']}").set(app_record(event["event_id"], "queued"))
    stack.fail("pubsub")
    try:
        assert stack.send(event) == (200, "processed")
    finally:
        stack.heal()
    record = stack.record(event["event_id"])
    assert (record["status"], record["payloadHash"], "rawEventType" in record) == (
        "processed",
        payload_hash(event["body"]),
        False,
    )
    assert stack.paid(uid) == POINTS
    stack.no_dead_letter(event["event_id"])


def test_row_publish_and_inline_failing_is_503_then_paynows_retry_ends_it(stack: MatrixStack) -> None:
    uid = unique("matrix")
    event = an_order(uid, product_id=UNKNOWN_PRODUCT)  # inline: its dead letter cannot be published
    stack.fail("pubsub")
    try:
        assert stack.send(event) == (503, "")
    finally:
        stack.heal()
    assert stack.record(event["event_id"])["status"] == "queued"  # the lease was given back
    assert stack.send(event) == (200, "queued")  # PayNow's retry: published at once, no sweep
    record = stack.settled(event["event_id"], "failed_terminal")
    assert record["failureReason"] == "unknown_product"
    assert stack.dead_letters(event["event_id"], want=1, wait_s=30) == ["unknown_product"]
    assert stack.paid(uid) == 0


# ---- Firestore fails on the webhook's path -----------------------------------------------------


def test_row_record_failed_but_published_is_queued_and_the_worker_records_it(stack: MatrixStack) -> None:
    uid = unique("matrix")
    event = an_order(uid)
    stack.fail("firestore")
    try:
        assert stack.send(event) == (200, "queued")  # durable in Pub/Sub
    finally:
        stack.heal()
    record = stack.settled(event["event_id"])
    assert (record["eventType"], record["payloadHash"]) == ("ON_ORDER_COMPLETED", payload_hash(event["body"]))
    assert record.get("publishedAt") is None  # never marked: there was no record to mark
    stack.copies_handled(event["event_id"], processed=1, skipped=0)
    assert stack.paid(uid) == POINTS
    assert stack.send(event, to="other") == (200, "duplicate")  # PayNow's next delivery meets it
    stack.copies_handled(event["event_id"], processed=1, skipped=1)
    stack.no_dead_letter(event["event_id"])


def test_row_both_failed_is_503_then_paynows_retry_is_credited_once(stack: MatrixStack) -> None:
    uid = unique("matrix")
    event = an_order(uid)
    stack.fail("firestore", "pubsub")
    try:
        assert stack.send(event) == (503, "")
    finally:
        stack.heal()
    assert stack.record(event["event_id"]) == {}  # nothing reached either
    assert stack.send(event) == (200, "queued")
    stack.settled(event["event_id"])
    stack.copies_handled(event["event_id"], processed=1, skipped=0)
    assert stack.paid(uid) == POINTS
    stack.no_dead_letter(event["event_id"])


def test_payload_conflicts_were_dead_lettered_for_the_conflicting_rows_only(stack: MatrixStack) -> None:
    stack.dead_letters(flake_id(), want=1, wait_s=3)  # whatever is left on the DLQ
    conflicted = {event_id for event_id, reasons in stack.letters.items() if "payload_conflict" in reasons}
    assert conflicted == stack.conflicted
    assert all(stack.letters[e] == ["payload_conflict"] for e in stack.conflicted), dict(stack.letters)
