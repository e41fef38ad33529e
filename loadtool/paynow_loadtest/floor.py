"""The floor: a bare script doing what the queue-mode webhook must do for each delivery, with no web
framework, so the service's answer latency can be read as a ratio to it.

For each delivery: one Firestore create of the same `webhookEvents` record (or a read when it
exists), then one ordered Pub/Sub publish of the same PaymentEvent with the `event_mac` the webhook
signs it with (EVENT_SIGNING_KEYS); an ignored type is marked instead. The pipeline floor writes the
service's own collection and topic, so the worker processes its events like the webhook's and the
invariants check them too; find-max's floor writes apart (a topic nobody consumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.pubsub_v1 import PublisherClient
from google.pubsub_v1 import PublisherAsyncClient
from google.pubsub_v1.types import PubsubMessage

from paynow_loadtest.driver import REQUEST_TIMEOUT_S, open_loop
from paynow_loadtest.expectation import Expectation
from paynow_loadtest.results import PhaseResult, Sample
from paynow_loadtest.spends import SpendBook, spend_turn
from paynow_loadtest.traffic import Delivery, Spend
from paynow_service.adapters.event_codec import encode_event
from paynow_service.domain.paynow import decode_envelope, event_from_envelope, payload_hash
from paynow_service.domain.provenance import ATTR_EVENT_MAC, EventSigner

RECORD_TTL = dt.timedelta(days=30)


@dataclass(frozen=True)
class FloorItem:
    """What the queue-mode webhook makes of one delivery: its webhookEvents record and its message."""

    event_id: str
    record: dict[str, Any]  # without the times, which are taken when it is written
    data: bytes
    attributes: dict[str, str]
    ordering_key: str
    ignored: bool

    def document(self, now: dt.datetime) -> dict[str, Any]:
        return {**self.record, "receivedAt": now, "leaseAt": now, "expiresAt": now + RECORD_TTL}


def floor_item(body: bytes) -> FloorItem:
    """The record and message of a signed webhook body, built as the service builds them."""
    now_ms = int(time.time() * 1000)
    envelope = decode_envelope(body)
    event = event_from_envelope(envelope, received_at_ms=now_ms, sent_at_ms=now_ms)
    data, attributes = encode_event(event)
    record = {
        "status": "queued", "eventType": event.event_type, "orderingKey": event.resolved_ordering_key(),
        "payloadHash": payload_hash(envelope.body), "publishedAt": None, "attempts": 0, "processedAt": None,
        "result": None, "failureReason": None, "event": data,
    }  # fmt: skip
    return FloorItem(
        event.event_id, record, data, attributes, event.resolved_ordering_key(), bool(event.ignored)
    )


@dataclass
class FloorTarget:
    """Where the floor writes. The pipeline floor uses the service's own collection and topic, so the
    worker processes its events as it processes the webhook's (same background load, same invariants);
    find-max's floor writes apart (no consumer: the worker could not follow the floor's maximum)."""

    topic_path: str
    collection: str
    expectation: Expectation | None = None
    signer: EventSigner | None = None  # signs `event_mac` as the webhook does (EVENT_SIGNING_KEYS)


def floor_topic(topic_path: str) -> str:
    """Create find-max's own floor topic (no subscription: nobody consumes it); its path."""
    publisher = PublisherClient()
    with contextlib.suppress(gexc.AlreadyExists):
        publisher.create_topic(name=topic_path, timeout=30)
    return topic_path


class _Floor:
    """One floor phase's clients and bookkeeping."""

    def __init__(self, project: str, target: FloorTarget, phase: PhaseResult) -> None:
        self.target, self.phase = target, phase
        self.db = firestore.AsyncClient(project=project)
        self.publisher = PublisherAsyncClient()
        self.accepted_here: set[str] = set()

    async def work(self, item: FloorItem) -> str:
        ref = self.db.collection(self.target.collection).document(item.event_id)
        try:
            await ref.create(item.document(dt.datetime.now(dt.UTC)), timeout=REQUEST_TIMEOUT_S)
        except gexc.AlreadyExists:
            await ref.get(timeout=REQUEST_TIMEOUT_S)
            return "duplicate"
        if item.ignored:
            mark = {"status": "ignored", "result": {"outcome": "ignored"}}
            await ref.set(mark, merge=True, timeout=REQUEST_TIMEOUT_S)
            return "ignored"
        attributes = item.attributes
        if self.target.signer is not None:  # the webhook's MAC, computed per delivery as it does
            attributes = {**attributes, ATTR_EVENT_MAC: self.target.signer.sign(item.data)}
        message = PubsubMessage(data=item.data, attributes=attributes, ordering_key=item.ordering_key)
        await self.publisher.publish(
            topic=self.target.topic_path, messages=[message], retry=None, timeout=REQUEST_TIMEOUT_S
        )
        return "queued"

    async def one(self, delivery: Delivery, item: FloorItem, start: float) -> None:
        planned, expectation = delivery.planned, self.target.expectation
        if expectation is not None and not expectation.admit(
            planned, needs=delivery.needs, duplicate=delivery.duplicate
        ):
            self.phase.skipped += 1
            return
        began = time.perf_counter()
        try:
            outcome = await asyncio.wait_for(self.work(item), REQUEST_TIMEOUT_S)
            status = 200
        except Exception as err:  # counted, never stops the run
            status, outcome = 0, type(err).__name__
        ms = (time.perf_counter() - began) * 1000
        self.phase.samples.append(
            Sample(began - start, ms, status, outcome, delivery.label, 0, planned.event_id)
        )
        if status == 200:
            self.accepted_here.add(planned.event_id)
            if expectation is not None:
                expectation.accept(planned.event_id)

    async def warm(self) -> None:
        """Both channels opened outside the measurement, as the service's are by then."""
        with contextlib.suppress(Exception):
            await (
                self.db.collection(self.target.collection).document("warm-up").get(timeout=REQUEST_TIMEOUT_S)
            )
            await self.publisher.get_topic(topic=self.target.topic_path, timeout=REQUEST_TIMEOUT_S)

    async def close(self) -> None:
        await self.publisher.transport.close()  # type: ignore[no-untyped-call]
        self.db.close()  # type: ignore[no-untyped-call]


async def run_floor(
    project: str, target: FloorTarget, name: str, rate: float, duration: float,
    deliveries: Sequence[Delivery], spends: Sequence[Spend] = (), book: SpendBook | None = None,
) -> PhaseResult:  # fmt: skip
    """The queue-mode webhook's own durable work, bare, open loop. With an expectation, deliveries are
    skipped, added and accepted exactly as the webhook sender does. The app's spends go out beside, as in
    the service's turns (a spend waits for its origin's acceptance: the expectation's, or without one
    this phase's own)."""
    phase = PhaseResult(name, rate, duration)
    items = {d.planned.event_id: floor_item(d.planned.body) for d in deliveries}
    floor = _Floor(project, target, phase)
    try:

        async def one(delivery: Delivery, start: float) -> None:
            await floor.one(delivery, items[delivery.planned.event_id], start)

        await floor.warm()
        expectation = target.expectation
        accepted = expectation.is_accepted if expectation is not None else floor.accepted_here.__contains__
        async with spend_turn(book, spends, phase.spends, accepted) as spend:
            await open_loop(deliveries, one, phase, spends, spend)
    finally:
        await floor.close()
    return phase
