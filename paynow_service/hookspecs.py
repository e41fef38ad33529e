"""The plugin contract (pluggy project "paynow"): how products become points.

Hooks are pure functions of the event and the catalog: no I/O, no clocks, no
randomness. The processing core does every Firestore read and may call a hook again
when its transaction retries. Built-in behaviour is itself a plugin
(plugins/paynow_catalog, `trylast=True`), so an outside plugin registered through the
`paynow_service.plugins` entry-point group wins over it. See docs/plugins.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import pluggy

from paynow_service.domain.catalog import Catalog
from paynow_service.domain.credits import Credit, PlannedCredit
from paynow_service.domain.events import OrderLine, PaymentEvent, Refund, Subscription
from paynow_service.domain.orders import CreditedEntry

# What a plugin imports from here; the values live in the domain, where the core uses them.
__all__ = ["PROJECT", "Credit", "CreditedEntry", "PayNowHookSpecs", "PlannedCredit", "hookimpl", "hookspec"]

PROJECT = "paynow"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class PayNowHookSpecs:
    """Hook specifications. Implement any of them in a module or class with `@hookimpl`."""

    @hookspec(firstresult=True)
    def paynow_map_order_line(self, event: PaymentEvent, line: OrderLine, catalog: Catalog) -> Credit | None:
        """Points for one line of an ON_ORDER_COMPLETED event.

        Called for every line that the order itself credits (lines with a subscription
        or trial id are skipped: their points come from subscription events). Return a
        Credit for the whole line (quantity included), or None to let the next plugin
        decide. Stops at the first non-None result. If no plugin maps the line, the
        event fails with `unknown_product`.
        """

    @hookspec(firstresult=True)
    def paynow_map_subscription(
        self, event: PaymentEvent, subscription: Subscription, catalog: Catalog
    ) -> Credit | None:
        """Points for one billing cycle of a subscription (ON_SUBSCRIPTION_ACTIVATED / _RENEWED).

        Return a Credit for the cycle, or None to let the next plugin decide. Stops at
        the first non-None result. If no plugin maps the plan, the event fails with
        `unknown_product`.
        """

    @hookspec(firstresult=True)
    def paynow_refund_points(
        self, event: PaymentEvent, refund: Refund, credited: Sequence[CreditedEntry], catalog: Catalog
    ) -> int | None:
        """How many of the order's credited points an approved or completed refund takes back.

        `credited` lists the order's credits. Return a number from 0 to their total for
        a partial refund, or None for the default: everything. Stops at the first
        non-None result.
        """

    @hookspec
    def paynow_adjust_credits(
        self, event: PaymentEvent, credits: Sequence[PlannedCredit], catalog: Catalog
    ) -> Sequence[PlannedCredit] | None:
        """Extra credits for an event, after every line or cycle was mapped.

        Every plugin may contribute: return extra PlannedCredits (each with a `key`
        unique within the event, e.g. "bonus:spring") or None. They are applied in the
        same transaction, with entry ids derived from the event and the key, so they
        are credited exactly once too.
        """
