"""The app's ledger entries that credited orders before cut-over, grouped into orders (pure).

Refunds and chargebacks name only the PayNow order id; they find what to reverse in
`paynowOrders/{order_id}`. The app credited orders without writing one, so
`paynow-service migrate orders` builds them from the app's own ledger entries: this
module reads which entries those are, domain/migrated_orders.py decides what to write.

Which of the app's entries credited an order (read with the one tolerant reader,
domain/ledger_reader.py `read_entry`):
- its wallet-ledger service (the app's sync webhook): `kind` purchase, or promo_credit
  naming an order, with `source.eventId` the PayNow order id and `source.orderId` its
  pretty id when it has one. Only `posted` entries count, and they change in place;
- its queue worker: `action: "credit"` with `pre`/`post` maps, id = the PayNow event id,
  `metadata.orderId` the PayNow order id. Assumption: the app's publisher put
  `data.order.id` (not the pretty id) in the message the worker copied it from.
Every other shape is not an order credit. The app's points-service entries are not
migrated, its subscription top-ups (action ids `{orderId}_first_cycle_{productId}`)
included: those are subscription credits, not the order's lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paynow_service.domain.ledger import LedgerEntry
from paynow_service.domain.ledger_reader import EPOCH, read_entry

# Wallet-ledger kinds that credit an order's points, and those that take an order back.
ORDER_CREDIT_KINDS = frozenset({"purchase", "promo_credit"})
ORDER_REVERSAL_KINDS = frozenset({"refund", "chargeback"})


@dataclass(frozen=True)
class AppCredit:
    """One of the app's ledger entries that credited (a line of) an order."""

    uid: str
    entry_id: str
    order_id: str
    points: int
    shape: str  # app_wallet_ledger or app_queue_worker (read_entry's name)
    status: str = "posted"  # the wallet-ledger's status; the queue worker's entries have none
    amount_problem: str = ""  # why the amount cannot be a credit ("" when it is a positive integer)
    product_id: str = ""
    customer_id: str = ""
    pretty_id: str = ""  # the app's `source.orderId` when it differs from the PayNow order id
    created_at: datetime | None = None  # None: the entry carries no timestamp


@dataclass(frozen=True)
class AppReversal:
    """A refund or chargeback in the app's wallet-ledger: the app took (part of) an order back itself."""

    entry_id: str
    kind: str
    order_id: str = ""  # source.eventId, when it says
    reversal_of: str = ""  # source.reversalOf, when it says


@dataclass(frozen=True)
class OrderCandidate:
    """One order as one user's entries show it."""

    order_id: str
    uid: str
    credits: tuple[AppCredit, ...]
    reversals: tuple[AppReversal, ...] = ()

    @property
    def entry_ids(self) -> list[str]:
        return [credit.entry_id for credit in self.credits]

    @property
    def points(self) -> int:
        return sum(credit.points for credit in self.credits)

    @property
    def latest_at(self) -> datetime | None:
        times = [credit.created_at for credit in self.credits if credit.created_at is not None]
        return max(times, default=None)

    @property
    def customer_id(self) -> str:
        return next((c.customer_id for c in self.credits if c.customer_id), "")

    @property
    def pretty_id(self) -> str:
        return next((c.pretty_id for c in self.credits if c.pretty_id), "")


def read_order_entry(uid: str, entry_id: str, data: Mapping[str, Any]) -> AppCredit | AppReversal | None:
    """The entry as an order credit or an order reversal of the app; None for anything else."""
    entry = read_entry(uid, entry_id, data)
    if entry.shape == "app_wallet_ledger":
        return _wallet_ledger_entry(entry)
    if entry.shape == "app_queue_worker":
        return _queue_worker_credit(entry)
    return None


def _wallet_ledger_entry(entry: LedgerEntry) -> AppCredit | AppReversal | None:
    kind = entry.action  # read_entry's `action` is the wallet-ledger's `kind` (it has no action of its own)
    source = entry.metadata  # the wallet-ledger's `source` ids
    order_id = _id(source.get("eventId"))
    if kind in ORDER_REVERSAL_KINDS:
        return AppReversal(entry.entry_id, kind, order_id, _id(source.get("reversalOf")))
    if kind not in ORDER_CREDIT_KINDS or not order_id:
        return None  # a promo credit without an order, an adjustment, a subscription renewal
    pretty = _id(source.get("orderId"))
    return _credit(
        entry,
        order_id,
        status=entry.status,
        customer_id=_id(source.get("paynowCustomerId")),
        pretty_id=pretty if pretty != order_id else "",
    )


def _queue_worker_credit(entry: LedgerEntry) -> AppCredit | None:
    order_id = _id(entry.metadata.get("orderId"))
    if not order_id:
        return None
    # The queue worker's entries have no status: written once, never changed.
    return _credit(entry, order_id, status="posted")


def _credit(
    entry: LedgerEntry, order_id: str, *, status: str, customer_id: str = "", pretty_id: str = ""
) -> AppCredit:
    """What every shape's credit says the same way: who, which entry, how much, which product, when."""
    return AppCredit(
        uid=entry.uid,
        entry_id=entry.entry_id,
        order_id=order_id,
        points=entry.amount,
        shape=entry.shape,
        status=status,
        amount_problem=_amount_problem(entry),
        product_id=_id(entry.metadata.get("productId")),
        customer_id=customer_id,
        pretty_id=pretty_id,
        created_at=_time(entry),
    )


def _amount_problem(entry: LedgerEntry) -> str:
    # read_entry keeps an amount it cannot read as an integer in `unread` and counts it as 0.
    if "amount" in entry.unread:
        return f"amount of entry {entry.entry_id} is not an integer"
    if entry.amount <= 0:
        return f"amount of entry {entry.entry_id} is {entry.amount}, not positive"
    return ""


def _time(entry: LedgerEntry) -> datetime | None:
    return None if entry.created_at == EPOCH else entry.created_at  # EPOCH: no readable timestamp


def _id(value: object) -> str:
    if isinstance(value, bool):
        return ""
    return str(value) if isinstance(value, str | int) else ""


def user_orders(credits: Iterable[AppCredit], reversals: Iterable[AppReversal]) -> list[OrderCandidate]:
    """One user's order credits grouped by order id, each with the app's reversals of it; by order id."""
    by_order: dict[str, list[AppCredit]] = {}
    for credit in credits:
        by_order.setdefault(credit.order_id, []).append(credit)
    reversal_list = list(reversals)
    candidates = []
    for order_id in sorted(by_order):
        lines = sorted(by_order[order_id], key=lambda c: (c.created_at or EPOCH, c.entry_id))
        ids = {line.entry_id for line in lines}
        own = tuple(r for r in reversal_list if r.order_id == order_id or r.reversal_of in ids)
        candidates.append(OrderCandidate(order_id, lines[0].uid, tuple(lines), own))
    return candidates
