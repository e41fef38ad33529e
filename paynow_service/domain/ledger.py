"""Ledger vocabulary shared by the ledger implementation and its callers.

An `EntryRequest` asks for one ledger entry; its `entry_id` is the namespaced
idempotency key (SPEC section 5). The ledger answers each request with an
`EntryOutcome`: the entry written, or the original one when the key was already
applied with the same request (`replayed`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Action = Literal["credit", "reversal"]
Kind = Literal["paid", "promo"]


def order_line_entry_id(order_id: str, line_id: str) -> str:
    return f"paynow:order:{order_id}:line:{line_id}"


def subscription_entry_id(subscription_id: str, cycle: int) -> str:
    return f"paynow:sub:{subscription_id}:cycle:{cycle}"


def reversal_entry_id(original_entry_id: str) -> str:
    return f"rev:{original_entry_id}"


def recredit_entry_id(original_entry_id: str) -> str:
    return f"recredit:{original_entry_id}"


def api_entry_id(caller: str, idempotency_key: str) -> str:
    return f"api:{caller}:{idempotency_key}"


@dataclass(frozen=True)
class EntryRequest:
    """One entry to apply.

    A credit names `amount` (> 0) and `kind`. A reversal (`rev:{original}`) names
    `reversal_of`; its amount is negative, taken from the original when `amount` is
    None (a plugin may ask for less: a partial refund). A re-credit
    (`recredit:{original}`) is a credit with `reversal_of` set to the original entry:
    allowed once, and only after that original was reversed.
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


@dataclass(frozen=True)
class LedgerEntry:
    """An immutable ledger entry as stored under users/{uid}/ledger/{entry_id}."""

    entry_id: str
    uid: str
    action: Action
    kind: Kind
    amount: int
    source: str
    pre: int
    post: int
    metadata: Mapping[str, Any]
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class Balance:
    paid: int = 0
    promo: int = 0
    updated_at: datetime | None = None


@dataclass(frozen=True)
class EntryOutcome:
    entry: LedgerEntry
    replayed: bool
    shortfall: int = 0  # points a reversal could not take back (ALLOW_NEGATIVE_BALANCE=false)


@dataclass(frozen=True)
class LedgerResult:
    outcomes: tuple[EntryOutcome, ...]
    balances: Mapping[str, Balance]  # by uid, after the transaction
