"""An order as its refunds and disputes see it: what it credited and where they stand.

`OrderRecord` is `paynowOrders/{order_id}` once the order is credited (read by the Firestore
adapter, stepped by service/order_disputes.py); `order_fields` is its dispute state in the
fields that document stores, written by a decision and by `migrate orders` alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CreditedEntry:
    """One credit of an order, as recorded when the order was processed."""

    entry_id: str
    points: int
    product_id: str = ""


@dataclass(frozen=True)
class Dispute:
    status: str
    closed: bool = False


@dataclass(frozen=True)
class OrderRecord:
    """paynowOrders/{order_id}: what the order credited and where its refunds and disputes stand."""

    uid: str
    credits: tuple[CreditedEntry, ...] = ()
    cycles: tuple[CreditedEntry, ...] = ()  # credited cycles of the subscriptions its lines bought
    subscription_ids: tuple[str, ...] = ()
    order_id: str = ""
    generation: int = 0  # reversals of the order applied so far
    entry_reversals: Mapping[str, int] = field(default_factory=dict)  # entry id -> its reversals so far
    reversed: Mapping[str, int] = field(default_factory=dict)  # the last reversal: entry id -> points taken
    reversed_by: str = ""  # "refund:<id>" or "chargeback:<id>" while reversed, "" while credited
    refunds: Mapping[str, str] = field(default_factory=dict)  # refund id -> furthest status
    refund_amounts: Mapping[str, int] = field(default_factory=dict)  # refund id -> amount refunded (cents)
    chargebacks: Mapping[str, Dispute] = field(default_factory=dict)
    migrated_from: str = ""  # "app": an order the app credited before cut-over (`migrate orders`)

    @property
    def is_reversed(self) -> bool:
        return bool(self.reversed_by)

    @property
    def status(self) -> str:
        return "reversed" if self.is_reversed else ("recredited" if self.generation else "credited")


def order_fields(order: OrderRecord) -> dict[str, Any]:
    """The order's dispute state as stored in paynowOrders/{order_id}."""
    return {
        "generation": order.generation,
        "reversals": dict(order.entry_reversals),
        "reversed": [{"entryId": entry_id, "points": points} for entry_id, points in order.reversed.items()],
        "reversedBy": order.reversed_by,
        "status": order.status,
        "refunds": dict(order.refunds),
        "refundAmounts": dict(order.refund_amounts),
        "chargebacks": {k: {"status": d.status, "closed": d.closed} for k, d in order.chargebacks.items()},
    }


def credits_fields(credits: tuple[CreditedEntry, ...]) -> list[dict[str, Any]]:
    """An order's credits as stored in paynowOrders/{order_id}.credits."""
    return [{"entryId": c.entry_id, "points": c.points, "productId": c.product_id} for c in credits]
