"""Built-in: a subscription cycle is worth the catalog's `subscriptions.<id>.points_per_cycle`."""

from __future__ import annotations

from paynow_service import hookimpl
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.events import PaymentEvent, Subscription
from paynow_service.hookspecs import Credit


@hookimpl(trylast=True)
def paynow_map_subscription(
    event: PaymentEvent, subscription: Subscription, catalog: Catalog
) -> Credit | None:
    rule = catalog.subscriptions.get(subscription.product_id)
    if rule is None:
        return None
    return Credit(points=rule.points_per_cycle, kind=rule.kind, expires_in_days=rule.expires_in_days)
