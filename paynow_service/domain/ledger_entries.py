"""How one ledger request becomes one entry: its signed amount, lots and pre/post balances.

`new_entry` moves the points on the running wallet (domain/wallet_moves.py) and describes
the move as a `LedgerEntry`. A credit adds paid points or a promo lot; a reversal takes its
original's points back (`rev{n}:`), a re-credit gives back what reversal n took (`recredit{n}:`).
The request was validated and every document it refers to read (domain/ledger_rules.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from paynow_service.domain.errors import EntryNotFoundError, InvalidRequestError
from paynow_service.domain.ids import INT64_MAX
from paynow_service.domain.ledger import (
    ACTION_RECREDIT,
    ACTION_REVERSAL,
    DEFAULT_PROMO_DAYS,
    EntryRequest,
    LedgerEntry,
    LotMove,
    Points,
    PromoLot,
    recredit_entry_id,
    reversal_entry_id,
)
from paynow_service.domain.wallet_moves import RunningWallet

Entries = Mapping[tuple[str, str], LedgerEntry | None]  # by (uid, entry_id)


@dataclass(frozen=True)
class _Move:
    """What one request did to the wallet, before it is written down as an entry."""

    delta: Points
    label: str
    note: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    credit_lot: LotMove | None = None
    consumed: tuple[LotMove, ...] = ()
    shortfall: int = 0


def new_entry(
    request: EntryRequest,
    entries: Entries,
    wallet: RunningWallet,
    now: datetime,
    allow_negative_balance: bool,
) -> tuple[LedgerEntry, int]:
    """The entry `request` writes and the points a reversal could not take back (its shortfall)."""
    pre = wallet.stored()
    if request.action == "reversal":
        move = _reverse(request, entries, wallet, now, allow_negative_balance)
    elif request.reversal_of is not None:
        move = _recredit(request, entries, wallet, now)
    else:
        move = _credit(request, wallet)
    post = wallet.stored()
    if max(abs(post.paid), abs(post.promo)) > INT64_MAX:
        raise InvalidRequestError("the balance would leave the int64 range")
    label = request.label or move.label
    entry = LedgerEntry(
        entry_id=request.entry_id,
        uid=request.uid,
        amount=move.delta.total,
        type="debit" if request.action == "reversal" else "credit",
        channel="paid" if move.delta.paid else "promo",
        action=label,
        source=request.source,
        metadata={**request.metadata, **move.metadata},
        created_at=now,
        created_by=request.created_by,
        pre=pre,
        post=post,
        delta=move.delta,
        note=request.note or move.note or label,
        credit_lot=move.credit_lot,
        consumed_lots=move.consumed,
    )
    return entry, move.shortfall


def _reverse(
    request: EntryRequest, entries: Entries, wallet: RunningWallet, now: datetime, allow_negative: bool
) -> _Move:
    original_id = request.reversal_of
    assert original_id is not None  # validate_request guarantees it
    original = require_entry(entries, request.uid, original_id, "entry to reverse")
    if not original.is_credit or original.is_reversal:
        raise InvalidRequestError(f"{original_id!r} is not a credit: only credits can be reversed")
    own_lot = _lot_of(original).lot_id
    if request.generation > 1:
        previous = recredit_entry_id(original_id, request.generation - 1)
        recredit = require_entry(entries, request.uid, previous, f"re-credit {previous!r}")
        own_lot = recredit.credit_lot.lot_id if recredit.credit_lot else own_lot
    # Every reversal was re-credited before the next: each generation can take the whole original.
    wanted = _bounded(request.amount, original.amount, "reverse")
    taken, consumed, shortfall = wallet.take(
        wanted,
        own_lot=own_lot if original.kind == "promo" else None,
        paid_first=original.kind == "paid",
        now=now,
        allow_negative=allow_negative,
    )
    metadata: dict[str, Any] = {"reversalOf": original_id}
    if shortfall:
        metadata.update(shortfall=shortfall, requestedAmount=wanted)
    return _Move(
        delta=Points(paid=-taken.paid, promo=-taken.promo),
        label=ACTION_REVERSAL,
        note=f"reversal of {original_id}",
        metadata=metadata,
        consumed=consumed,
        shortfall=shortfall,
    )


def _recredit(request: EntryRequest, entries: Entries, wallet: RunningWallet, now: datetime) -> _Move:
    original_id = request.reversal_of
    assert original_id is not None  # new_entry's caller checked it
    reversal_id = reversal_entry_id(original_id, request.generation)
    reversal = require_entry(entries, request.uid, reversal_id, f"reversal {reversal_id!r}")
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
    credit_lot: LotMove | None = None
    if delta.promo:
        expires = _recredit_expiry(entries.get((request.uid, original_id)), reversal, now)
        credit_lot = LotMove(request.entry_id, delta.promo, expires)
        wallet.add_lot(PromoLot(request.entry_id, delta.promo, expires, request.source))
    return _Move(
        delta=delta,
        label=ACTION_RECREDIT,
        note=f"re-credit of {original_id}",
        metadata={"recreditOf": original_id},
        credit_lot=credit_lot,
    )


def _credit(request: EntryRequest, wallet: RunningWallet) -> _Move:
    assert request.amount is not None
    if request.kind != "promo":
        wallet.add_paid(request.amount)
        return _Move(delta=Points(paid=request.amount), label="credit", note="")
    assert request.expires_at is not None  # validate_request guarantees it
    wallet.add_lot(PromoLot(request.entry_id, request.amount, request.expires_at, request.source))
    return _Move(
        delta=Points(promo=request.amount),
        label="credit",
        note="",
        credit_lot=LotMove(request.entry_id, request.amount, request.expires_at),
    )


def _lot_of(credit: LedgerEntry) -> LotMove:
    """The lot a promo credit added (its `creditLot`, or by convention the lot named after it)."""
    return credit.credit_lot or LotMove(credit.entry_id, credit.amount)


def _recredit_expiry(original: LedgerEntry | None, reversal: LedgerEntry, now: datetime) -> datetime:
    """The original expiry: the credit's own lot's, else the latest of the lots the reversal emptied."""
    if original is not None and original.credit_lot is not None and original.credit_lot.expires_at:
        return original.credit_lot.expires_at
    expiries = [move.expires_at for move in reversal.consumed_lots if move.expires_at is not None]
    return max(expiries) if expiries else now + timedelta(days=DEFAULT_PROMO_DAYS)


def require_entry(entries: Entries, uid: str, entry_id: str, what: str) -> LedgerEntry:
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
