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
from datetime import datetime, timedelta
from typing import Any

from paynow_service.domain.errors import EntryNotFoundError, InvalidRequestError, LedgerConflictError
from paynow_service.domain.ledger import (
    ACTION_RECREDIT,
    ACTION_REVERSAL,
    DEFAULT_PROMO_DAYS,
    PAYNOW_NAMESPACE,
    Balance,
    EntryOutcome,
    EntryRequest,
    LedgerEntry,
    LedgerResult,
    LotMove,
    Points,
    PromoLot,
    Wallet,
    recredit_entry_id,
    reversal_entry_id,
)
from paynow_service.domain.ledger_reader import as_int
from paynow_service.domain.wallet_moves import RunningWallet

MAX_ENTRY_ID_BYTES = 500
MAX_UID_CHARS = 128
INT64_MAX = 2**63 - 1
MAX_GENERATION = 1000
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
    promo_credit = request.action == "credit" and request.reversal_of is None and request.kind == "promo"
    if promo_credit and request.expires_at is None:
        raise InvalidRequestError("a promo credit needs an expiry (expires_at): its points go into a lot")
    if request.expires_at is not None and not promo_credit:
        raise InvalidRequestError("only a promo credit takes an expiry (expires_at)")
    if request.expires_at is not None and request.expires_at.tzinfo is None:
        raise InvalidRequestError("expires_at must carry a time zone")
    generation = request.generation
    if (
        isinstance(generation, bool)
        or not isinstance(generation, int)
        or not 1 <= generation <= MAX_GENERATION
    ):
        raise InvalidRequestError(f"generation must be from 1 to {MAX_GENERATION}")
    if request.reversal_of is None and generation != 1:
        raise InvalidRequestError("only reversals and re-credits have generations")
    if request.action == "reversal":
        if request.reversal_of is None:
            raise InvalidRequestError("a reversal must name the entry it reverses (reversal_of)")
        # One id per original and generation is what makes a reversal happen once.
        if request.entry_id != reversal_entry_id(request.reversal_of, generation):
            raise InvalidRequestError(
                f"a reversal's entry id must be {reversal_entry_id(request.reversal_of, generation)!r}"
            )
        if amount == 0:
            raise InvalidRequestError("a partial reversal must take back at least 1 point")
    elif request.reversal_of is not None:
        if request.entry_id != recredit_entry_id(request.reversal_of, generation):
            raise InvalidRequestError(
                f"a re-credit's entry id must be {recredit_entry_id(request.reversal_of, generation)!r}"
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
        entry, shortfall = _new_entry(request, entries, running[request.uid], now, allow_negative_balance)
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


def _new_entry(
    request: EntryRequest,
    entries: Mapping[tuple[str, str], LedgerEntry | None],
    wallet: RunningWallet,
    now: datetime,
    allow_negative_balance: bool,
) -> tuple[LedgerEntry, int]:
    metadata: dict[str, Any] = dict(request.metadata)
    pre = wallet.stored()
    shortfall = 0
    credit_lot: LotMove | None = None
    consumed: tuple[LotMove, ...] = ()
    if request.action == "reversal":
        assert request.reversal_of is not None  # validate_request guarantees it
        original = _require_entry(entries, request.uid, request.reversal_of, "entry to reverse")
        if not original.is_credit or original.is_reversal:
            raise InvalidRequestError(
                f"{request.reversal_of!r} is not a credit: only credits can be reversed"
            )
        own_lot = _lot_of(original).lot_id
        if request.generation > 1:
            previous = recredit_entry_id(request.reversal_of, request.generation - 1)
            recredit = _require_entry(entries, request.uid, previous, f"re-credit {previous!r}")
            own_lot = recredit.credit_lot.lot_id if recredit.credit_lot else own_lot
        # Every reversal was re-credited before the next: each generation can take the whole original.
        wanted = _bounded(request.amount, original.amount, "reverse")
        taken, consumed, shortfall = wallet.take(
            wanted,
            own_lot=own_lot if original.kind == "promo" else None,
            paid_first=original.kind == "paid",
            now=now,
            allow_negative=allow_negative_balance,
        )
        delta = Points(paid=-taken.paid, promo=-taken.promo)
        metadata["reversalOf"] = request.reversal_of
        if shortfall:
            metadata.update(shortfall=shortfall, requestedAmount=wanted)
        label, note = ACTION_REVERSAL, f"reversal of {request.reversal_of}"
    elif request.reversal_of is not None:
        reversal_id = reversal_entry_id(request.reversal_of, request.generation)
        reversal = _require_entry(entries, request.uid, reversal_id, f"reversal {reversal_id!r}")
        # What the reversal actually took back (less than asked when it stopped at zero).
        taken_back = (
            Points(paid=-reversal.delta.paid, promo=-reversal.delta.promo)
            if reversal.delta is not None
            else Points(promo=-reversal.amount)
            if reversal.kind == "promo"
            else Points(paid=-reversal.amount)
        )
        amount = _bounded(request.amount, -reversal.amount, "re-credit")
        paid_part = min(max(taken_back.paid, 0), amount)  # a partial re-credit gives paid back first
        delta = Points(paid=paid_part, promo=amount - paid_part)
        wallet.add_paid(delta.paid)
        if delta.promo:
            expires = _recredit_expiry(entries.get((request.uid, request.reversal_of)), reversal, now)
            credit_lot = LotMove(request.entry_id, delta.promo, expires)
            wallet.add_lot(PromoLot(request.entry_id, delta.promo, expires, request.source))
        metadata["recreditOf"] = request.reversal_of
        label, note = ACTION_RECREDIT, f"re-credit of {request.reversal_of}"
    else:
        assert request.amount is not None
        if request.kind == "promo":
            assert request.expires_at is not None  # validate_request guarantees it
            delta = Points(promo=request.amount)
            credit_lot = LotMove(request.entry_id, request.amount, request.expires_at)
            wallet.add_lot(PromoLot(request.entry_id, request.amount, request.expires_at, request.source))
        else:
            delta = Points(paid=request.amount)
            wallet.add_paid(request.amount)
        label, note = "credit", ""
    post = wallet.stored()
    if max(abs(post.paid), abs(post.promo)) > INT64_MAX:
        raise InvalidRequestError("the balance would leave the int64 range")
    label = request.label or label
    entry = LedgerEntry(
        entry_id=request.entry_id,
        uid=request.uid,
        amount=delta.total,
        type="debit" if request.action == "reversal" else "credit",
        channel="paid" if delta.paid else "promo",
        action=label,
        source=request.source,
        metadata=metadata,
        created_at=now,
        created_by=request.created_by,
        pre=pre,
        post=post,
        delta=delta,
        note=request.note or note or label,
        credit_lot=credit_lot,
        consumed_lots=consumed,
    )
    return entry, shortfall


def _lot_of(credit: LedgerEntry) -> LotMove:
    """The lot a promo credit added (its `creditLot`, or by convention the lot named after it)."""
    return credit.credit_lot or LotMove(credit.entry_id, credit.amount)


def _recredit_expiry(original: LedgerEntry | None, reversal: LedgerEntry, now: datetime) -> datetime:
    """The original expiry: the credit's own lot's, else the latest of the lots the reversal emptied."""
    if original is not None and original.credit_lot is not None and original.credit_lot.expires_at:
        return original.credit_lot.expires_at
    expiries = [move.expires_at for move in reversal.consumed_lots if move.expires_at is not None]
    return max(expiries) if expiries else now + timedelta(days=DEFAULT_PROMO_DAYS)


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
