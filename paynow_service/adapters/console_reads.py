"""Firestore reads for the operator console: events, orders, customers, wallets, entries, reports.

Read only. Every search is a single-field equality (`orderId`, `customerId`, `orderingKey` of
webhookEvents): Firestore's automatic single-field indexes serve it, no composite index is needed.
A record's stored PaymentEvent is decoded here (ids, products, amounts, statuses: no PII) and its
bytes are never handed on. Every call is bounded in time; an outage is StorageUnavailableError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from paynow_service.adapters.event_codec import decode_stored_event
from paynow_service.adapters.firestore_names import (
    CUSTOMERS,
    EVENTS,
    LEDGER,
    ORDERS,
    USERS,
    WALLET,
    WALLET_DOC,
)
from paynow_service.adapters.google_errors import bounded
from paynow_service.domain.events import PaymentEvent
from paynow_service.domain.ledger import LedgerEntry, Wallet
from paynow_service.domain.ledger_reader import read_entry, read_wallet

REPORTS = "reconcileReports"
SEARCHABLE = frozenset({"orderId", "customerId", "orderingKey"})


@dataclass(frozen=True)
class StoredEvent:
    """webhookEvents/{event_id} as stored (without the encoded event) and that event, decoded."""

    event_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    event: PaymentEvent | None = None


class ConsoleReads:
    """What the console reads, on the process's Firestore client."""

    def __init__(self, db: firestore.AsyncClient, *, timeout_s: float) -> None:
        self._db = db
        self._timeout = timeout_s
        self._bound = timeout_s + 0.5

    async def event(self, event_id: str) -> StoredEvent | None:
        snap = await self._get(self._db.collection(EVENTS).document(event_id), "webhookEvents read")
        return _stored(snap.id, snap.to_dict() or {}) if snap.exists else None

    async def events_where(self, name: str, value: str, limit: int) -> list[StoredEvent]:
        """Events whose `name` (orderId, customerId or orderingKey) equals `value`."""
        if name not in SEARCHABLE:
            raise ValueError(f"not a searchable field: {name}")
        query = self._db.collection(EVENTS).where(filter=FieldFilter(name, "==", value)).limit(limit)
        snaps = await bounded(query.get(timeout=self._timeout), self._bound, "webhookEvents query")
        return [_stored(snap.id, snap.to_dict() or {}) for snap in snaps]

    async def order(self, order_id: str) -> dict[str, Any] | None:
        snap = await self._get(self._db.collection(ORDERS).document(order_id), "paynowOrders read")
        return (snap.to_dict() or {}) if snap.exists else None

    async def customer_uid(self, customer_id: str) -> str:
        snap = await self._get(self._db.collection(CUSTOMERS).document(customer_id), "paynowCustomers read")
        uid = (snap.to_dict() or {}).get("uid") if snap.exists else None
        return uid if isinstance(uid, str) else ""

    async def user_exists(self, uid: str) -> bool:
        user = await self._get(self._db.collection(USERS).document(uid), "users read")
        if user.exists:
            return True
        wallet = await self._get(self._wallet_ref(uid), "wallet read")
        return bool(wallet.exists)

    async def wallet(self, uid: str) -> Wallet | None:
        snap = await self._get(self._wallet_ref(uid), "wallet read")
        return read_wallet(snap.to_dict() if snap.exists else None)

    async def entries(self, uid: str, entry_ids: Sequence[str]) -> list[LedgerEntry]:
        """The entries named, in that order (those that do not exist are left out)."""
        if not entry_ids:
            return []
        refs = [self._db.document(USERS, uid, LEDGER, entry_id) for entry_id in entry_ids]

        async def fetch() -> dict[str, Any]:
            return {snap.id: snap async for snap in self._db.get_all(refs, timeout=self._timeout)}

        found = await bounded(fetch(), self._bound, "ledger read")
        return [
            read_entry(uid, entry_id, found[entry_id].to_dict() or {})
            for entry_id in entry_ids
            if entry_id in found and found[entry_id].exists
        ]

    async def latest_report(self) -> dict[str, Any] | None:
        """The newest reconciliation report by `finishedAt`; None before the first."""
        query = self._db.collection(REPORTS).order_by("finishedAt", direction=firestore.Query.DESCENDING)
        snaps = await bounded(query.limit(1).get(timeout=self._timeout), self._bound, "reports query")
        return {"reportId": snaps[0].id, **(snaps[0].to_dict() or {})} if snaps else None

    def _wallet_ref(self, uid: str) -> Any:
        return self._db.document(USERS, uid, WALLET, WALLET_DOC)

    async def _get(self, ref: Any, what: str) -> Any:
        return await bounded(ref.get(timeout=self._timeout), self._bound, what)


def _stored(event_id: str, data: dict[str, Any]) -> StoredEvent:
    encoded = data.pop("event", None)
    return StoredEvent(event_id, data, decode_stored_event(encoded))
