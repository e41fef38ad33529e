"""Ledger vocabulary shared by the ledger implementation and its callers.

An `EntryRequest` asks for one ledger entry; its `entry_id` is the namespaced
idempotency key (SPEC section 5). The ledger answers each request with an
`EntryOutcome`: the entry written, or the original one when the key was already
applied with the same request (`replayed`).

The wallet is the one the app that spends the points reads and writes: paid points
and promo points held in lots, each lot with its own expiry. `promoBalance` is always
the sum of every lot, expired ones included (the app's spend drops those); the points
a user can spend are paid plus the unexpired lots.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Action = Literal["credit", "reversal"]
Kind = Literal["paid", "promo"]

# What a ledger entry's `action` field says: what the entry is for (SPEC section 5).
ACTION_ORDER = "paynow.order"
ACTION_SUBSCRIPTION = "paynow.subscription"
ACTION_REVERSAL = "reversal"
ACTION_RECREDIT = "recredit"
ACTION_API_CREDIT = "api.credit"
ACTION_API_REVERSE = "api.reverse"
# A promo lot's life when the catalog or the caller does not say (the app's own default).
DEFAULT_PROMO_DAYS = 365


# Entry ids: every ledger entry id is built by one of the helpers below (SPEC section 5).
# Entry ids of PayNow events: they move only with their order (never by ReversePoints).
PAYNOW_NAMESPACE = "paynow:"


def order_line_entry_id(order_id: str, line_id: str) -> str:
    return f"paynow:order:{order_id}:line:{line_id}"


def order_extra_entry_id(order_id: str, key: str) -> str:
    """A credit a plugin adds to an order beside its lines (`key`: the plugin's name for it)."""
    return f"paynow:order:{order_id}:extra:{key}"


def subscription_entry_id(subscription_id: str, cycle: int) -> str:
    return f"paynow:sub:{subscription_id}:cycle:{cycle}"


def subscription_extra_entry_id(subscription_id: str, cycle: int, key: str) -> str:
    """A credit a plugin adds to a subscription cycle beside the cycle's own."""
    return f"{subscription_entry_id(subscription_id, cycle)}:extra:{key}"


def reversal_entry_id(original_entry_id: str, generation: int = 1) -> str:
    """`rev:{original}`; the n-th reversal of the same entry (after n-1 re-credits) is `rev{n}:{original}`."""
    return f"rev:{original_entry_id}" if generation == 1 else f"rev{generation}:{original_entry_id}"


def recredit_entry_id(original_entry_id: str, generation: int = 1) -> str:
    """`recredit:{original}`; the re-credit of the n-th reversal is `recredit{n}:{original}`."""
    return f"recredit:{original_entry_id}" if generation == 1 else f"recredit{generation}:{original_entry_id}"


def api_entry_id(caller: str, idempotency_key: str) -> str:
    return f"api:{caller}:{idempotency_key}"


@dataclass(frozen=True)
class Points:
    """A `{paid, promo}` pair: a balance, or a signed change of one."""

    paid: int = 0
    promo: int = 0

    @property
    def total(self) -> int:
        return self.paid + self.promo


@dataclass(frozen=True)
class PromoLot:
    """One promo credit's points still in the wallet (`promoLots[]`)."""

    lot_id: str
    amount_remaining: int
    expires_at: datetime
    source: str = ""

    def spendable(self, now: datetime) -> bool:
        return self.expires_at > now


@dataclass(frozen=True)
class LotMove:
    """Points a credit put into a lot (`creditLot`) or a debit took from one (`consumedLots[]`)."""

    lot_id: str
    amount: int
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Wallet:
    """users/{uid}/wallet/points as read: `promo_stored` is the stored `promoBalance`."""

    paid: int = 0
    lots: tuple[PromoLot, ...] = ()
    promo_stored: int = 0
    updated_at: datetime | None = None
    # promoLots items this service cannot read (no expiry, say): written back as they were.
    foreign_lots: tuple[Any, ...] = ()

    @property
    def lots_sum(self) -> int:
        """The sum of every lot's `amountRemaining`: what `promoBalance` must be."""
        foreign = (lot.get("amountRemaining") for lot in self.foreign_lots if isinstance(lot, Mapping))
        counted = sum(n for n in foreign if isinstance(n, int) and not isinstance(n, bool))
        return counted + sum(lot.amount_remaining for lot in self.lots)

    def balance(self, now: datetime) -> Balance:
        spendable = sum(lot.amount_remaining for lot in self.lots if lot.spendable(now))
        return Balance(
            paid=self.paid,
            promo=spendable,
            updated_at=self.updated_at,
            promo_stored=self.promo_stored,
            lots=self.lots,
        )


@dataclass(frozen=True)
class EntryRequest:
    """One entry to apply.

    A credit names `amount` (> 0) and `kind`; a promo credit also names `expires_at`,
    the expiry of the lot it adds. A reversal (`rev:{original}`) names `reversal_of`;
    its amount is negative, taken from the original when `amount` is None (a plugin
    may ask for less: a partial refund). A re-credit (`recredit:{original}`) is a
    credit with `reversal_of` set to the original entry: allowed once, and only after
    that original was reversed. `generation` n numbers the reversals of one original:
    reversal n (`rev{n}:`) needs re-credit n-1, re-credit n (`recredit{n}:`) needs
    reversal n. `label` is the entry's stored `action` (what it is for) and `note` its
    short label; both have defaults derived from the request.
    """

    entry_id: str
    uid: str
    action: Action
    amount: int | None
    source: str
    kind: Kind = "paid"
    reversal_of: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    created_by: str = "paynow-service"
    expires_at: datetime | None = None
    label: str = ""
    note: str = ""
    generation: int = 1


@dataclass(frozen=True)
class LedgerEntry:
    """A ledger entry as read by the tolerant reader (domain/ledger_reader.py) or as planned.

    Several writers share the collection: `shape` says whose entry it is. `amount` is
    signed (a debit is negative whatever its writer stored); `pre`, `post` and `delta`
    are None when the entry does not carry them. `unread` keeps the fields the reader
    could not interpret, so nothing is hidden from a listing.
    """

    entry_id: str
    uid: str
    amount: int
    type: str  # credit, debit, or "" when the entry does not say
    channel: str  # paid, promo, or ""
    action: str  # as stored: paynow.order, reversal, api.credit, credit.<source>, purchase ...
    source: str
    metadata: Mapping[str, Any]
    created_at: datetime
    created_by: str
    pre: Points | None = None
    post: Points | None = None
    delta: Points | None = None
    note: str = ""
    status: str = ""  # the app's wallet-ledger entries: posted, hold, reversed
    credit_lot: LotMove | None = None
    consumed_lots: tuple[LotMove, ...] = ()
    shape: str = "service"
    unread: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_credit(self) -> bool:
        return self.type == "credit" and self.amount > 0

    @property
    def is_reversal(self) -> bool:
        return self.action in (ACTION_REVERSAL, ACTION_API_REVERSE) or "reversalOf" in self.metadata

    @property
    def kind(self) -> Kind:
        """The balance a credit went to (a debit: `paid` when it used any paid points)."""
        return "promo" if self.channel == "promo" else "paid"


@dataclass(frozen=True)
class Balance:
    """A wallet's balances at a moment: `promo` counts unexpired lots only (what can be spent),
    `promo_stored` is the stored `promoBalance` (every lot, expired ones included)."""

    paid: int = 0
    promo: int = 0
    updated_at: datetime | None = None
    promo_stored: int = 0
    lots: tuple[PromoLot, ...] = ()


@dataclass(frozen=True)
class EntryOutcome:
    entry: LedgerEntry
    replayed: bool
    shortfall: int = 0  # points a reversal could not take back (ALLOW_NEGATIVE_BALANCE=false)


@dataclass(frozen=True)
class LedgerResult:
    outcomes: tuple[EntryOutcome, ...]
    balances: Mapping[str, Balance]  # by uid, after the transaction
