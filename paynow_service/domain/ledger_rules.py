"""The ledger's rules as pure functions: no I/O, so they are the same in every transaction attempt.

A transaction reads what `read_set` names (wallets, `ledgerKeys`, and the ledger entries
the requests refer to), hands the snapshots over as a `LedgerState`, and `plan` decides:
which entries to write with which signed amounts and pre/post balances, which requests
are replays, which are conflicts (raised). Several requests may touch one wallet: they
apply in order on a running balance, and later requests see entries planned earlier.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paynow_service.domain.errors import EntryNotFoundError, InvalidRequestError, LedgerConflictError
from paynow_service.domain.ledger import (
    Balance,
    EntryOutcome,
    EntryRequest,
    LedgerEntry,
    LedgerResult,
    recredit_entry_id,
    reversal_entry_id,
)

MAX_ENTRY_ID_BYTES = 500
MAX_UID_CHARS = 128
INT64_MAX = 2**63 - 1
_ACTIONS = ("credit", "reversal")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KINDS = ("paid", "promo")


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

    wallets: Mapping[str, Balance | None]
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
    balances: Mapping[str, Balance]  # every uid named, after the batch
    changed_wallets: frozenset[str]

    def result(self) -> LedgerResult:
        return LedgerResult(outcomes=self.outcomes, balances=dict(self.balances))


def validate_uid(uid: object) -> str:
    if not isinstance(uid, str) or not uid.strip():
        raise InvalidRequestError("uid must be a non-empty string")
    if len(uid) > MAX_UID_CHARS:
        raise InvalidRequestError(f"uid is longer than {MAX_UID_CHARS} characters")
    _check_document_id("uid", uid)
    return uid


def validate_entry_id(entry_id: object, what: str = "entry id") -> str:
    if not isinstance(entry_id, str) or not entry_id.strip():
        raise InvalidRequestError(f"{what} must be a non-empty string")
    if len(entry_id.encode("utf-8")) > MAX_ENTRY_ID_BYTES:
        raise InvalidRequestError(f"{what} is longer than {MAX_ENTRY_ID_BYTES} bytes")
    _check_document_id(what, entry_id)
    return entry_id


def _check_document_id(what: str, value: str) -> None:
    # Firestore document ids: no '/', not '.' or '..', not __reserved__.
    if "/" in value or value in (".", "..") or (value.startswith("__") and value.endswith("__")):
        raise InvalidRequestError(f"{what} {value!r} cannot be a Firestore document id")
    if _CONTROL.search(value):
        raise InvalidRequestError(f"{what} contains control characters")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_request(request: EntryRequest) -> None:
    """Shape checks that need no stored state; InvalidRequestError on the first failure."""
    validate_entry_id(request.entry_id)
    validate_uid(request.uid)
    if request.action not in _ACTIONS:
        raise InvalidRequestError(f"action must be one of {_ACTIONS}")
    if request.kind not in _KINDS:
        raise InvalidRequestError(f"kind must be one of {_KINDS}")
    if not isinstance(request.source, str):
        raise InvalidRequestError("source must be a string")
    if not isinstance(request.metadata, Mapping) or not all(isinstance(k, str) for k in request.metadata):
        raise InvalidRequestError("metadata must be a mapping with string keys")
    amount = request.amount
    if amount is not None and (not _is_int(amount) or abs(amount) > INT64_MAX):
        raise InvalidRequestError("amount must be an int64 integer")
    if request.reversal_of is not None:
        validate_entry_id(request.reversal_of, "reversal_of")
    if request.action == "reversal":
        if request.reversal_of is None:
            raise InvalidRequestError("a reversal must name the entry it reverses (reversal_of)")
        # One id per original is what makes a reversal happen once.
        if request.entry_id != reversal_entry_id(request.reversal_of):
            raise InvalidRequestError(
                f"a reversal's entry id must be {reversal_entry_id(request.reversal_of)!r}"
            )
        if amount == 0:
            raise InvalidRequestError("a partial reversal must take back at least 1 point")
    elif request.reversal_of is not None:
        if request.entry_id != recredit_entry_id(request.reversal_of):
            raise InvalidRequestError(
                f"a re-credit's entry id must be {recredit_entry_id(request.reversal_of)!r}"
            )
        if amount is not None and amount <= 0:
            raise InvalidRequestError("a re-credit amount must be greater than zero")
    elif amount is None or amount <= 0:
        raise InvalidRequestError("a credit amount must be greater than zero")


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
        if request.action == "reversal" and request.reversal_of is not None:
            entries[(request.uid, request.reversal_of)] = None
        elif request.reversal_of is not None:
            entries[(request.uid, reversal_entry_id(request.reversal_of))] = None
    return ReadSet(uids=tuple(uids), key_ids=tuple(keys), entries=tuple(entries))


def plan(
    requests: Sequence[EntryRequest], state: LedgerState, *, now: datetime, allow_negative_balance: bool
) -> LedgerPlan:
    """Apply the requests in order to the state read; raise on the first conflict (all or nothing)."""
    needed = read_set(requests)
    _require_read(needed, state)
    running = {uid: _start(state.wallets[uid]) for uid in needed.uids}
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
        entry, shortfall = _new_entry(request, entries, running[request.uid], now, allow_negative_balance)
        running[request.uid][entry.kind] = entry.post
        entries[(request.uid, request.entry_id)] = entry
        key = KeyRecord(request.entry_id, request.uid, entry.amount, digest)
        keys[request.entry_id] = key
        new_entries.append(entry)
        new_keys.append((key, request))
        changed.add(request.uid)
        outcomes.append(EntryOutcome(entry=entry, replayed=False, shortfall=shortfall))
    balances = {}
    for uid in needed.uids:
        before = state.wallets[uid]
        updated = now if uid in changed else (before.updated_at if before else None)
        balances[uid] = Balance(paid=running[uid]["paid"], promo=running[uid]["promo"], updated_at=updated)
    return LedgerPlan(tuple(outcomes), tuple(new_entries), tuple(new_keys), balances, frozenset(changed))


def _require_read(needed: ReadSet, state: LedgerState) -> None:
    # A caller that forgot a read would silently treat a document as missing: refuse loudly.
    missing = [u for u in needed.uids if u not in state.wallets]
    missing += [k for k in needed.key_ids if k not in state.keys]
    missing += [f"{u}/{e}" for u, e in needed.entries if (u, e) not in state.entries]
    if missing:
        raise ValueError(f"ledger state lacks documents the requests need: {missing[:5]}")


def _start(wallet: Balance | None) -> dict[str, int]:
    return {"paid": wallet.paid, "promo": wallet.promo} if wallet else {"paid": 0, "promo": 0}


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
        # An entry without a key (written before ledgerKeys existed): compare with the entry itself.
        raise LedgerConflictError(f"entry id {entry_id!r} was already used with a different request")
    shortfall = existing.metadata.get("shortfall", 0)
    return EntryOutcome(entry=existing, replayed=True, shortfall=shortfall if _is_int(shortfall) else 0)


def _same_as_entry(request: EntryRequest, entry: LedgerEntry | None) -> bool:
    if entry is None or entry.action != request.action:
        return False
    if request.reversal_of is not None:
        # Derived amounts: the entry id already pins the original; a partial amount must match.
        asked = entry.metadata.get("requestedAmount", abs(entry.amount))
        return request.amount is None or abs(request.amount) == asked
    return entry.amount == request.amount and entry.kind == request.kind


def _new_entry(
    request: EntryRequest,
    entries: Mapping[tuple[str, str], LedgerEntry | None],
    balance: Mapping[str, int],
    now: datetime,
    allow_negative_balance: bool,
) -> tuple[LedgerEntry, int]:
    metadata: dict[str, Any] = dict(request.metadata)
    shortfall = 0
    if request.action == "reversal":
        assert request.reversal_of is not None  # validate_request guarantees it
        original = _require_entry(entries, request.uid, request.reversal_of, "entry to reverse")
        if original.action != "credit":
            raise InvalidRequestError(f"{request.reversal_of!r} is a reversal: only credits can be reversed")
        wanted = _bounded(request.amount, original.amount, "reverse")
        kind = original.kind
        taken = wanted if allow_negative_balance else min(wanted, max(balance[kind], 0))
        shortfall = wanted - taken
        amount = -taken
        metadata["reversalOf"] = request.reversal_of
        if shortfall:
            metadata.update(shortfall=shortfall, requestedAmount=wanted)
    elif request.reversal_of is not None:
        reversal = _require_entry(
            entries,
            request.uid,
            reversal_entry_id(request.reversal_of),
            f"reversal of {request.reversal_of!r}",
        )
        # What the reversal actually took back (less than asked when it stopped at zero).
        amount = _bounded(request.amount, -reversal.amount, "re-credit")
        kind = reversal.kind
        metadata["recreditOf"] = request.reversal_of
    else:
        assert request.amount is not None
        amount, kind = request.amount, request.kind
    pre = balance[kind]
    post = pre + amount
    if abs(post) > INT64_MAX:
        raise InvalidRequestError("the balance would leave the int64 range")
    entry = LedgerEntry(
        entry_id=request.entry_id,
        uid=request.uid,
        action=request.action,
        kind=kind,
        amount=amount,
        source=request.source,
        pre=pre,
        post=post,
        metadata=metadata,
        created_at=now,
        created_by=request.created_by,
    )
    return entry, shortfall


def _require_entry(
    entries: Mapping[tuple[str, str], LedgerEntry | None], uid: str, entry_id: str, what: str
) -> LedgerEntry:
    entry = entries.get((uid, entry_id))
    if entry is None:
        raise EntryNotFoundError(f"{what} {entry_id!r} does not exist for this user")
    return entry


def _bounded(requested: int | None, available: int, verb: str) -> int:
    """The full amount, or a smaller positive part of it (a partial refund)."""
    if requested is None:
        return available
    wanted = abs(requested)
    if wanted > available:
        raise InvalidRequestError(f"cannot {verb} {wanted} points: the entry holds {available}")
    return wanted
