"""The ledger's rules as pure functions: no I/O, so they are the same in every transaction attempt.

A transaction reads what `read_set` names (wallets, `ledgerKeys`, and the ledger entries
the requests refer to), hands the snapshots over as a `LedgerState`, and `plan` decides:
which entries to write with which signed amounts and pre/post balances, which requests
are replays, which are conflicts (raised). Several requests may touch one wallet: they
apply in order on a running balance, and later requests see entries planned earlier.
Shape checks live in domain/ledger_validation.py, the making of one entry in
domain/ledger_entries.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from paynow_service.domain.errors import InvalidRequestError, LedgerConflictError
from paynow_service.domain.ledger import (
    PAYNOW_NAMESPACE,
    Balance,
    EntryOutcome,
    EntryRequest,
    LedgerEntry,
    LedgerResult,
    Wallet,
    recredit_entry_id,
    reversal_entry_id,
)
from paynow_service.domain.ledger_entries import new_entry
from paynow_service.domain.ledger_reader import as_int
from paynow_service.domain.ledger_validation import validate_entry_id, validate_request, validate_uid
from paynow_service.domain.wallet_moves import RunningWallet

__all__ = [
    "KeyRecord",
    "LedgerPlan",
    "LedgerState",
    "ReadSet",
    "plan",
    "read_set",
    "request_hash",
    "validate_entry_id",
    "validate_uid",
]


@dataclass(frozen=True)
class KeyRecord:
    """A `ledgerKeys/{entry_id}` document: it makes an entry id global across users."""

    entry_id: str
    uid: str
    amount: int  # the signed amount that was applied
    request_hash: str | None  # None for keys written before hashes existed


@dataclass(frozen=True)
class LedgerState:
    """Every document `read_set` names, as read in the transaction (None: it does not exist)."""

    wallets: Mapping[str, Wallet | None]
    keys: Mapping[str, KeyRecord | None]
    entries: Mapping[tuple[str, str], LedgerEntry | None]  # by (uid, entry_id)


@dataclass(frozen=True)
class ReadSet:
    """The documents a batch of requests depends on."""

    uids: tuple[str, ...]
    key_ids: tuple[str, ...]
    entries: tuple[tuple[str, str], ...]  # (uid, entry_id)


@dataclass(frozen=True)
class LedgerPlan:
    """What the transaction must write, and what it answers."""

    outcomes: tuple[EntryOutcome, ...]
    new_entries: tuple[LedgerEntry, ...]
    new_keys: tuple[tuple[KeyRecord, EntryRequest], ...]
    wallets: Mapping[str, Wallet]  # every uid named, after the batch
    balances: Mapping[str, Balance]  # the same wallets' balances at the batch's time
    changed_wallets: frozenset[str]

    def result(self) -> LedgerResult:
        return LedgerResult(outcomes=self.outcomes, balances=dict(self.balances))


def request_hash(request: EntryRequest) -> str:
    """SHA-256 of the normalized request: what makes a retry 'the same request'.

    Source and metadata are left out on purpose: a refund and a chargeback may both ask
    for the same full reversal, with different event ids, and that is one reversal.
    Reversals and re-credits take their kind from the entry they undo.
    """
    derived = request.reversal_of is not None
    normalized = {
        "v": 1,
        "entryId": request.entry_id,
        "uid": request.uid,
        "action": request.action,
        "kind": None if derived else request.kind,
        "amount": None if request.amount is None else abs(request.amount),
        "reversalOf": request.reversal_of,
    }
    # A caller's promo expiry is part of its request. A PayNow entry's expiry is dated from the
    # delivery's timestamp, which each redelivery changes: its entry id already pins the event.
    if request.expires_at is not None and not request.entry_id.startswith(PAYNOW_NAMESPACE):
        normalized["expiresAt"] = request.expires_at.isoformat(timespec="microseconds")
    canonical = json.dumps(normalized, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_set(requests: Sequence[EntryRequest]) -> ReadSet:
    """Validate the requests and name every document the rules will look at."""
    if not requests:
        raise InvalidRequestError("no ledger entries requested")
    uids: dict[str, None] = {}
    keys: dict[str, None] = {}
    entries: dict[tuple[str, str], None] = {}
    for request in requests:
        validate_request(request)
        uids[request.uid] = None
        keys[request.entry_id] = None
        entries[(request.uid, request.entry_id)] = None  # the original, on a replay
        original, generation = request.reversal_of, request.generation
        if request.action == "reversal" and original is not None:
            entries[(request.uid, original)] = None
            if generation > 1:  # reversal n needs re-credit n-1, whose lot holds the points now
                entries[(request.uid, recredit_entry_id(original, generation - 1))] = None
        elif original is not None:
            entries[(request.uid, reversal_entry_id(original, generation))] = None
            entries[(request.uid, original)] = None  # its lot's expiry, for the promo part
    return ReadSet(uids=tuple(uids), key_ids=tuple(keys), entries=tuple(entries))


def plan(
    requests: Sequence[EntryRequest], state: LedgerState, *, now: datetime, allow_negative_balance: bool
) -> LedgerPlan:
    """Apply the requests in order to the state read; raise on the first conflict (all or nothing)."""
    needed = read_set(requests)
    _require_read(needed, state)
    running = {uid: RunningWallet.of(state.wallets[uid]) for uid in needed.uids}
    keys: dict[str, KeyRecord | None] = dict(state.keys)
    entries: dict[tuple[str, str], LedgerEntry | None] = dict(state.entries)
    outcomes: list[EntryOutcome] = []
    new_entries: list[LedgerEntry] = []
    new_keys: list[tuple[KeyRecord, EntryRequest]] = []
    changed: set[str] = set()
    for request in requests:
        digest = request_hash(request)
        existing = entries.get((request.uid, request.entry_id))
        replay = _replay(request, digest, keys.get(request.entry_id), existing)
        if replay is not None:
            outcomes.append(replay)
            continue
        entry, shortfall = new_entry(request, entries, running[request.uid], now, allow_negative_balance)
        entries[(request.uid, request.entry_id)] = entry
        key = KeyRecord(request.entry_id, request.uid, entry.amount, digest)
        keys[request.entry_id] = key
        new_entries.append(entry)
        new_keys.append((key, request))
        changed.add(request.uid)
        outcomes.append(EntryOutcome(entry=entry, replayed=False, shortfall=shortfall))
    wallets = {uid: running[uid].frozen(now if uid in changed else None) for uid in needed.uids}
    return LedgerPlan(
        outcomes=tuple(outcomes),
        new_entries=tuple(new_entries),
        new_keys=tuple(new_keys),
        wallets=wallets,
        balances={uid: wallet.balance(now) for uid, wallet in wallets.items()},
        changed_wallets=frozenset(changed),
    )


def _require_read(needed: ReadSet, state: LedgerState) -> None:
    # A caller that forgot a read would silently treat a document as missing: refuse loudly.
    missing = [u for u in needed.uids if u not in state.wallets]
    missing += [k for k in needed.key_ids if k not in state.keys]
    missing += [f"{u}/{e}" for u, e in needed.entries if (u, e) not in state.entries]
    if missing:
        raise ValueError(f"ledger state lacks documents the requests need: {missing[:5]}")


def _replay(
    request: EntryRequest, digest: str, key: KeyRecord | None, existing: LedgerEntry | None
) -> EntryOutcome | None:
    """The original outcome when the id was already applied with the same request; raise if not the same."""
    entry_id = request.entry_id
    if key is not None:
        if key.uid != request.uid:
            raise LedgerConflictError(f"entry id {entry_id!r} was already used for another user")
        same = key.request_hash == digest if key.request_hash else _same_as_entry(request, existing)
        if not same:
            raise LedgerConflictError(f"entry id {entry_id!r} was already used with a different request")
        if existing is None:
            raise LedgerConflictError(f"ledgerKeys/{entry_id} exists without its ledger entry")
    elif existing is None:
        return None
    elif not _same_as_entry(request, existing):
        # An entry without a key (written before ledgerKeys existed, or by the app): compare with it.
        raise LedgerConflictError(f"entry id {entry_id!r} was already used with a different request")
    shortfall = as_int(existing.metadata.get("shortfall")) or 0
    return EntryOutcome(entry=existing, replayed=True, shortfall=shortfall)


def _same_as_entry(request: EntryRequest, entry: LedgerEntry | None) -> bool:
    if entry is None or entry.type != ("debit" if request.action == "reversal" else "credit"):
        return False
    if request.reversal_of is not None:
        # Derived amounts: the entry id already pins the original; a partial amount must match.
        asked = as_int(entry.metadata.get("requestedAmount")) or abs(entry.amount)
        return request.amount is None or abs(request.amount) == asked
    return entry.amount == request.amount and entry.kind == request.kind
