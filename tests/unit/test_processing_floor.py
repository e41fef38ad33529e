"""bench/processing_floor.py's transaction reads and writes what the real processor does.

The same ON_ORDER_COMPLETED event goes through `FirestoreProcessor.process` (with the real
ledger, `decide` and the plugins) and through the floor's `credit_in`, each on an in-memory
fake of the async client holding the same documents: the read round trips (document paths,
in order) must be equal, and so must the writes (operation, path, merge, document), but for
the times, the request hash and the marker's `by`.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from typing import Any

import pytest

from bench.processing_floor import OrderCredit, credit_in
from paynow_service.adapters.firestore_ledger import FirestoreLedger
from paynow_service.adapters.firestore_processing import FirestoreProcessor
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.events import PaymentEvent
from paynow_service.domain.paynow import parse_webhook
from paynow_service.plugins import get_plugin_manager
from paynow_service.sample_webhooks import build_event
from paynow_service.service.decide import decide

PRODUCT = "411486491630370816"
POINTS = 500
CATALOG = Catalog.from_toml(f'[products."{PRODUCT}"]\npoints = {POINTS}\n')
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Ref:
    def __init__(self, path: str) -> None:
        self.path = path
        self.id = path.rsplit("/", 1)[-1]


class Collection_:
    def __init__(self, path: str) -> None:
        self.path = path

    def document(self, doc_id: str) -> Ref:
        return Ref(f"{self.path}/{doc_id}")


class Snap:
    def __init__(self, ref: Ref, data: dict[str, Any] | None) -> None:
        self.reference, self.id, self._data, self.exists = ref, ref.id, data, data is not None

    def to_dict(self) -> dict[str, Any] | None:
        return copy.deepcopy(self._data)


class FakeDb:
    """What the processor, the ledger and the floor use of `firestore.AsyncClient`, recording reads."""

    def __init__(self, docs: dict[str, dict[str, Any]]) -> None:
        self.docs = copy.deepcopy(docs)
        self.reads: list[list[str]] = []

    def collection(self, *parts: str) -> Collection_:
        return Collection_("/".join(parts))

    def document(self, *parts: str) -> Ref:
        return Ref("/".join(parts))

    async def get_all(self, refs: list[Ref], transaction: Any = None, **options: Any) -> AsyncIterator[Snap]:
        assert transaction is not None, "every read of the unit of work is in its transaction"
        self.reads.append([ref.path for ref in refs])
        for ref in refs:
            yield Snap(ref, self.docs.get(ref.path))


class FakeTx:
    def __init__(self, db: FakeDb) -> None:
        self.db = db
        self.writes: list[tuple[str, str, bool, dict[str, Any]]] = []

    async def read_all(self, refs: Iterable[Ref]) -> list[Snap]:
        """`WireTransaction.read_all`: the documents in one round trip, recorded as one read."""
        wanted = list(refs)
        self.db.reads.append([ref.path for ref in wanted])
        return [Snap(ref, self.db.docs.get(ref.path)) for ref in wanted]

    def create(self, ref: Ref, data: dict[str, Any]) -> None:
        self.writes.append(("create", ref.path, False, data))

    def set(self, ref: Ref, data: dict[str, Any], merge: bool = False) -> None:
        self.writes.append(("set", ref.path, merge, data))

    def update(self, ref: Ref, data: dict[str, Any]) -> None:
        self.writes.append(("update", ref.path, False, data))


class OneTransaction:
    """`FirestoreTransactions.run` without locks nor retries: the work once, in the fake transaction."""

    def __init__(self, tx: FakeTx) -> None:
        self.tx = tx

    async def run(
        self, lock_keys: Collection[str], fn: Callable[[FakeTx], Awaitable[Any]], **options: Any
    ) -> Any:
        return await fn(self.tx)


def order_event(uid: str = "u-1") -> PaymentEvent:
    body = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT)
    return parse_webhook(json.dumps(body).encode(), received_at_ms=0, sent_at_ms=0)


def normalised(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return "<time>"
    if isinstance(value, dict):
        return {k: "<hash>" if k == "requestHash" else normalised(v) for k, v in value.items() if k != "by"}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


async def service(event: PaymentEvent, docs: dict[str, dict[str, Any]]) -> tuple[list[list[str]], list[Any]]:
    db = FakeDb(docs)
    tx = FakeTx(db)
    transactions: Any = OneTransaction(tx)
    ledger = FirestoreLedger(db, transactions=transactions)  # type: ignore[arg-type]
    processor = FirestoreProcessor(db, ledger, transactions, timeout_s=5, ttl_days=30)  # type: ignore[arg-type]
    hooks = get_plugin_manager().hook
    decision = await processor.process(
        event, lambda state: decide(event, state, hooks, CATALOG), component="w"
    )
    assert decision.result == "credited"
    return db.reads, [(op, path, merge, normalised(data)) for op, path, merge, data in tx.writes]


async def floor(event: PaymentEvent, docs: dict[str, dict[str, Any]]) -> tuple[list[list[str]], list[Any]]:
    db = FakeDb(docs)
    tx = FakeTx(db)
    assert await credit_in(tx, db, OrderCredit.of(event, POINTS)) == "credited"
    return db.reads, [(op, path, merge, normalised(data)) for op, path, merge, data in tx.writes]


def returning_user(event: PaymentEvent) -> dict[str, dict[str, Any]]:
    """A user credited before (wallet with a promo lot), the customer mapped, the event recorded by ingest."""
    lot = {"id": "lot-1", "amountRemaining": 40, "expiresAt": NOW + dt.timedelta(days=30), "source": "promo"}
    uid = event.uid
    return {
        f"users/{uid}": {"uid": uid, "createdAt": NOW, "updatedAt": NOW, "status": "active"},
        f"users/{uid}/wallet/points": {
            "paidBalance": 700,
            "promoBalance": 40,
            "promoLots": [lot],
            "updatedAt": NOW,
            "createdAt": NOW,
            "v": 1,
        },
        f"paynowCustomers/{event.customer_id}": {"uid": uid, "updatedAt": NOW},
        f"webhookEvents/{event.event_id}": {
            "status": "queued",
            "eventType": event.event_type,
            "orderingKey": uid,
            "receivedAt": NOW,
            "payloadHash": "h",
            "attempts": 0,
        },
    }


@pytest.mark.parametrize("state", ["new user, no record", "returning user, ingest record"])
async def test_the_floor_reads_and_writes_what_the_processor_does(state: str) -> None:
    event = order_event()
    docs = {} if state.startswith("new") else returning_user(event)
    service_reads, service_writes = await service(event, docs)
    floor_reads, floor_writes = await floor(event, docs)
    assert floor_reads == service_reads
    assert len(service_reads) == 2  # the processor's state, then the ledger's
    assert floor_writes == service_writes
    written = {path for _, path, _, _ in floor_writes}
    if state.startswith("new"):
        assert f"users/{event.uid}" in written
        assert f"paynowCustomers/{event.customer_id}" in written
    else:
        assert f"users/{event.uid}" not in written
        assert f"paynowCustomers/{event.customer_id}" not in written


async def test_a_processed_event_writes_nothing() -> None:
    event = order_event()
    db = FakeDb({f"webhookEvents/{event.event_id}": {"status": "processed"}})
    tx = FakeTx(db)
    assert await credit_in(tx, db, OrderCredit.of(event, POINTS)) == "duplicate"
    assert tx.writes == []
    assert len(db.reads) == 1
