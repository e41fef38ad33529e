"""Wallets and ledger entries as Firestore documents, in the shape the app that spends points reads.

The wallet is the app's: `paidBalance`, `promoBalance` (always the sum of every lot),
`promoLots` sorted by expiry. An entry carries what both of the app's readers use: the
points service's `type`, `channel`, `pre`/`post` maps and lots, and the ledger view's
`delta`, `after` and `note` (SPEC section 5).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from paynow_service.domain.ledger import LedgerEntry, LotMove, Points, Wallet


def wallet_fields(wallet: Wallet, now: datetime) -> dict[str, Any]:
    lots = [
        {
            "id": lot.lot_id,
            "amountRemaining": lot.amount_remaining,
            "expiresAt": lot.expires_at,
            "source": lot.source,
        }
        for lot in wallet.lots
    ]
    return {
        "paidBalance": wallet.paid,
        "promoBalance": wallet.lots_sum,
        "promoLots": lots + list(wallet.foreign_lots),
        "updatedAt": now,
    }


def entry_document(entry: LedgerEntry) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "uid": entry.uid,
        "amount": entry.amount,
        "type": entry.type,
        "channel": entry.channel,
        "action": entry.action,
        "actionId": entry.entry_id,
        "source": entry.source,
        "note": entry.note,
        "metadata": dict(entry.metadata),
        "createdAt": entry.created_at,
        "createdBy": entry.created_by,
        "v": 1,
    }
    for name, points in (
        ("pre", entry.pre),
        ("post", entry.post),
        ("after", entry.post),
        ("delta", entry.delta),
    ):
        if points is not None:
            doc[name] = _points(points)
    if entry.credit_lot is not None:
        doc["creditLot"] = _move(entry.credit_lot)
    if entry.consumed_lots:
        doc["consumedLots"] = [_move(move) for move in entry.consumed_lots]
    return doc


def _points(points: Points) -> dict[str, int]:
    return {"paid": points.paid, "promo": points.promo}


def _move(move: LotMove) -> dict[str, Any]:
    doc: dict[str, Any] = {"lotId": move.lot_id, "amount": move.amount}
    if move.expires_at is not None:
        doc["expiresAt"] = move.expires_at
    return doc
