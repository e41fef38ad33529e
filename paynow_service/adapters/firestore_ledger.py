"""The points ledger on Firestore (SPEC 5): wallets, immutable entries and global ledgerKeys.

One transaction reads everything first (`read_phase`), then the pure rules decide and
`write_phase` buffers the writes; the event worker calls both inside its own
`run_transaction` next to its own reads and writes. `run_transaction` serialises work
per uid inside the process (Firestore locks pessimistically: concurrent transactions on
one wallet mostly abort each other), retries contention with jittered backoff, and turns
Google exceptions into domain errors, so nothing above this module sees a Google type.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud.firestore import AsyncClient, AsyncTransaction, async_transactional

from paynow_service.adapters.google_errors import TRANSIENT_GOOGLE_ERRORS
from paynow_service.adapters.ledger_documents import entry_document, wallet_fields
from paynow_service.adapters.ledger_listing import list_entries
from paynow_service.domain.errors import (
    ContentionError,
    DomainError,
    StorageUnavailableError,
)
from paynow_service.domain.ledger import Balance, EntryRequest, LedgerEntry, LedgerResult
from paynow_service.domain.ledger_reader import read_entry, read_wallet
from paynow_service.domain.ledger_rules import KeyRecord, LedgerState, ReadSet, plan, read_set, validate_uid

T = TypeVar("T")
# Every transient error but Aborted, which in a transaction is contention: retried here, not reported.
_UNAVAILABLE = tuple(e for e in TRANSIENT_GOOGLE_ERRORS if e is not gexc.Aborted)
_BACKOFF_BASE_S = 0.02
_BACKOFF_CAP_S = 1.0
_ROLLBACK_GRACE_S = 0.5


@dataclass(frozen=True)
class LedgerReads:
    """What `read_phase` read; `write_phase` needs nothing else."""

    state: LedgerState
    missing_users: frozenset[str]  # users/{uid} documents to create with the first write


class FirestoreLedger:
    """Applies ledger entries exactly once and reads balances and ledgers."""

    def __init__(
        self,
        db: AsyncClient,
        *,
        allow_negative_balance: bool = True,
        timeout_s: float = 10.0,
        max_attempts: int = 8,
        total_timeout_s: float | None = None,
    ) -> None:
        self._db = db
        self._allow_negative = allow_negative_balance
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._total_s = total_timeout_s if total_timeout_s is not None else 3 * timeout_s
        # One lock per uid while someone holds or awaits it; dropped when unused.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def apply(self, requests: Sequence[EntryRequest]) -> LedgerResult:
        """Apply the entries in one transaction of their own (all or nothing)."""
        needed = read_set(requests)  # invalid requests fail before any lock or call

        async def work(tx: AsyncTransaction) -> LedgerResult:
            reads = await self._read(tx, needed)
            return self.write_phase(tx, reads, requests)

        return await self.run_transaction(needed.uids, work)

    async def read_phase(self, tx: AsyncTransaction, requests: Sequence[EntryRequest]) -> LedgerReads:
        """Every read the requests need, in one batched call (call before any write of the transaction)."""
        return await self._read(tx, read_set(requests))

    async def _read(self, tx: AsyncTransaction, needed: ReadSet) -> LedgerReads:
        refs: dict[tuple[str, ...], Any] = {}
        for uid in needed.uids:
            refs[("user", uid)] = self._db.document("users", uid)
            refs[("wallet", uid)] = self._wallet_ref(uid)
        for key_id in needed.key_ids:
            refs[("key", key_id)] = self._db.document("ledgerKeys", key_id)
        for uid, entry_id in needed.entries:
            refs[("entry", uid, entry_id)] = self._entry_ref(uid, entry_id)
        by_path = {ref.path: name for name, ref in refs.items()}
        found: dict[tuple[str, ...], dict[str, Any]] = {}
        async for snap in self._db.get_all(list(refs.values()), transaction=tx, timeout=self._timeout_s):
            if snap.exists:
                found[by_path[snap.reference.path]] = snap.to_dict() or {}
        return LedgerReads(
            state=LedgerState(
                wallets={u: read_wallet(found.get(("wallet", u))) for u in needed.uids},
                keys={k: _key(k, found.get(("key", k))) for k in needed.key_ids},
                entries={(u, e): _entry(u, e, found.get(("entry", u, e))) for u, e in needed.entries},
            ),
            missing_users=frozenset(u for u in needed.uids if ("user", u) not in found),
        )

    def write_phase(
        self, tx: AsyncTransaction, reads: LedgerReads, requests: Sequence[EntryRequest]
    ) -> LedgerResult:
        """Decide with the pure rules and buffer the writes; a domain error means nothing is written."""
        now = datetime.now(UTC)
        planned = plan(requests, reads.state, now=now, allow_negative_balance=self._allow_negative)
        for uid in sorted(planned.changed_wallets):
            if uid in reads.missing_users:
                user = {"uid": uid, "createdAt": now, "updatedAt": now, "status": "active"}
                tx.create(self._db.document("users", uid), user)
            fields = wallet_fields(planned.wallets[uid], now)
            if reads.state.wallets[uid] is None:
                tx.create(self._wallet_ref(uid), {**fields, "createdAt": now, "v": 1})
            else:
                # The whole lot array, read in this transaction: the app's spend matches lots by id.
                tx.update(self._wallet_ref(uid), fields)
        for entry in planned.new_entries:
            tx.create(self._entry_ref(entry.uid, entry.entry_id), entry_document(entry))
        for key, request in planned.new_keys:
            key_doc = {"entryId": key.entry_id, "uid": key.uid, "amount": key.amount}
            key_doc |= {"requestHash": key.request_hash, "action": request.action, "createdAt": now, "v": 1}
            tx.create(self._db.document("ledgerKeys", key.entry_id), key_doc)
        return planned.result()

    async def run_transaction(
        self, uids: Collection[str], fn: Callable[[AsyncTransaction], Awaitable[T]]
    ) -> T:
        """Run `fn` in a fresh transaction per attempt, holding the uids' locks, retrying contention."""
        deadline = time.monotonic() + self._total_s
        async with contextlib.AsyncExitStack() as stack:
            for uid in sorted(set(uids)):  # one global order: no deadlock between batches
                lock = self._locks.get(uid)
                if lock is None:
                    lock = self._locks[uid] = asyncio.Lock()
                try:
                    async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                        await stack.enter_async_context(lock)
                except TimeoutError:
                    raise ContentionError(f"waited {self._total_s:.0f} s for the wallet lock") from None
            return await self._attempts(fn, deadline)

    async def _attempts(self, fn: Callable[[AsyncTransaction], Awaitable[T]], deadline: float) -> T:
        last: BaseException | None = None
        for attempt in range(self._max_attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # A fresh transaction and a single commit attempt: the retry policy is ours.
            transactional = async_transactional(fn)
            try:
                limit = min(self._timeout_s, remaining)
                return await _within(transactional(self._db.transaction(max_attempts=1)), limit)
            except DomainError:
                raise
            except Exception as exc:
                if isinstance(exc, _UNAVAILABLE):
                    raise _unavailable(exc) from exc
                if not _is_contention(exc):
                    raise  # a bug, not weather: let it surface as it is
                last = exc
            pause = random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt))  # noqa: S311
            await asyncio.sleep(min(pause, max(deadline - time.monotonic(), 0)))
        raise ContentionError(f"transaction still contended after {self._max_attempts} attempts") from last

    async def get_balance(self, uid: str) -> Balance:
        validate_uid(uid)
        try:
            async with asyncio.timeout(self._timeout_s):  # also bounds the client's own retries
                snap = await self._wallet_ref(uid).get(timeout=self._timeout_s)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        wallet = read_wallet(snap.to_dict() if snap.exists else None)
        return wallet.balance(datetime.now(UTC)) if wallet is not None else Balance()

    async def list_ledger(self, uid: str, page_size: int, page_token: str) -> tuple[list[LedgerEntry], str]:
        """A page of entries, newest first, every shape of the shared ledger; the token is opaque."""
        validate_uid(uid)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await list_entries(self._db, uid, page_size, page_token, timeout_s=self._timeout_s)
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    def _wallet_ref(self, uid: str) -> Any:
        return self._db.document("users", uid, "wallet", "points")

    def _entry_ref(self, uid: str, entry_id: str) -> Any:
        return self._db.document("users", uid, "ledger", entry_id)


