"""Credits as plugins grant them and as the core plans them (re-exported by hookspecs.py)."""

from __future__ import annotations

from dataclasses import dataclass

from paynow_service.domain.ledger import Kind


@dataclass(frozen=True)
class Credit:
    """Points a hook grants: `points` (>= 0) of `kind`. A promo credit's points go into a lot
    that expires `expires_in_days` after the event (None: 365, the app's default)."""

    points: int
    kind: Kind = "paid"
    expires_in_days: int | None = None


@dataclass(frozen=True)
class PlannedCredit:
    """A credit the core is about to apply, as shown to `paynow_adjust_credits`.

    `key` names the credit inside the event: the line id for an order line, `cycle:N`
    for a subscription period, or the plugin's own key for an extra credit.
    """

    key: str
    points: int
    kind: Kind = "paid"
    product_id: str = ""
    expires_in_days: int | None = None  # promo only; None: 365 days
