"""The app's ledger entries read for `migrate orders`, and the `paynowOrders` documents it writes.

`AppLedgerScan` streams every `users/{uid}/ledger/{id}` document with one collection-group
query over `ledger`, ordered by document name and paged (`start_after` the page's last
snapshot): entries arrive grouped by their user, and only one page is held at a time.
Documents of other `ledger` collections are skipped and counted: the app's legacy
top-level `ledger/{userId}/**`, and any deeper subcollection of that name.

`MigratedOrders` reads the existing documents (dry run) and writes one order per
transaction (adapters/firestore_transactions.py): it reads the document, classifies again
against what is there (so two concurrent runs cannot both write, and a re-run writes
nothing), then writes.

Google errors become domain errors (StorageUnavailableError, ContentionError): nothing
above this module sees a Google type.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from paynow_service.adapters.firestore_names import LEDGER, ORDERS, user_document
from paynow_service.adapters.firestore_transactions import FirestoreTransactions
from paynow_service.domain.app_orders import OrderCandidate
from paynow_service.domain.errors import StorageUnavailableError
from paynow_service.domain.migrated_orders import Verdict, classify, order_document

DEFAULT_PAGE_SIZE = 500
_READ_CHUNK = 300  # document references per batched read


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    """Firestore's failures as the domain's, named after what was being done."""
    try:
        yield
    except (gexc.GoogleAPIError, TimeoutError) as err:
        raise StorageUnavailableError(f"{what}: {type(err).__name__}: {_short(err)}") from err


def _short(err: BaseException) -> str:
    return str(err).splitlines()[0][:200] if str(err) else "no detail"


def user_entry_path(path: str) -> tuple[str, str] | None:
    """(uid, entry id) of a `users/{uid}/ledger/{id}` path; None for any other `ledger` document."""
    return user_document(path, LEDGER)


class AppLedgerScan:
    """Every users/{uid}/ledger entry, grouped by user, one page in memory at a time."""

    def __init__(self, db: firestore.AsyncClient, *, page_size: int, timeout_s: float) -> None:
        self._db = db
        self._page_size = page_size
        self._timeout = timeout_s
        self.other_documents = 0  # `ledger` documents outside users/{uid}/ledger (skipped)

    async def entries(self) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        """(uid, entry id, document) in document-name order, so one user's entries come together."""
        query = self._db.collection_group(LEDGER).order_by(FieldPath.document_id()).limit(self._page_size)
        last: Any = None
        while True:
            page = await self._page(query if last is None else query.start_after(last))
            for snap in page:
                where = user_entry_path(snap.reference.path)
                if where is None:
                    self.other_documents += 1
                    continue
                yield where[0], where[1], snap.to_dict() or {}
            if len(page) < self._page_size:
                return
            last = page[-1]

    async def _page(self, query: Any) -> list[Any]:
        with _storage_errors("reading the ledger entries"):
            async with asyncio.timeout(self._timeout):
                snaps: list[Any] = await query.get(timeout=self._timeout)
                return snaps


class MigratedOrders:
    """paynowOrders documents: read as they are, and written one order per transaction."""

    def __init__(self, db: firestore.AsyncClient, *, timeout_s: float) -> None:
        self._db = db
        self._timeout = timeout_s
        self._transactions = FirestoreTransactions(db, timeout_s=timeout_s)

    async def existing(self, order_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """The current document of each order (None: none), in batched reads."""
        found: dict[str, dict[str, Any] | None] = dict.fromkeys(order_ids)
        ids = list(found)
        for start in range(0, len(ids), _READ_CHUNK):
            refs = [self._db.collection(ORDERS).document(i) for i in ids[start : start + _READ_CHUNK]]
            with _storage_errors("reading paynowOrders"):
                async with asyncio.timeout(self._timeout):
                    async for snap in self._db.get_all(refs, timeout=self._timeout):
                        if snap.exists:
                            found[snap.id] = snap.to_dict() or {}
        return found

    async def migrate(self, candidate: OrderCandidate, *, other_uid: str = "") -> Verdict:
        """Classify the order against its document as read in the transaction; write it if so decided."""
        ref = self._db.collection(ORDERS).document(candidate.order_id)

        async def work(tx: firestore.AsyncTransaction) -> Verdict:
            snap = await ref.get(transaction=tx, timeout=self._timeout)
            verdict = classify(candidate, snap.to_dict() if snap.exists else None, other_uid=other_uid)
            if verdict.action == "write":
                stamps = {"migratedAt": firestore.SERVER_TIMESTAMP, "updatedAt": firestore.SERVER_TIMESTAMP}
                tx.set(ref, {**order_document(candidate), **stamps}, merge=verdict.merge)
            return verdict

        with _storage_errors(f"writing paynowOrders/{candidate.order_id}"):
            return await self._transactions.run((), work)
