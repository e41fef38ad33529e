"""Firestore for `reconcile`: paged scans, batched reads, the fix transaction, the run's documents.

Users come from two collection-group scans ordered by document name, `wallet` and `ledger`,
merged by uid: Firestore orders names segment by segment, so `users/{uid}/...` arrive grouped
by uid in the same order in both (a uid compares as a string). A user with entries but no
wallet, or a wallet but no entries, is seen all the same. One page per scan and one user's
documents are held at a time. A scan resumes after a uid with a cursor on `users/{uid}`.

The fix runs on FirestoreTransactions (the ledger's locks and retries): it reads the wallet,
the whole ledger of that user and the fix's entry id in the transaction, audits again what it
read (domain/reconcile_wallets.py) and writes the paid entry (with its `ledgerKeys` record)
and the wallet's `promoBalance` together. The entry id is the idempotency key: a second
`--fix` of the same report finds it and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from paynow_service.adapters.firestore_names import (
    EVENTS,
    LEDGER,
    LEDGER_KEYS,
    ORDERS,
    USERS,
    WALLET,
    WALLET_DOC,
    user_document,
)
from paynow_service.adapters.firestore_transactions import FirestoreTransactions
from paynow_service.adapters.ledger_documents import entry_document
from paynow_service.domain.errors import StorageUnavailableError
from paynow_service.domain.reconcile_wallets import (
    FixOutcome,
    UserDocs,
    audit_wallet,
    paid_fix_entry,
    paid_fix_entry_id,
)

Docs = Sequence[tuple[str, dict[str, Any]]]
RUNS = "reconcileRuns"
REPORTS = "reconcileReports"
_READ_CHUNK = 300  # document references per batched read


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    try:
        yield
    except (gexc.GoogleAPIError, TimeoutError) as err:
        detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise StorageUnavailableError(f"{what}: {type(err).__name__}: {detail}") from err


class ReconcileStore:
    def __init__(self, db: firestore.AsyncClient, *, page_size: int, timeout_s: float) -> None:
        self._db = db
        self._page_size = page_size
        self._timeout = timeout_s
        self._transactions = FirestoreTransactions(db, timeout_s=timeout_s)

    async def _pages(self, query: Any, after: Any, what: str) -> AsyncIterator[list[Any]]:
        query = query.order_by(FieldPath.document_id()).limit(self._page_size)
        cursor: Any = {FieldPath.document_id(): after} if after is not None else None
        while True:
            paged = query.start_after(cursor) if cursor is not None else query
            with _storage_errors(f"reading {what}"):
                async with asyncio.timeout(self._timeout):
                    page: list[Any] = await paged.get(timeout=self._timeout)
            if page:
                yield page
            if len(page) < self._page_size:
                return
            cursor = page[-1]

    async def _group(self, group: str, after: str) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        start = self._db.document(USERS, after) if after else None
        async for page in self._pages(self._db.collection_group(group), start, f"users/*/{group}"):
            for snap in page:
                where = user_document(snap.reference.path, group)
                if where is None or where[0] == after:
                    continue  # another collection of that name, or the last user already done
                yield where[0], where[1], snap.to_dict() or {}

    async def users(self, after: str) -> AsyncIterator[UserDocs]:
        """Every user with a wallet or a ledger, in uid order, after `after`."""
        wallets = _Peek(self._group(WALLET, after))
        entries = _Peek(self._group(LEDGER, after))
        while True:
            heads = [h[0] for h in (await wallets.head(), await entries.head()) if h is not None]
            if not heads:
                return
            uid = min(heads)
            wallet: dict[str, Any] | None = None
            ledger: list[tuple[str, str, dict[str, Any]]] = []
            async for _, doc_id, data in wallets.take(uid):
                if doc_id == WALLET_DOC:
                    wallet = data
            async for item in entries.take(uid):
                ledger.append(item)
            yield UserDocs(uid, wallet, [(doc_id, data) for _, doc_id, data in ledger])

    async def _collection(self, name: str, after: str) -> AsyncIterator[Docs]:
        start = self._db.document(name, after) if after else None
        async for page in self._pages(self._db.collection(name), start, name):
            yield [(snap.id, snap.to_dict() or {}) for snap in page]

    def events(self, after: str) -> AsyncIterator[Docs]:
        return self._collection(EVENTS, after)

    def orders(self, after: str) -> AsyncIterator[Docs]:
        return self._collection(ORDERS, after)

    async def _get_all(self, refs: list[Any], what: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(refs), _READ_CHUNK):
            with _storage_errors(f"reading {what}"):
                async with asyncio.timeout(self._timeout):
                    chunk = refs[start : start + _READ_CHUNK]
                    async for snap in self._db.get_all(chunk, timeout=self._timeout):
                        if snap.exists:
                            found[snap.reference.path] = snap.to_dict() or {}
        return found

    async def events_by_id(self, event_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        refs = [self._db.document(EVENTS, event_id) for event_id in event_ids]
        found = await self._get_all(refs, EVENTS)
        return {ref.id: found.get(ref.path) for ref in refs}

    async def entries_present(self, refs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        docs = [self._db.document(USERS, uid, LEDGER, entry_id) for uid, entry_id in refs]
        found = await self._get_all(docs, "ledger entries")
        return {(uid, entry_id) for (uid, entry_id), doc in zip(refs, docs, strict=True) if doc.path in found}

    async def fix_wallet(self, uid: str, report_id: str, now: dt.datetime) -> FixOutcome:
        """Repair paid and promo drift of one wallet, as audited again inside the transaction."""
        wallet_ref = self._db.document(USERS, uid, WALLET, WALLET_DOC)
        entry_id = paid_fix_entry_id(report_id, uid)
        key_ref = self._db.document(LEDGER_KEYS, entry_id)

        async def work(tx: firestore.AsyncTransaction) -> FixOutcome:
            wallet = await wallet_ref.get(transaction=tx, timeout=self._timeout)
            key = await key_ref.get(transaction=tx, timeout=self._timeout)
            query = self._db.collection(USERS, uid, LEDGER).order_by(FieldPath.document_id())
            ledger = [snap async for snap in await tx.get(query, timeout=self._timeout)]
            if not wallet.exists:
                return FixOutcome()
            entries = [(snap.id, snap.to_dict() or {}) for snap in ledger]
            audit = audit_wallet(uid, wallet.to_dict() or {}, entries)
            fields: dict[str, Any] = {}
            # The entry id is the idempotency key: this report never writes it twice.
            done = key.exists or any(doc_id == entry_id for doc_id, _ in entries)
            entry = None if done else paid_fix_entry(audit, report_id, now)
            if entry is not None:
                tx.create(self._db.document(USERS, uid, LEDGER, entry_id), entry_document(entry))
                key_doc = {"entryId": entry_id, "uid": uid, "amount": entry.amount, "requestHash": None}
                tx.create(key_ref, {**key_doc, "action": "reconcile", "createdAt": now, "v": 1})
            if audit.promo_drift and audit.wallet is not None:
                fields["promoBalance"] = audit.wallet.lots_sum
            if entry is not None or fields:
                tx.update(wallet_ref, {**fields, "updatedAt": now})
            return FixOutcome(paid_fixed=entry is not None, promo_fixed="promoBalance" in fields)

        with _storage_errors(f"fixing the wallet of {uid}"):
            return await self._transactions.run((uid,), work)

    async def load_run(self, report_id: str) -> dict[str, Any] | None:
        with _storage_errors(RUNS):
            snap = await self._db.collection(RUNS).document(report_id).get(timeout=self._timeout)
        return snap.to_dict() if snap.exists else None

    async def latest_unfinished_run(self) -> dict[str, Any] | None:
        query = self._db.collection(RUNS).order_by("startedAt", direction="DESCENDING").limit(20)
        with _storage_errors(RUNS):
            snaps = await query.get(timeout=self._timeout)
        return next((s.to_dict() or {} for s in snaps if not (s.to_dict() or {}).get("done")), None)

    async def save_run(self, report_id: str, checkpoint: Mapping[str, Any]) -> None:
        with _storage_errors(RUNS):
            await (
                self._db.collection(RUNS)
                .document(report_id)
                .set({**checkpoint, "updatedAt": dt.datetime.now(dt.UTC)}, timeout=self._timeout)
            )

    async def save_report(self, report_id: str, summary: Mapping[str, Any]) -> None:
        with _storage_errors(REPORTS):
            await self._db.collection(REPORTS).document(report_id).set(dict(summary), timeout=self._timeout)


class _Peek:
    """An async iterator of (uid, id, doc) with a one-item look-ahead, taken a uid at a time."""

    def __init__(self, items: AsyncIterator[tuple[str, str, dict[str, Any]]]) -> None:
        self._items = items
        self._next: tuple[str, str, dict[str, Any]] | None = None
        self._done = False

    async def head(self) -> tuple[str, str, dict[str, Any]] | None:
        if self._next is None and not self._done:
            try:
                self._next = await anext(self._items)
            except StopAsyncIteration:
                self._done = True
        return self._next

    async def take(self, uid: str) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        while (item := await self.head()) is not None and item[0] == uid:
            self._next = None
            yield item
