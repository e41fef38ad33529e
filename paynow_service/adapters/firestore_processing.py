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

from paynow_service.adapters.event_codec import decode_stored_event, encode_event
from paynow_service.adapters.firestore_events import EVENTS, utcnow
from paynow_service.adapters.firestore_ledger import FirestoreLedger
from paynow_service.domain.app_records import is_app_record
from paynow_service.domain.errors import (
    InvalidEventError,
    LedgerConflictError,
)
from paynow_service.domain.events import PaymentEvent
from paynow_service.domain.ledger import LedgerResult
from paynow_service.hookspecs import CreditedEntry
from paynow_service.service.decide import Decision, EventState, known_uid
from paynow_service.service.order_disputes import Dispute, OrderRecord

Decide = Callable[[EventState], Decision]


def _credited(items: Any) -> tuple[CreditedEntry, ...]:
    return tuple(
        CreditedEntry(
            entry_id=str(c["entryId"]), points=int(c["points"]), product_id=str(c.get("productId", ""))
        )
        for c in (items if isinstance(items, list) else [])
        if isinstance(c, dict) and "entryId" in c and isinstance(c.get("points"), int)
    )


def _order_record(order_id: str, data: dict[str, Any] | None) -> OrderRecord | None:
    """paynowOrders/{id} once the order is credited (a document holding only parked events is not)."""
    if not data or not data.get("uid"):
        return None
    reversed_ = {str(r["entryId"]): int(r["points"]) for r in data.get("reversed") or []}
    reversed_by = str(data.get("reversedBy") or "")
    if data.get("recredited") and data.get("generation") is None:
        reversed_by = ""  # written before generations: a re-credited order is credited again
    generation = data.get("generation")
    disputes = data.get("chargebacks")
    disputes = disputes if isinstance(disputes, dict) else {}
    counts = data.get("reversals")
    if isinstance(counts, dict):
        entry_reversals = {str(k): int(v) for k, v in counts.items() if isinstance(v, int)}
    else:  # written before per-entry counts: what the one reversal took was its first
        entry_reversals = dict.fromkeys(reversed_, 1)
    amounts = data.get("refundAmounts") if isinstance(data.get("refundAmounts"), dict) else {}
    return OrderRecord(
        uid=str(data["uid"]),
        order_id=order_id,
        entry_reversals=entry_reversals,
        refund_amounts={str(k): int(v) for k, v in (amounts or {}).items() if isinstance(v, int)},
        credits=_credited(data.get("credits")),
        subscription_ids=tuple(str(s) for s in data.get("subscriptionIds") or []),
        generation=int(generation) if isinstance(generation, int) else int(bool(reversed_)),
        reversed=reversed_,
        reversed_by=reversed_by,
        refunds={str(k): str(v) for k, v in (data.get("refunds") or {}).items()},
        chargebacks={str(k): _dispute(v) for k, v in disputes.items()},
        migrated_from=str(data.get("migratedFrom") or ""),
    )


def _dispute(value: Any) -> Dispute:
    if isinstance(value, dict):
        return Dispute(str(value.get("status", "")), bool(value.get("closed")))
    return Dispute(str(value), str(value).lower() in ("won", "lost"))  # a bare status, written before


def _parked(data: dict[str, Any] | None) -> dict[str, PaymentEvent]:
    """The refunds and disputes stored on the order while it was not credited, decoded (what does not
    decode is left for sweep to dead-letter)."""
    found: dict[str, PaymentEvent] = {}
    for event_id, item in ((data or {}).get("parked") or {}).items():
        event = decode_stored_event(item.get("event") if isinstance(item, dict) else None)
        if event is not None:
            found[str(event_id)] = event
    return found


