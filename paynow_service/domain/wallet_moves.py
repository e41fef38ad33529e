"""How points move in and out of a wallet's paid balance and promo lots (SPEC section 5).

Pure arithmetic on a `RunningWallet`, the wallet as a batch of entries changes it:
- a paid credit adds to `paid`; a promo credit adds a lot (id = the entry id);
- a reversal takes from the credit's own balance first (its own lot if still there and
  unexpired, or paid down to zero), then from the unexpired lots by earliest expiry,
  then from paid down to zero, and then below zero when negative balances are allowed
  ("zero" is paid plus unexpired promo); expired lots are never touched;
- a re-credit gives the paid part back to paid and the promo part as a new lot.
Lots are never dropped and never negative: an emptied lot stays (at 0) until the app's
spend removes it, and `promoBalance` is always the sum of every lot.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from paynow_service.domain.ledger import LotMove, Points, PromoLot, Wallet


@dataclass
class RunningWallet:
    paid: int = 0
    lots: list[PromoLot] = field(default_factory=list)
    foreign_lots: tuple[Any, ...] = ()
    updated_at: datetime | None = None

    @classmethod
    def of(cls, wallet: Wallet | None) -> RunningWallet:
        if wallet is None:
            return cls()
        return cls(wallet.paid, list(wallet.lots), wallet.foreign_lots, wallet.updated_at)

    def frozen(self, updated_at: datetime | None = None) -> Wallet:
        wallet = Wallet(
            paid=self.paid,
            lots=tuple(self.lots),
            foreign_lots=self.foreign_lots,
            updated_at=updated_at or self.updated_at,
        )
        return replace(wallet, promo_stored=wallet.lots_sum)

    def stored(self) -> Points:
        """The balances as the wallet document stores them (promo: every lot)."""
        return Points(paid=self.paid, promo=self.frozen().lots_sum)

    def add_paid(self, amount: int) -> None:
        self.paid += amount

    def add_lot(self, lot: PromoLot) -> None:
        self.lots.append(lot)
        self.lots.sort(key=lambda item: item.expires_at)  # stable: equal expiries keep their order

    def take(
        self, wanted: int, *, own_lot: str | None, paid_first: bool, now: datetime, allow_negative: bool
    ) -> tuple[Points, tuple[LotMove, ...], int]:
        """Take `wanted` points back; returns (what was taken, the lots it came from, the shortfall)."""
        remaining = wanted
        paid_taken = 0
        moves: dict[str, LotMove] = {}

        def from_lot(index: int) -> None:
            nonlocal remaining
            lot = self.lots[index]
            amount = min(remaining, lot.amount_remaining)
            if amount <= 0 or not lot.spendable(now):
                return
            self.lots[index] = replace(lot, amount_remaining=lot.amount_remaining - amount)
            previous = moves.get(lot.lot_id)
            moves[lot.lot_id] = LotMove(
                lot.lot_id, amount + (previous.amount if previous else 0), lot.expires_at
            )
            remaining -= amount

        def from_paid() -> None:
            nonlocal remaining, paid_taken
            amount = min(remaining, max(self.paid, 0))
            self.paid -= amount
            paid_taken += amount
            remaining -= amount

        if paid_first:
            from_paid()
        elif own_lot is not None:
            for index, lot in enumerate(self.lots):
                if lot.lot_id == own_lot and remaining > 0:
                    from_lot(index)
        for index in range(len(self.lots)):  # already in order of expiry
            if remaining > 0:
                from_lot(index)
        if remaining > 0:
            from_paid()
        shortfall = 0
        if remaining > 0 and allow_negative:
            self.paid -= remaining
            paid_taken += remaining
        else:
            shortfall = remaining
        taken = Points(paid=paid_taken, promo=sum(move.amount for move in moves.values()))
        return taken, tuple(moves.values()), shortfall
