"""Built-in: an order line is worth quantity x the catalog's `products.<id>.points`."""

from __future__ import annotations

from paynow_service import hookimpl
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.events import OrderLine, PaymentEvent
from paynow_service.hookspecs import Credit


@hookimpl(trylast=True)
def paynow_map_order_line(event: PaymentEvent, line: OrderLine, catalog: Catalog) -> Credit | None:
    rule = catalog.products.get(line.product_id)
    if rule is None:
        return None
    return Credit(points=rule.points * line.quantity, kind=rule.kind, expires_in_days=rule.expires_in_days)
