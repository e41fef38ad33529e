"""Firestore for `webhookEvents`: what ingest and the operators' tools need.

Claim an event id, lease and mark its publication, find stranded events, mark outcomes.
IDs, types, statuses and times only (no PII). The processing transaction itself is in
`firestore_processing.py`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from paynow_service.adapters.event_codec import decode_stored_event, encode_event
from paynow_service.adapters.firestore_names import EVENTS as EVENTS  # still importable from here
from paynow_service.adapters.firestore_wire import FirestoreWire
from paynow_service.adapters.google_errors import TRANSIENT_GOOGLE_ERRORS, bounded, unavailable
from paynow_service.domain.app_records import FLAG_APP_UNFINISHED, is_app_record
from paynow_service.domain.decisions import order_id_of
from paynow_service.domain.errors import (
    StorageUnavailableError,
)
from paynow_service.domain.events import PaymentEvent
from paynow_service.logs import log

PUBLISHED_BATCH_S = 0.2
LEASE_RELEASED = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
logger = logging.getLogger("paynow_service.events")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class EventRecord:
    """The parts of webhookEvents/{event_id} that ingest decisions depend on."""

    event_id: str
    status: str
    payload_hash: str
    published_at: dt.datetime | None
    lease_at: dt.datetime | None
    ordering_key: str = ""
    event_type: str = ""
    app_shaped: bool = False  # written by the app's webhook before cut-over (its statuses, its hash)

    @classmethod
    def from_doc(cls, event_id: str, data: dict[str, Any]) -> EventRecord:
        return cls(
            event_id=event_id,
            status=str(data.get("status", "")),
            payload_hash=str(data.get("payloadHash", "")),
            published_at=data.get("publishedAt"),
            lease_at=data.get("leaseAt") or data.get("receivedAt"),
            ordering_key=str(data.get("orderingKey", "")),
            event_type=str(data.get("eventType", "")),
            app_shaped=is_app_record(data),
        )


class EventRecords:
    """webhookEvents/{event_id}: ids, statuses and times only (no PII)."""

    def __init__(self, db: firestore.AsyncClient, *, ttl_days: int, timeout_s: float) -> None:
        self._db = db
        # The two writes of every webhook (the create, the publishedAt marks) go out as raw commits.
        self._wire = FirestoreWire(db)
        self._ttl = dt.timedelta(days=ttl_days)
        self._timeout = timeout_s
        # The client's deadline plus a little: a hard stop when the channel itself hangs.
        self._bound = timeout_s + 0.5
        self._published: dict[str, dt.datetime] = {}
        self._flusher: asyncio.Task[None] | None = None

    def _ref(self, event_id: str) -> Any:
        return self._db.collection(EVENTS).document(event_id)

    def _new_record(self, event: PaymentEvent, payload_hash: str) -> dict[str, Any]:
        now = utcnow()
        return {
            "status": "queued",
            "eventType": event.event_type,
            "orderingKey": event.resolved_ordering_key(),
            "orderId": order_id_of(event) or None,  # ids only, for the operators' search
            "customerId": event.customer_id or None,
            "payloadHash": payload_hash,
            "receivedAt": now,
            "leaseAt": now,
            "publishedAt": None,
            "attempts": 0,
            "processedAt": None,
            "result": None,
            "failureReason": None,
            "expiresAt": now + self._ttl,
            # The minimal-PII PaymentEvent itself (ids, products, amounts, statuses), so that
            # `sweep` can publish an event stranded between record and publish.
            "event": encode_event(event)[0],
        }

    async def create_queued(self, event: PaymentEvent, payload_hash: str) -> EventRecord | None:
        """Claim the event id. None when this call created it; the existing record otherwise."""
        doc = self._new_record(event, payload_hash)
        try:
            await bounded(
                self._wire.create(EVENTS, event.event_id, doc, self._timeout),
                self._bound,
                "webhookEvents create",
            )
            return None
        except gexc.AlreadyExists:
            pass
        existing = await self.get(event.event_id)
        if existing is None:  # deleted in between (TTL): treat as ours next time
            raise StorageUnavailableError("webhookEvents record vanished while being read")
        return existing

    async def take_over_app_record(self, event: PaymentEvent, payload_hash: str) -> bool:
        """Replace the app's `queued` record of the event (never credited) with ours, in a transaction.

        False when the record is no longer the app's `queued` one (a concurrent delivery took it
        over first, or it changed): the caller reads it again and treats it as what it is now.
        """
        ref = self._ref(event.event_id)
        fresh = self._new_record(event, payload_hash)

        @firestore.async_transactional
        async def replace(tx: Any) -> bool:
            snap = await ref.get(transaction=tx, timeout=self._timeout)
            data = snap.to_dict() if snap.exists else None
            if not is_app_record(data) or (data or {}).get("status") != "queued":
                return False
            app = data or {}
            tx.set(ref, {**fresh, "takenOverFrom": {"by": "app", "appReceivedAt": app.get("receivedAt")}})
            return True

        try:
            async with asyncio.timeout(self._timeout * 2):  # the read and the commit, each bounded
                taken: bool = await replace(self._db.transaction())
        except TRANSIENT_GOOGLE_ERRORS as err:
            raise unavailable("webhookEvents take-over", err) from err
        return taken

    async def flag_app_unfinished(self, event_id: str) -> None:
        """Mark the app's unfinished record for reconciliation (its status stays the app's)."""
        await self.mark(event_id, flag=FLAG_APP_UNFINISHED, flaggedAt=utcnow())

    async def get(self, event_id: str) -> EventRecord | None:
        # A raw read (decoded by the client's own decoder): every redelivery's create meets its record.
        name = self._wire.name(EVENTS, event_id)
        found = await bounded(self._wire.batch_get([name], self._timeout), self._bound, "webhookEvents read")
        data = found.get(name)
        return EventRecord.from_doc(event_id, data) if data is not None else None

    async def claim_lease(self, event_id: str, lease_s: int) -> bool:
        """Take the publish lease of a `queued`, unpublished event whose lease expired.

        Conditional on the document's update time, so of several concurrent duplicates
        exactly one wins and publishes.
        """
        ref = self._ref(event_id)
        try:
            snap = await bounded(ref.get(timeout=self._timeout), self._bound, "webhookEvents lease read")
            if not snap.exists:
                return False
            record = EventRecord.from_doc(event_id, snap.to_dict() or {})
            now = utcnow()
            if record.status != "queued" or record.published_at is not None:
                return False
            if record.lease_at is not None and now - record.lease_at < dt.timedelta(seconds=lease_s):
                return False
            await bounded(
                ref.update(
                    {"leaseAt": now},
                    option=self._db.write_option(last_update_time=snap.update_time),
                    timeout=self._timeout,
                ),
                self._bound,
                "webhookEvents lease",
            )
            return True
        except gexc.FailedPrecondition:
            return False  # another delivery took the lease first

    async def mark(self, event_id: str, **fields: Any) -> None:
        """Merge fields into the record (publishedAt, status, failureReason ...)."""
        await bounded(
            self._ref(event_id).set(fields, merge=True, timeout=self._timeout),
            self._bound,
            "webhookEvents update",
        )

    def mark_published_soon(self, event_id: str) -> None:
        """Record `publishedAt` within PUBLISHED_BATCH_S, batched with other events.

        One batched write instead of one write per webhook keeps the answer path to the
        two calls that make an event durable (create, publish). A lost mark is harmless:
        the record stays `queued`, and `sweep` or a redelivery publishes it again, which
        the worker answers "already processed".
        """
        self._published[event_id] = utcnow()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_after(PUBLISHED_BATCH_S))

    async def flush_published(self) -> None:
        """Write every pending mark now (shutdown)."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        await self._flush_after(0)

    async def _flush_after(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        while self._published:
            ids = list(self._published)[:400]
            marks = [(event_id, {"publishedAt": self._published[event_id]}) for event_id in ids]
            try:
                marking = self._wire.merge(EVENTS, marks, self._timeout)
                await bounded(marking, self._bound, "publishedAt marks")
            except Exception as err:  # noqa: BLE001 (lost marks only make sweep publish again)
                log(
                    logger,
                    logging.WARNING,
                    "Published but publishedAt not recorded",
                    component="paynow_webhook",
                    events=len(ids),
                    error_type=type(err).__name__,
                )
            for event_id in ids:
                self._published.pop(event_id, None)

    async def release_lease(self, event_id: str) -> None:
        """Let the next delivery take the publish lease now (best effort: it expires anyway)."""
        try:
            release = self._ref(event_id).set({"leaseAt": LEASE_RELEASED}, merge=True, timeout=self._timeout)
            await bounded(release, self._bound, "webhookEvents lease release")
        except Exception as err:  # noqa: BLE001 (the lease expires by itself after PUBLISH_LEASE_S)
            log(
                logger,
                logging.WARNING,
                "Publish lease not released",
                component="paynow_webhook",
                event_id=event_id,
                error_type=type(err).__name__,
            )

    async def mark_published(self, event_id: str) -> None:
        await self.mark(event_id, publishedAt=utcnow())

    async def mark_failed(self, event_id: str, status: str, reason: str, detail: str) -> None:
        """Record a terminal failure. A worker may fail an event before any record exists (it got the
        message first): the record it starts then carries `receivedAt` and `expiresAt`, so TTL
        deletes it like any other."""
        now = utcnow()
        fields = {
            "status": status,
            "failureReason": reason,
            "failureDetail": detail[:500],
            "processedAt": now,
        }
        ref = self._ref(event_id)
        try:
            await bounded(ref.update(fields, timeout=self._timeout), self._bound, "webhookEvents update")
        except gexc.NotFound:
            await self.mark(event_id, **fields, receivedAt=now, expiresAt=now + self._ttl)

    async def reset_to_queued(self, event_id: str) -> None:
        """A replay: the event is queued again (published by the replay itself)."""
        await self.mark(event_id, status="queued", publishedAt=utcnow(), leaseAt=utcnow(), failureReason=None)

    async def stored_event(self, record_id: str) -> PaymentEvent | None:
        """The PaymentEvent recorded at ingest (None for records without one)."""
        snap = await bounded(
            self._ref(record_id).get(timeout=self._timeout), self._bound, "webhookEvents read"
        )
        return decode_stored_event((snap.to_dict() or {}).get("event"))

    async def stranded(self, lease_s: int, limit: int) -> list[EventRecord]:
        """Events still `queued` without `publishedAt` whose lease expired."""
        cutoff = utcnow() - dt.timedelta(seconds=lease_s)
        query = (
            self._db.collection(EVENTS)
            .where(filter=firestore.FieldFilter("status", "==", "queued"))
            .where(filter=firestore.FieldFilter("publishedAt", "==", None))
            .limit(limit)
        )
        found: list[EventRecord] = []
        async for snap in query.stream(timeout=self._timeout):
            record = EventRecord.from_doc(snap.id, snap.to_dict() or {})
            if record.lease_at is None or record.lease_at <= cutoff:
                found.append(record)
        return found
