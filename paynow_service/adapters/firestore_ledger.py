"""The points ledger on Firestore (SPEC 5): wallets, immutable entries and global ledgerKeys.

One transaction reads everything first (`read_phase`), then the pure rules decide and
`write_phase` buffers the writes. `apply` runs both in a transaction of its own; the event
processor calls them inside its event's transaction, next to its own reads and writes.
Transactions run on the shared FirestoreTransactions (adapters/firestore_transactions.py),
whose per-key locks serialise work on one wallet, and Google exceptions leave as domain
errors, so nothing above this module sees a Google type.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.cloud.firestore import AsyncClient

from paynow_service.adapters.firestore_names import LEDGER, LEDGER_KEYS, USERS, WALLET, WALLET_DOC
from paynow_service.adapters.firestore_transactions import UNAVAILABLE, FirestoreTransactions, unavailable
from paynow_service.adapters.firestore_wire_transaction import WireTransaction
from paynow_service.adapters.ledger_documents import entry_document, wallet_fields
from paynow_service.adapters.ledger_listing import list_entries
from paynow_service.domain.ledger import Balance, EntryRequest, LedgerEntry, LedgerResult
from paynow_service.domain.ledger_reader import read_entry, read_wallet
from paynow_service.domain.ledger_rules import KeyRecord, LedgerState, ReadSet, plan, read_set, validate_uid


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
        transactions: FirestoreTransactions | None = None,
        allow_negative_balance: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        """`transactions`: the runner shared with the event processor (its locks are the wallets');
        without one, the ledger runs its own with `timeout_s` per attempt."""
        self._db = db
        self._transactions = transactions or FirestoreTransactions(db, timeout_s=timeout_s)
        self._allow_negative = allow_negative_balance
        self._timeout_s = timeout_s

    async def apply(self, requests: Sequence[EntryRequest]) -> LedgerResult:
        """Apply the entries in one transaction of their own (all or nothing)."""
        needed = read_set(requests)  # invalid requests fail before any lock or call

        async def work(tx: WireTransaction) -> LedgerResult:
            reads = await self._read(tx, needed)
            return self.write_phase(tx, reads, requests)

        return await self._transactions.run(needed.uids, work, begin_with_first_read=True)

    async def read_phase(self, tx: WireTransaction, requests: Sequence[EntryRequest]) -> LedgerReads:
        """Every read the requests need, in one batched call (call before any write of the transaction)."""
        return await self._read(tx, read_set(requests))

    async def _read(self, tx: WireTransaction, needed: ReadSet) -> LedgerReads:
        refs: dict[tuple[str, ...], Any] = {}
        for uid in needed.uids:
            refs[("user", uid)] = self._db.document(USERS, uid)
            refs[("wallet", uid)] = self._wallet_ref(uid)
        for key_id in needed.key_ids:
            refs[("key", key_id)] = self._db.document(LEDGER_KEYS, key_id)
        for uid, entry_id in needed.entries:
            refs[("entry", uid, entry_id)] = self._entry_ref(uid, entry_id)
        snaps = await tx.read_all(refs.values())
        found = {name: snap.to_dict() or {} for name, snap in zip(refs, snaps, strict=True) if snap.exists}
        return LedgerReads(
            state=LedgerState(
                wallets={u: read_wallet(found.get(("wallet", u))) for u in needed.uids},
                keys={k: _key(k, found.get(("key", k))) for k in needed.key_ids},
                entries={(u, e): _entry(u, e, found.get(("entry", u, e))) for u, e in needed.entries},
            ),
            missing_users=frozenset(u for u in needed.uids if ("user", u) not in found),
        )

    def write_phase(
        self, tx: WireTransaction, reads: LedgerReads, requests: Sequence[EntryRequest]
    ) -> LedgerResult:
        """Decide with the pure rules and buffer the writes; a domain error means nothing is written."""
        now = datetime.now(UTC)
        planned = plan(requests, reads.state, now=now, allow_negative_balance=self._allow_negative)
        for uid in sorted(planned.changed_wallets):
            if uid in reads.missing_users:
                user = {"uid": uid, "createdAt": now, "updatedAt": now, "status": "active"}
                tx.create(self._db.document(USERS, uid), user)
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
            tx.create(self._db.document(LEDGER_KEYS, key.entry_id), key_doc)
        return planned.result()

    async def get_balance(self, uid: str) -> Balance:
        validate_uid(uid)
        try:
            async with asyncio.timeout(self._timeout_s):  # also bounds the client's own retries
                snap = await self._wallet_ref(uid).get(timeout=self._timeout_s)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc
        wallet = read_wallet(snap.to_dict() if snap.exists else None)
        return wallet.balance(datetime.now(UTC)) if wallet is not None else Balance()

    async def list_ledger(self, uid: str, page_size: int, page_token: str) -> tuple[list[LedgerEntry], str]:
        """A page of entries, newest first, every shape of the shared ledger; the token is opaque."""
        validate_uid(uid)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await list_entries(self._db, uid, page_size, page_token, timeout_s=self._timeout_s)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    def _wallet_ref(self, uid: str) -> Any:
        return self._db.document(USERS, uid, WALLET, WALLET_DOC)

    def _entry_ref(self, uid: str, entry_id: str) -> Any:
        return self._db.document(USERS, uid, LEDGER, entry_id)


def _key(entry_id: str, data: Mapping[str, Any] | None) -> KeyRecord | None:
    if data is None:
        return None
    return KeyRecord(
        entry_id, str(data.get("uid", "")), int(data.get("amount") or 0), data.get("requestHash")
    )


def _entry(uid: str, entry_id: str, data: Mapping[str, Any] | None) -> LedgerEntry | None:
    return None if data is None else read_entry(uid, entry_id, data)
