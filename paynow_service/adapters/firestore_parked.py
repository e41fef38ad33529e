"""Refunds and disputes parked on `paynowOrders/{order_id}.parked` while their order is not credited.

The order's own transaction applies them (adapters/firestore_processing.py). What is still
parked after `PARK_MAX_HOURS` is found here for `sweep`, which dead-letters it: `release`
then takes it off the order and marks its event `failed_terminal`, in one transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from paynow_service.adapters.event_codec import decode_stored_event
from paynow_service.adapters.firestore_events import EVENTS, utcnow
from paynow_service.domain.events import PaymentEvent

ORDERS = "paynowOrders"


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

    async def release(self, parked: ParkedEvent, reason: str, detail: str) -> bool:
        """Take the event off its order and mark it failed; False if its order applied it meanwhile."""
        order_ref = self._db.collection(ORDERS).document(parked.order_id)
        event_ref = self._db.collection(EVENTS).document(parked.event_id)

        @firestore.async_transactional
        async def work(tx: firestore.AsyncTransaction) -> bool:
            snap = await order_ref.get(transaction=tx, timeout=self._timeout)
            items: dict[str, Any] = dict((snap.to_dict() or {}).get("parked") or {}) if snap.exists else {}
            if parked.event_id not in items:
                return False
            del items[parked.event_id]
            times = [i.get("parkedAt") for i in items.values() if isinstance(i, dict)]
            oldest = min((t for t in times if isinstance(t, dt.datetime)), default=None)
            now = utcnow()
            tx.update(
                order_ref,
                {
                    FieldPath("parked", parked.event_id).to_api_repr(): firestore.DELETE_FIELD,
                    "parkedAt": oldest if oldest is not None else firestore.DELETE_FIELD,
                    "updatedAt": now,
                },
            )
            failed = {
                "status": "failed_terminal",
                "failureReason": reason,
                "failureDetail": detail[:500],
                "processedAt": now,
            }
            tx.set(event_ref, failed, merge=True)
            return True

        released: bool = await work(self._db.transaction())
        return released
