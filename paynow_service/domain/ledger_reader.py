"""One tolerant reader for every wallet and ledger entry in the shared collections.

The ledger under users/{uid}/ledger has several writers: this service, the app's points
service (credits and spends), its wallet-ledger service (signed amounts, `status`, entries
changed in place), its old queue worker, its reconciliation, and whatever comes next. Every
reader of ours (ListLedger, reversals, the invariant checks) goes through `read_entry`,
which never raises: a field it cannot interpret is left out of the typed view and kept in
`unread`, and a shape it does not know is listed as `unknown` with what it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from paynow_service.domain.ids import as_kind
from paynow_service.domain.ledger import LedgerEntry, LotMove, Points, PromoLot, Wallet

EPOCH = datetime.fromtimestamp(0, UTC)

# The app's wallet-ledger entry kinds, and the one that moves promo points.
WALLET_LEDGER_KINDS = frozenset(
    {
        "purchase",
        "subscription_renewal",
        "refund",
        "chargeback",
        "admin_adjustment",
        "promo_credit",
        "reconcile_adjustment",
    }
)
# Fields every shape's typed view covers; anything else is kept in `unread`.
_READ = frozenset(
    {
        "uid",
        "amount",
        "type",
        "channel",
        "action",
        "actionId",
        "kind",
        "source",
        "metadata",
        "createdAt",
        "ts",
        "createdBy",
        "pre",
        "post",
        "after",
        "balanceAfter",
        "delta",
        "note",
        "reason",
        "status",
        "creditLot",
        "consumedLots",
        "currency",
        "v",
    }
)


def as_int(value: object) -> int | None:
    """An integer from a stored number (Firestore numbers may come back as floats), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def as_time(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


def as_points(value: object) -> Points | None:
    """A `{paid, promo}` map; a bare number is the paid balance (old entries of this service)."""
    if isinstance(value, Mapping):
        paid, promo = as_int(value.get("paid", 0)), as_int(value.get("promo", 0))
        if paid is None or promo is None:
            return None
        return Points(paid=paid, promo=promo)
    return None


def read_wallet(data: Mapping[str, Any] | None) -> Wallet | None:
    """A wallet document, whoever wrote it; None when it does not exist."""
    if data is None:
        return None
    lots: list[PromoLot] = []
    foreign: list[Any] = []
    for raw in _list(data.get("promoLots")):
        lot = _lot(raw)
        if lot is None:
            foreign.append(raw)  # kept verbatim: a lot is never dropped by a write of ours
        else:
            lots.append(lot)
    stored = as_int(data.get("promoBalance"))
    wallet = Wallet(
        paid=as_int(data.get("paidBalance")) or 0,
        lots=tuple(sorted(lots, key=lambda lot: lot.expires_at)),
        foreign_lots=tuple(foreign),
        updated_at=as_time(data.get("updatedAt")),
    )
    return replace(wallet, promo_stored=stored if stored is not None else wallet.lots_sum)


def read_entry(uid: str, entry_id: str, data: Mapping[str, Any]) -> LedgerEntry:
    """The typed view of one ledger document. Never raises."""
    kind = _text(data.get("kind"))
    if data.get("action") in ("credit", "reversal") and isinstance(data.get("pre"), int | float):
        shape = "service_v0"  # this service before lots: kind, signed amount, integer pre/post
    elif isinstance(data.get("delta"), Mapping) and data.get("type") in ("credit", "debit"):
        shape = "service"
    elif data.get("type") in ("credit", "debit"):
        shape = "app_points"
    elif kind == "reconcile_adjustment":
        shape = "app_reconcile"
    elif kind in WALLET_LEDGER_KINDS:
        shape = "app_wallet_ledger"
    elif data.get("action") == "credit" and isinstance(data.get("pre"), Mapping):
        shape = "app_queue_worker"
    else:
        shape = "unknown"
    stored = as_int(data.get("amount"))
    amount = stored or 0
    pre, post = as_points(data.get("pre")), as_points(data.get("post") or data.get("after"))
    entry_type = _text(data.get("type")) if data.get("type") in ("credit", "debit") else ""
    channel: str = as_kind(data.get("channel")) or ""
    if shape == "app_points" and entry_type == "debit":
        amount = -abs(amount)  # the app's spends store a positive cost
    elif shape == "service_v0":
        pre = _v0_points(data.get("pre"), kind)
        post = _v0_points(data.get("post"), kind)
        entry_type = "credit" if amount > 0 else "debit"
        channel = "promo" if kind == "promo" else "paid"
    elif shape in ("app_wallet_ledger", "app_reconcile", "app_queue_worker", "unknown") and not entry_type:
        entry_type = "credit" if amount > 0 else "debit" if amount < 0 else ""
        channel = channel or ("promo" if kind in ("promo_credit", "promo") else "paid" if stored else "")
    unread = {k: v for k, v in data.items() if k not in _READ}
    for name in ("amount", "createdAt"):
        if name in data and (as_int(data[name]) if name == "amount" else as_time(data[name])) is None:
            unread[name] = data[name]
    source = data.get("source")
    metadata = data.get("metadata")
    return LedgerEntry(
        entry_id=entry_id,
        uid=uid,
        amount=amount,
        type=entry_type,
        channel=channel,
        action=_text(data.get("action")) or kind,
        source=source if isinstance(source, str) else _text(_get(source, "reason")),
        metadata=dict(metadata) if isinstance(metadata, Mapping) else _source_ids(source),
        created_at=as_time(data.get("createdAt")) or as_time(data.get("ts")) or EPOCH,
        created_by=_text(data.get("createdBy")),
        pre=pre,
        post=post,
        delta=as_points(data.get("delta")),
        note=_text(data.get("note")) or _text(data.get("reason")),
        status=_text(data.get("status")),
        credit_lot=_move(data.get("creditLot")),
        consumed_lots=tuple(m for m in (_move(raw) for raw in _list(data.get("consumedLots"))) if m),
        shape=shape,
        unread=unread,
    )


def _v0_points(value: object, kind: object) -> Points | None:
    number = as_int(value)
    if number is None:
        return None
    return Points(promo=number) if kind == "promo" else Points(paid=number)


def _source_ids(source: object) -> dict[str, Any]:
    # The app's wallet-ledger keeps its ids in `source`: eventId (the PayNow order id), orderId ...
    if not isinstance(source, Mapping):
        return {}
    return {k: v for k, v in source.items() if isinstance(k, str) and isinstance(v, str | int)}


def _lot(raw: object) -> PromoLot | None:
    if not isinstance(raw, Mapping):
        return None
    amount, expires = as_int(raw.get("amountRemaining")), as_time(raw.get("expiresAt"))
    if amount is None or expires is None:
        return None
    return PromoLot(str(raw.get("id", "")), amount, expires, _text(raw.get("source")))


def _move(raw: object) -> LotMove | None:
    if not isinstance(raw, Mapping):
        return None
    lot_id = raw.get("lotId", raw.get("id"))
    amount = as_int(raw.get("amount", raw.get("amountRemaining")))
    if not isinstance(lot_id, str) or amount is None:
        return None
    return LotMove(lot_id, amount, as_time(raw.get("expiresAt")))


def _get(value: object, key: str) -> object:
    return value.get(key) if isinstance(value, Mapping) else None


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
