"""Firestore: one event processed in one transaction (reads, decide, writes).

`FirestoreProcessor` runs the processing core's transaction: read the event record, the
customer mapping and the order; ask the pure `decide`; then write ledger entries (through
the ledger's read and write phases), order, mapping, subscription and the event's status
together: all or nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.async_transaction import AsyncTransaction

from paynow_service.adapters.firestore_events import EVENTS, utcnow
from paynow_service.adapters.firestore_ledger import FirestoreLedger
from paynow_service.domain.errors import InvalidEventError, LedgerConflictError
from paynow_service.domain.events import PaymentEvent
from paynow_service.domain.ledger import LedgerResult
from paynow_service.hookspecs import CreditedEntry
from paynow_service.service.decide import Decision, EventState, OrderRecord

Decide = Callable[[EventState], Decision]


def _order_record(data: dict[str, Any] | None) -> OrderRecord | None:
    if not data or not data.get("uid"):
        return None
    credits = tuple(
        CreditedEntry(
            entry_id=str(c["entryId"]), points=int(c["points"]), product_id=str(c.get("productId", ""))
        )
        for c in data.get("credits") or []
    )
    reversed_ = {str(r["entryId"]): int(r["points"]) for r in data.get("reversed") or []}
    return OrderRecord(
        uid=str(data["uid"]),
        credits=credits,
        reversed=reversed_,
        reversed_by=str(data.get("reversedBy", "")),
        recredited=bool(data.get("recredited")),
    )


def _order_id(event: PaymentEvent) -> str:
    for detail in (event.order, event.refund, event.chargeback):
        if detail is not None:
            return detail.order_id
    return ""


class FirestoreProcessor:
    """Processes one event in one Firestore transaction (reads, decide, writes)."""

    def __init__(
        self, db: firestore.AsyncClient, ledger: FirestoreLedger, *, timeout_s: float, ttl_days: int
    ) -> None:
        self._db = db
        self._ledger = ledger
        self._timeout = timeout_s
        self._ttl = dt.timedelta(days=ttl_days)

    async def process(
        self, event: PaymentEvent, decide: Decide, *, component: str
    ) -> tuple[Decision, LedgerResult | None]:
        async def work(tx: AsyncTransaction) -> tuple[Decision, LedgerResult | None]:
            return await self._in_transaction(tx, event, decide, component)

        try:
            return await self._ledger.run_transaction(await self._lock_keys(event), work)
        except LedgerConflictError as err:
            raise InvalidEventError(f"ledger conflict: {err}") from err

    async def _lock_keys(self, event: PaymentEvent) -> list[str]:
        """The in-process wallet locks the transaction holds: the event's ordering key and, for an event
        that does not name its user (a refund or chargeback names only the order), the user known from
        the order or the customer mapping. Without the user's lock, refunds of one user's orders (each on
        its own `event:` key) ran side by side on one wallet, and on pessimistic locks they could abort
        each other until every delivery attempt was spent (seen under load: refunds dead-lettered as
        `contention_exhausted`). Read outside the transaction, so only a hint: the transaction re-reads
        everything it decides on. If the read fails, the ordering key alone is locked."""
        keys = [event.resolved_ordering_key()]
        if event.uid:
            return keys
        refs = []
        if order_id := _order_id(event):
            refs.append(self._db.collection("paynowOrders").document(order_id))
        if event.customer_id:
            refs.append(self._db.collection("paynowCustomers").document(event.customer_id))
        if not refs:
            return keys
        try:
            async with asyncio.timeout(self._timeout):
                async for snap in self._db.get_all(refs, timeout=self._timeout):
                    uid = (snap.to_dict() or {}).get("uid") if snap.exists else None
                    if uid:
                        keys.append(str(uid))
        except (gexc.GoogleAPIError, TimeoutError):
            pass  # the transaction's own reads will meet the same weather and report it
        return keys

    async def _in_transaction(
        self, tx: AsyncTransaction, event: PaymentEvent, decide: Decide, component: str
    ) -> tuple[Decision, LedgerResult | None]:
        db = self._db
        event_ref = db.collection(EVENTS).document(event.event_id)
        refs = [event_ref]
        customer_ref = (
            db.collection("paynowCustomers").document(event.customer_id) if event.customer_id else None
        )
        order_id = _order_id(event)
        order_ref = db.collection("paynowOrders").document(order_id) if order_id else None
        refs += [r for r in (customer_ref, order_ref) if r is not None]
        # One round trip for all three (AsyncTransaction.get_all awaits an async generator and fails).
        fetched = db.get_all(refs, transaction=tx, timeout=self._timeout)
        snaps = {snap.reference.path: snap async for snap in fetched}

        def data(ref: Any) -> dict[str, Any] | None:
            snap = snaps.get(ref.path) if ref is not None else None
            return (snap.to_dict() or {}) if snap is not None and snap.exists else None

        event_doc = data(event_ref)
        state = EventState(
            event_status=(event_doc or {}).get("status"),
            mapped_uid=str((data(customer_ref) or {}).get("uid", "")),
            order=_order_record(data(order_ref)),
            now=utcnow(),
        )
        decision = decide(state)
        if not decision.writes:
            return decision, None
        sub_ref = sub_prev = None
        if decision.subscription_update is not None and event.subscription is not None:
            sub_ref = (
                db.collection("users")
                .document(decision.uid)
                .collection("subscriptions")
                .document(event.subscription.subscription_id)
            )
            prev = await sub_ref.get(transaction=tx, timeout=self._timeout)
            sub_prev = prev.to_dict() if prev.exists else None
        reads = await self._ledger.read_phase(tx, decision.entries) if decision.entries else None
        # ---- every read is done; writes only from here ----
        result = self._ledger.write_phase(tx, reads, decision.entries) if reads is not None else None
        now = utcnow()
        if order_ref is not None and decision.order_update is not None:
            tx.set(order_ref, {**decision.order_update, "updatedAt": now}, merge=True)
        if customer_ref is not None and decision.customer_mapping is not None:
            tx.set(customer_ref, {"uid": decision.customer_mapping[1], "updatedAt": now}, merge=True)
        if sub_ref is not None and decision.subscription_update is not None:
            tx.set(sub_ref, self._subscription_doc(decision, sub_prev, now), merge=True)
        attempts = int((event_doc or {}).get("attempts") or 0) + 1
        marker: dict[str, Any] = {
            "status": "ignored" if decision.result == "ignored" else "processed",
            "processedAt": now,
            "attempts": attempts,
            "failureReason": None,
            "result": {
                "outcome": decision.result,
                "uid": decision.uid or None,
                "points": decision.points,
                "entryIds": [e.entry_id for e in decision.entries],
                "by": component,
            },
        }
        if event_doc is None:  # processed without an ingest record (replay after TTL, or a foreign publisher)
            marker.update(
                eventType=event.event_type,
                orderingKey=event.resolved_ordering_key(),
                receivedAt=now,
                expiresAt=now + self._ttl,
            )
        tx.set(event_ref, marker, merge=True)
        return decision, result

    @staticmethod
    def _subscription_doc(
        decision: Decision, prev: dict[str, Any] | None, now: dt.datetime
    ) -> dict[str, Any]:
        update = dict(decision.subscription_update or {})
        cycle = int(update.pop("cycle", 0) or 0)
        period_end_ms = update.pop("currentPeriodEndMs", None)
        doc: dict[str, Any] = {**update, "updatedAt": now}
        if cycle:
            doc["cyclesCredited"] = max(cycle, int((prev or {}).get("cyclesCredited") or 0))
        if period_end_ms:
            doc["currentPeriodEnd"] = dt.datetime.fromtimestamp(period_end_ms / 1000, dt.UTC)
        return doc
