"""Firestore: one event processed in one transaction (reads, decide, writes).

`FirestoreProcessor` is the processing core's unit of work. In one transaction it reads
the event's record, the customer mapping, the order (with the events parked on it) and,
when a reversal needs them, the credited cycles of the order's subscriptions; calls the
pure `decide` it is given with that `EventState`; then reads what the `Decision` writes
(the subscription, the ledger's wallets and keys) and writes ledger entries, order,
mapping, subscription and the event's status together: all or nothing. A retried
transaction reads and decides again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from paynow_service.adapters.event_codec import encode_event
from paynow_service.adapters.firestore_events import utcnow
from paynow_service.adapters.firestore_ledger import FirestoreLedger
from paynow_service.adapters.firestore_names import CUSTOMERS, EVENTS, ORDERS, SUBSCRIPTIONS, USERS
from paynow_service.adapters.firestore_transactions import FirestoreTransactions
from paynow_service.adapters.firestore_wire_transaction import WireTransaction
from paynow_service.adapters.processing_documents import (
    credited_entries,
    event_marker,
    order_record,
    parked_events,
    subscription_document,
)
from paynow_service.domain.app_records import is_app_record
from paynow_service.domain.decisions import Decision, EventState, cycles_to_read, order_id_of
from paynow_service.domain.errors import InvalidEventError, LedgerConflictError
from paynow_service.domain.events import PaymentEvent
from paynow_service.domain.orders import CreditedEntry

Decide = Callable[[EventState], Decision]


@dataclass(frozen=True)
class _Read:
    """The event's state as read in its transaction, with the documents the writes go to."""

    state: EventState
    event_ref: Any
    event_doc: dict[str, Any] | None
    customer_ref: Any | None
    order_ref: Any | None
    order_doc: dict[str, Any] | None


