"""A subscription event's decision: a billing cycle's credit (and plugins' extras), or a status."""

from __future__ import annotations

from typing import Any

import pluggy

from paynow_service.domain import events as ev
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.credits import PlannedCredit
from paynow_service.domain.decisions import SOURCE, Decision, EventState
from paynow_service.domain.errors import InvalidEventError, UnknownProductError
from paynow_service.domain.ledger import (
    ACTION_SUBSCRIPTION,
    EntryRequest,
    subscription_entry_id,
    subscription_extra_entry_id,
)
from paynow_service.service.crediting import customer_mapping, plugin_extras, promo_expiry, resolve_uid


def subscription_decision(
    event: ev.PaymentEvent, sub: ev.Subscription, state: EventState, hooks: pluggy.HookRelay, catalog: Catalog
) -> Decision:
    uid = resolve_uid(event, state)
    update: dict[str, Any] = {"productId": sub.product_id, "status": sub.status}
    if sub.current_period_end_ms:
        update["currentPeriodEndMs"] = sub.current_period_end_ms
    if event.event_type == ev.SUBSCRIPTION_CANCELED:
        return Decision(
            result="status_updated",
            uid=uid,
            subscription_update=update,
            customer_mapping=customer_mapping(event, uid, state),
        )
    # PayNow's schema allows cycle 0, so 0 is a cycle like any other; only negatives are impossible.
    if sub.billing_cycle_sequence < 0:
        raise InvalidEventError(
            f"subscription {sub.subscription_id} has billing cycle {sub.billing_cycle_sequence}"
        )
    credit = hooks.paynow_map_subscription(event=event, subscription=sub, catalog=catalog)
    if credit is None:
        raise UnknownProductError(f"no plugin maps subscription plan {sub.product_id}")
    cycle = PlannedCredit(
        key=f"cycle:{sub.billing_cycle_sequence}",
        points=credit.points,
        kind=credit.kind,
        product_id=sub.product_id,
        expires_in_days=credit.expires_in_days,
    )
    planned = [cycle, *plugin_extras(event, [cycle], hooks, catalog)]
    entries = tuple(
        _entry(event, sub, state, uid, planned_credit, is_cycle=planned_credit.key == cycle.key)
        for planned_credit in planned
        if planned_credit.points > 0
    )
    update.update(pointsPerCycle=credit.points, cycle=sub.billing_cycle_sequence)
    return Decision(
        result="credited" if entries else "no_change",
        uid=uid,
        entries=entries,
        points=sum(e.amount or 0 for e in entries),
        subscription_update=update,
        customer_mapping=customer_mapping(event, uid, state),
    )


def _entry(
    event: ev.PaymentEvent,
    sub: ev.Subscription,
    state: EventState,
    uid: str,
    credit: PlannedCredit,
    *,
    is_cycle: bool,
) -> EntryRequest:
    base_id = subscription_entry_id(sub.subscription_id, sub.billing_cycle_sequence)
    return EntryRequest(
        entry_id=base_id
        if is_cycle
        else subscription_extra_entry_id(sub.subscription_id, sub.billing_cycle_sequence, credit.key),
        uid=uid,
        action="credit",
        amount=credit.points,
        source=SOURCE,
        kind=credit.kind,
        metadata={
            "eventId": event.event_id,
            "subscriptionId": sub.subscription_id,
            "cycle": sub.billing_cycle_sequence,
            "productId": sub.product_id,
        },
        expires_at=promo_expiry(event, state, credit),
        label=ACTION_SUBSCRIPTION,
        note=f"subscription {sub.subscription_id} cycle {sub.billing_cycle_sequence}",
    )