def _entries_of(decision: Decision, event_id: str) -> list[str]:
    """The entries an event wrote (an order's transaction also writes those of the events parked on it)."""
    if not decision.applied_parked:
        return [e.entry_id for e in decision.entries]
    return [e.entry_id for e in decision.entries if e.metadata.get("eventId") == event_id]


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

        event_doc, order_doc = data(event_ref), data(order_ref)
        mapped_uid = str((data(customer_ref) or {}).get("uid", ""))
        order = _order_record(order_id, order_doc)
        parked = _parked(order_doc)
        app_record = is_app_record(event_doc)
        state = EventState(
            event_status=(event_doc or {}).get("status"),
            app_record=app_record,
            mapped_uid=mapped_uid,
            order=order,
            now=utcnow(),
            parked=tuple(parked.values()),
            cycles=await self._cycles(tx, event, order, mapped_uid, bool(parked)),
        )
        decision = decide(state)
        if decision.flag:  # the app's unfinished record: flagged for reconciliation, its status kept
            tx.set(event_ref, {"flag": decision.flag, "flaggedAt": utcnow()}, merge=True)
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
        if order_ref is not None and decision.park:
            item = {"event": encode_event(event)[0], "type": event.event_type, "parkedAt": now}
            since = (order_doc or {}).get("parkedAt") or now
            tx.set(
                order_ref, {"parked": {event.event_id: item}, "parkedAt": since, "updatedAt": now}, merge=True
            )
        if order_ref is not None and decision.order_update is not None:
            update = {**decision.order_update, "updatedAt": now}
            if decision.applied_parked:
                update.update(parked=firestore.DELETE_FIELD, parkedAt=firestore.DELETE_FIELD)
            tx.set(order_ref, update, merge=True)
        for parked_id in decision.applied_parked:  # applied in this transaction, with their order
            applied = {
                "outcome": "applied_with_order",
                "orderEventId": event.event_id,
                "entryIds": _entries_of(decision, parked_id),
                "by": component,
            }
            tx.set(
                db.collection(EVENTS).document(parked_id),
                {"status": "processed", "processedAt": now, "failureReason": None, "result": applied},
                merge=True,
            )
        if customer_ref is not None and decision.customer_mapping is not None:
            tx.set(customer_ref, {"uid": decision.customer_mapping[1], "updatedAt": now}, merge=True)
        if sub_ref is not None and decision.subscription_update is not None:
            tx.set(sub_ref, self._subscription_doc(decision, sub_prev, now), merge=True)
        attempts = int((event_doc or {}).get("attempts") or 0) + 1
        marker: dict[str, Any] = {
            "status": decision.result if decision.result in ("ignored", "parked") else "processed",
            "processedAt": now,
            "attempts": attempts,
            "failureReason": None,
            "result": {
                "outcome": decision.result,
                "uid": decision.uid or None,
                "points": decision.points,
                "entryIds": _entries_of(decision, event.event_id),
                "by": component,
            },
        }
        if event_doc is None or app_record:
            # Processed without an ingest record of ours (a replay after TTL, a foreign publisher, or
            # the app's `queued` record of an event it never credited, which ours replaces whole).
            marker.update(
                eventType=event.event_type,
                orderingKey=event.resolved_ordering_key(),
                receivedAt=now,
                expiresAt=now + self._ttl,
            )
        if app_record:
            app_received = (event_doc or {}).get("receivedAt")
            marker["takenOverFrom"] = {"by": "app", "appReceivedAt": app_received}
            tx.set(event_ref, marker)
        else:
            tx.set(event_ref, marker, merge=True)
        return decision, result

    async def _cycles(
        self,
        tx: AsyncTransaction,
        event: PaymentEvent,
        order: OrderRecord | None,
        mapped_uid: str,
        parked: bool,
    ) -> tuple[CreditedEntry, ...]:
        """The credited cycles of the subscriptions an order's lines bought: a refund or dispute of the
        order reverses them with it. Read only when the event may reverse the order."""
        if order is not None and (event.refund is not None or event.chargeback is not None):
            uid, subscriptions = order.uid, order.subscription_ids
        elif event.order is not None and parked:
            uid = known_uid(event, mapped_uid)
            subscriptions = tuple(
                sorted({line.subscription_id for line in event.order.lines if line.subscription_id})
            )
        else:
            return ()
        if not uid or not subscriptions:
            return ()
        refs = [self._db.document("users", uid, "subscriptions", sid) for sid in subscriptions]
        cycles: list[CreditedEntry] = []
        async for snap in self._db.get_all(refs, transaction=tx, timeout=self._timeout):
            if snap.exists:
                cycles.extend(_credited((snap.to_dict() or {}).get("cycleEntries")))
        return tuple(sorted(cycles, key=lambda c: c.entry_id))

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
        # Every cycle entry with its points: a refund or dispute of the order that bought the plan
        # reverses them with the order.
        known = list(_credited((prev or {}).get("cycleEntries")))
        fresh = [CreditedEntry(e.entry_id, e.amount or 0) for e in decision.entries]
        listed = {c.entry_id for c in known}
        cycles = known + [c for c in fresh if c.entry_id not in listed]
        if fresh:
            doc["cycleEntries"] = [{"entryId": c.entry_id, "points": c.points} for c in cycles]
        if period_end_ms:
            doc["currentPeriodEnd"] = dt.datetime.fromtimestamp(period_end_ms / 1000, dt.UTC)
        return doc