async def _within(attempt: Awaitable[T], limit_s: float) -> T:
    """Await one transaction attempt for at most `limit_s`.

    The client takes no timeout for begin/commit/rollback, and after a cancellation
    `async_transactional` awaits a rollback that, with Firestore unreachable, waits for
    the client's default deadline (a minute). So the attempt runs as a task: cancelled at
    the limit, and cancelled again if its rollback outlives a short grace.
    """
    task = asyncio.ensure_future(attempt)
    try:
        done, _ = await asyncio.wait({task}, timeout=limit_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=_ROLLBACK_GRACE_S)
    if not done:
        task.cancel()
    task.add_done_callback(_consume)
    raise StorageUnavailableError(f"Firestore did not answer within {limit_s:g} s")


def _consume(task: asyncio.Future[Any]) -> None:
    # Retrieve the abandoned attempt's outcome so asyncio does not log it as lost.
    if not task.cancelled():
        task.exception()


def _is_contention(exc: BaseException) -> bool:
    """Aborted, a lock timeout, a commit that gave up, or a create that lost a race: worth another attempt."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if isinstance(current, gexc.Aborted | gexc.AlreadyExists) or "Transaction lock timeout" in text:
            return True
        if isinstance(current, ValueError) and text.startswith("Failed to commit transaction"):
            return True
        current = current.__cause__ or current.__context__
    return False


def _unavailable(exc: BaseException) -> StorageUnavailableError:
    return StorageUnavailableError(f"Firestore unavailable: {type(exc).__name__}")


def _key(entry_id: str, data: Mapping[str, Any] | None) -> KeyRecord | None:
    if data is None:
        return None
    return KeyRecord(
        entry_id, str(data.get("uid", "")), int(data.get("amount") or 0), data.get("requestHash")
    )


def _entry(uid: str, entry_id: str, data: Mapping[str, Any] | None) -> LedgerEntry | None:
    return None if data is None else read_entry(uid, entry_id, data)
