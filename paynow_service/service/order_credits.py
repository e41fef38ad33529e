"""An ON_ORDER_COMPLETED event's decision: its lines' credits, plugins' extras, and the refunds
and disputes that arrived before it (parked on the order), applied with it."""

from __future__ import annotations

from typing import Any

import pluggy

from paynow_service.domain import events as ev
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.credits import PlannedCredit
from paynow_service.domain.decisions import SOURCE, Decision, EventState, subscription_ids
from paynow_service.domain.errors import UnknownProductError
from paynow_service.domain.ledger import ACTION_ORDER, EntryRequest, order_extra_entry_id, order_line_entry_id
from paynow_service.domain.orders import CreditedEntry, OrderRecord, credits_fields, order_fields
from paynow_service.service.crediting import customer_mapping, plugin_extras, promo_expiry, resolve_uid
from paynow_service.service.order_disputes import apply_in_order


def order_decision(
    event: ev.PaymentEvent, order: ev.Order, state: EventState, hooks: pluggy.HookRelay, catalog: Catalog
) -> Decision:
    if state.order is not None and state.order.migrated_from:
        # The app credited this order before cut-over under its own entry ids (`migrate orders`
        # recorded them): a new delivery of it must not credit it again under ours.
        return Decision(result="no_change", uid=state.order.uid, order_id=order.order_id)
    uid = resolve_uid(event, state)
    entries = _entries(event, order, state, uid, _planned(event, order, hooks, catalog))
    credited = tuple(
        CreditedEntry(e.entry_id, e.amount or 0, str(e.metadata.get("productId", ""))) for e in entries
    )
    total = sum(c.points for c in credited)
    subscriptions = subscription_ids(order)
    order_update: dict[str, Any] = {
        "uid": uid,
        "customerId": event.customer_id,
        "eventId": event.event_id,
        "entryIds": [c.entry_id for c in credited],
        "credits": credits_fields(credited),
        "points": total,
    }
    if subscriptions:
        order_update["subscriptionIds"] = list(subscriptions)
    requests = entries
    applied: tuple[str, ...] = ()
    if state.order is None:
        # Refunds and disputes that arrived first are applied now, in the order's own transaction.
        record = OrderRecord(
            uid=uid,
            order_id=order.order_id,
            credits=credited,
            cycles=state.cycles,
            subscription_ids=subscriptions,
        )
        record, undone, moved = apply_in_order(state.parked, record, hooks, catalog)
        requests, total = (*entries, *undone), total + moved
        order_update.update(order_fields(record))
        applied = tuple(parked.event_id for parked in state.parked)
    return Decision(
        result="credited" if requests else "no_change",
        uid=uid,
        entries=requests,
        points=total,
        order_update=order_update,
        order_id=order.order_id,
        customer_mapping=customer_mapping(event, uid, state),
        applied_parked=applied,
    )


def _planned(
    event: ev.PaymentEvent, order: ev.Order, hooks: pluggy.HookRelay, catalog: Catalog
) -> list[PlannedCredit]:
    """A credit per line the order itself credits (mapped by the plugins), then the plugins' extras."""
    planned: list[PlannedCredit] = []
    for line in order.lines:
        if not line.credited_by_order:
            continue
        credit = hooks.paynow_map_order_line(event=event, line=line, catalog=catalog)
        if credit is None:
            raise UnknownProductError(f"no plugin maps product {line.product_id} (order line {line.line_id})")
        planned.append(
            PlannedCredit(
                key=line.line_id,
                points=credit.points,
                kind=credit.kind,
                product_id=line.product_id,
                expires_in_days=credit.expires_in_days,
            )
        )
    return planned + plugin_extras(event, planned, hooks, catalog)


def _entries(
    event: ev.PaymentEvent, order: ev.Order, state: EventState, uid: str, planned: list[PlannedCredit]
) -> tuple[EntryRequest, ...]:
    # Only credited lines: an extra keyed like a skipped subscription/trial line stays an extra.
    lines = {line.line_id: line for line in order.lines if line.credited_by_order}
    return tuple(
        _entry(event, order.order_id, lines.get(credit.key), state, uid, credit)
        for credit in planned
        if credit.points > 0
    )


def _entry(
    event: ev.PaymentEvent,
    order_id: str,
    line: ev.OrderLine | None,
    state: EventState,
    uid: str,
    credit: PlannedCredit,
) -> EntryRequest:
    metadata: dict[str, Any] = {
        "eventId": event.event_id,
        "orderId": order_id,
        "productId": credit.product_id,
    }
    if line is not None:
        entry_id = order_line_entry_id(order_id, credit.key)
        metadata.update(lineId=line.line_id, quantity=line.quantity)
    else:
        entry_id = order_extra_entry_id(order_id, credit.key)
    return EntryRequest(
        entry_id=entry_id,
        uid=uid,
        action="credit",
        amount=credit.points,
        source=SOURCE,
        kind=credit.kind,
        metadata=metadata,
        expires_at=promo_expiry(event, state, credit),
        label=ACTION_ORDER,
        note=f"order {order_id}",
    )