class FirestoreProcessor:
    """Processes one event in one Firestore transaction (reads, decide, writes)."""

    def __init__(
        self,
        db: firestore.AsyncClient,
        ledger: FirestoreLedger,
        transactions: FirestoreTransactions,
        *,
        timeout_s: float,
        ttl_days: int,
    ) -> None:
        """`transactions` must be the ledger's own: its per-key locks serialise a wallet's writers."""
        self._db = db
        self._ledger = ledger
        self._transactions = transactions
        self._timeout = timeout_s
        self._ttl = dt.timedelta(days=ttl_days)

    async def process(self, event: PaymentEvent, decide: Decide, *, component: str) -> Decision:
        async def work(tx: WireTransaction) -> Decision:
            read = await self._read_state(tx, event)
            decision = decide(read.state)
            await self._apply(tx, event, read, decision, component)
            return decision

        try:
            lock_keys = await self._lock_keys(event)
            return await self._transactions.run(lock_keys, work, begin_with_first_read=True)
        except LedgerConflictError as err:
            raise InvalidEventError(f"ledger conflict: {err}") from err

    async def _lock_keys(self, event: PaymentEvent) -> list[str]:
        """The in-process locks the transaction holds: the event's ordering key and, for an event that
        does not name its user (a refund or chargeback names only the order), the user known from the
        order or the customer mapping, so that one user's refunds (each on its own `event:` key) queue
        on their wallet instead of aborting each other. Read outside the transaction, so only a hint:
        the transaction re-reads everything it decides on. If the read fails, the ordering key alone
        is locked."""
        keys = [event.resolved_ordering_key()]
        if event.uid:
            return keys
        refs = []
        if order_id := order_id_of(event):
            refs.append(self._db.collection(ORDERS).document(order_id))
        if event.customer_id:
            refs.append(self._db.collection(CUSTOMERS).document(event.customer_id))
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

    async def _read_state(self, tx: WireTransaction, event: PaymentEvent) -> _Read:
        db = self._db
        event_ref = db.collection(EVENTS).document(event.event_id)
        customer_ref = db.collection(CUSTOMERS).document(event.customer_id) if event.customer_id else None
        order_id = order_id_of(event)
        order_ref = db.collection(ORDERS).document(order_id) if order_id else None
        event_doc, customer_doc, order_doc = await self._documents(tx, [event_ref, customer_ref, order_ref])
        mapped_uid = str((customer_doc or {}).get("uid", ""))
        order = order_record(order_id, order_doc)
        parked = parked_events(order_doc)
        uid, subscriptions = cycles_to_read(event, order, mapped_uid, bool(parked))
        app_record = is_app_record(event_doc)
        state = EventState(
            event_status=(event_doc or {}).get("status"),
            app_record=app_record,
            # Ours only: the app's hashes its own re-serialisation of the body, never equal to ours.
            payload_hash="" if app_record else str((event_doc or {}).get("payloadHash") or ""),
            mapped_uid=mapped_uid,
            order=order,
            now=utcnow(),
            parked=tuple(parked.values()),
            cycles=await self._cycles(tx, uid, subscriptions),
        )
        return _Read(state, event_ref, event_doc, customer_ref, order_ref, order_doc)

    async def _documents(
        self, tx: WireTransaction, refs: Sequence[Any | None]
    ) -> list[dict[str, Any] | None]:
        """Each reference's document (None: no reference, or no document), in one round trip."""
        snaps = iter(await tx.read_all(ref for ref in refs if ref is not None))
        return [next(snaps).to_dict() if ref is not None else None for ref in refs]

    async def _cycles(
        self, tx: WireTransaction, uid: str, subscriptions: tuple[str, ...]
    ) -> tuple[CreditedEntry, ...]:
        """The cycles credited to these subscriptions of `uid`, by entry id."""
        if not subscriptions:
            return ()
        refs = [self._db.document(USERS, uid, SUBSCRIPTIONS, sid) for sid in subscriptions]
        cycles: list[CreditedEntry] = []
        for snap in await tx.read_all(refs):
            if snap.exists:
                cycles.extend(credited_entries((snap.to_dict() or {}).get("cycleEntries")))
        return tuple(sorted(cycles, key=lambda c: c.entry_id))

    async def _apply(
        self, tx: WireTransaction, event: PaymentEvent, read: _Read, decision: Decision, component: str
    ) -> None:
        if not decision.writes:
            if decision.flag:  # the app's unfinished record: flagged for reconciliation, its status kept
                tx.set(read.event_ref, {"flag": decision.flag, "flaggedAt": utcnow()}, merge=True)
            return
        sub_ref = sub_prev = None
        if decision.subscription_update is not None and event.subscription is not None:
            sub_ref = self._db.document(
                USERS, decision.uid, SUBSCRIPTIONS, event.subscription.subscription_id
            )
            (prev,) = await tx.read_all([sub_ref])
            sub_prev = prev.to_dict()
        ledger_reads = await self._ledger.read_phase(tx, decision.entries) if decision.entries else None
        # ---- every read is done; writes only from here ----
        if ledger_reads is not None:
            self._ledger.write_phase(tx, ledger_reads, decision.entries)
        now = utcnow()
        self._write_order(tx, event, read, decision, now, component)
        if read.customer_ref is not None and decision.customer_mapping is not None:
            tx.set(read.customer_ref, {"uid": decision.customer_mapping[1], "updatedAt": now}, merge=True)
        if sub_ref is not None and decision.subscription_update is not None:
            fields = subscription_document(decision.subscription_update, decision.entries, sub_prev, now)
            tx.set(sub_ref, fields, merge=True)
        replaces = read.state.app_record
        marker = event_marker(
            event,
            decision,
            read.event_doc,
            replaces_record=replaces,
            now=now,
            ttl=self._ttl,
            component=component,
        )
        tx.set(read.event_ref, marker, merge=not replaces)

    def _write_order(
        self,
        tx: WireTransaction,
        event: PaymentEvent,
        read: _Read,
        decision: Decision,
        now: dt.datetime,
        by: str,
    ) -> None:
        """The order's writes: a parked event stored on it, its update, the parked events it applied."""
        if read.order_ref is None:
            return
        if decision.park:
            item = {"event": encode_event(event)[0], "type": event.event_type, "parkedAt": now}
            since = (read.order_doc or {}).get("parkedAt") or now
            parking = {"parked": {event.event_id: item}, "parkedAt": since, "updatedAt": now}
            tx.set(read.order_ref, parking, merge=True)
        if decision.order_update is not None:
            update = {**decision.order_update, "updatedAt": now}
            if decision.applied_parked:
                update.update(parked=firestore.DELETE_FIELD, parkedAt=firestore.DELETE_FIELD)
            tx.set(read.order_ref, update, merge=True)
        for parked_id in decision.applied_parked:  # applied in this transaction, with their order
            applied = {
                "outcome": "applied_with_order",
                "orderEventId": event.event_id,
                "entryIds": decision.entry_ids_of(parked_id),
                "by": by,
            }
            done = {"status": "processed", "processedAt": now, "failureReason": None, "result": applied}
            tx.set(self._db.collection(EVENTS).document(parked_id), done, merge=True)
