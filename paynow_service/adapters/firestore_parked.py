"""Refunds and disputes parked on `paynowOrders/{order_id}.parked` while their order is not credited.

The order's own transaction applies them (adapters/firestore_processing.py). What is still
parked after `PARK_MAX_HOURS` is found here for `sweep`, which dead-letters it: `release`
then takes it off the order and marks its event `failed_terminal`, in one transaction.

An order the app credited before cut-over gets its credits from `migrate orders`, not from
an order transaction of ours, so what was parked on it before the migration stays parked:
`requeue` takes it off the order and makes its event `queued` and unpublished again, with
the stored event, in one transaction; sweep's stranded pass then publishes it (signed) and
the worker applies it to the now credited order.

Both run on FirestoreTransactions: contention is retried, and Google errors leave as
domain errors (a transient one is what sweep counts as a failed item).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from paynow_service.adapters.event_codec import decode_stored_event
from paynow_service.adapters.firestore_events import LEASE_RELEASED, utcnow
from paynow_service.adapters.firestore_names import EVENTS, ORDERS
from paynow_service.adapters.firestore_transactions import FirestoreTransactions
from paynow_service.domain.events import PaymentEvent


@dataclass(frozen=True)
class ParkedEvent:
    order_id: str
    event_id: str
    event: PaymentEvent | None  # None when the stored bytes do not decode (dead-lettered all the same)
    parked_at: dt.datetime


class ParkedEvents:
    def __init__(self, db: firestore.AsyncClient, *, timeout_s: float) -> None:
        self._db = db
        self._timeout = timeout_s
        self._transactions = FirestoreTransactions(db, timeout_s=timeout_s)

    async def overdue(self, max_age: dt.timedelta, limit: int) -> list[ParkedEvent]:
        """Parked events older than `max_age`, from the orders that hold the oldest ones."""
        cutoff = utcnow() - max_age
        query = (
            self._db.collection(ORDERS)
            .where(filter=firestore.FieldFilter("parkedAt", "<", cutoff))
            .order_by("parkedAt")
            .limit(limit)
        )
        found: list[ParkedEvent] = []
        for snap in await query.get(timeout=self._timeout):
            for event_id, item in ((snap.to_dict() or {}).get("parked") or {}).items():
                parked_at = item.get("parkedAt") if isinstance(item, dict) else None
                if isinstance(parked_at, dt.datetime) and parked_at < cutoff:
                    event = decode_stored_event(item.get("event"))
                    found.append(ParkedEvent(snap.id, str(event_id), event, parked_at))
        return found[:limit]

    async def on_credited_orders(self, limit: int) -> list[ParkedEvent]:
        """Parked events whose order is credited now (by `migrate orders`): nothing else applies them."""
        query = (
            self._db.collection(ORDERS)
            .where(filter=firestore.FieldFilter("parkedAt", ">", LEASE_RELEASED))
            .order_by("parkedAt")
            .limit(limit)
        )
        found: list[ParkedEvent] = []
        for snap in await query.get(timeout=self._timeout):
            data = snap.to_dict() or {}
            if not data.get("uid"):
                continue  # still waiting for its order
            for event_id, item in (data.get("parked") or {}).items():
                parked_at = item.get("parkedAt") if isinstance(item, dict) else None
                event = decode_stored_event(item.get("event")) if isinstance(item, dict) else None
                if isinstance(parked_at, dt.datetime):
                    found.append(ParkedEvent(snap.id, str(event_id), event, parked_at))
        return found[:limit]

    async def requeue(self, parked: ParkedEvent, ttl: dt.timedelta) -> bool:
        """Take the event off its credited order and make it `queued`, unpublished, with its stored
        event (sweep's stranded pass publishes it); False if it is no longer parked there."""
        order_ref = self._db.collection(ORDERS).document(parked.order_id)
        event_ref = self._db.collection(EVENTS).document(parked.event_id)

        async def work(tx: firestore.AsyncTransaction) -> bool:
            order = await order_ref.get(transaction=tx, timeout=self._timeout)
            record = await event_ref.get(transaction=tx, timeout=self._timeout)
            data = (order.to_dict() or {}) if order.exists else {}
            items: dict[str, Any] = dict(data.get("parked") or {})
            item = items.pop(parked.event_id, None)
            if not data.get("uid") or not isinstance(item, dict) or parked.event is None:
                return False
            now = utcnow()
            tx.update(order_ref, _unparked(parked.event_id, items, now))
            queued: dict[str, Any] = {
                "status": "queued",
                "eventType": parked.event.event_type,
                "orderingKey": parked.event.resolved_ordering_key(),
                "event": item.get("event"),
                "publishedAt": None,
                "leaseAt": LEASE_RELEASED,
                "failureReason": None,
                "result": {"outcome": "requeued", "orderId": parked.order_id},
            }
            if not record.exists:
                queued.update(receivedAt=now, attempts=0, expiresAt=now + ttl)
            tx.set(event_ref, queued, merge=True)
            return True

        return await self._transactions.run((), work)

    async def release(self, parked: ParkedEvent, reason: str, detail: str) -> bool:
        """Take the event off its order and mark it failed; False if its order applied it meanwhile."""
        order_ref = self._db.collection(ORDERS).document(parked.order_id)
        event_ref = self._db.collection(EVENTS).document(parked.event_id)

        async def work(tx: firestore.AsyncTransaction) -> bool:
            snap = await order_ref.get(transaction=tx, timeout=self._timeout)
            items: dict[str, Any] = dict((snap.to_dict() or {}).get("parked") or {}) if snap.exists else {}
            if parked.event_id not in items:
                return False
            del items[parked.event_id]
            now = utcnow()
            tx.update(order_ref, _unparked(parked.event_id, items, now))
            failed = {
                "status": "failed_terminal",
                "failureReason": reason,
                "failureDetail": detail[:500],
                "processedAt": now,
            }
            tx.set(event_ref, failed, merge=True)
            return True

        return await self._transactions.run((), work)


def _unparked(event_id: str, remaining: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The order's update that takes one parked event off (`parkedAt` follows the oldest left)."""
    times = [i.get("parkedAt") for i in remaining.values() if isinstance(i, dict)]
    oldest = min((t for t in times if isinstance(t, dt.datetime)), default=None)
    if not remaining:  # the last one: no empty map left behind
        return {"parked": firestore.DELETE_FIELD, "parkedAt": firestore.DELETE_FIELD, "updatedAt": now}
    return {
        FieldPath("parked", event_id).to_api_repr(): firestore.DELETE_FIELD,
        "parkedAt": oldest if oldest is not None else firestore.DELETE_FIELD,
        "updatedAt": now,
    }
