"""What an event does to the ledger: a pure decision from the event and the state read for it.

The processing transaction reads the `EventState`, calls `decide`, then applies the
returned `Decision` in the same transaction. Nothing here does I/O, so a transaction
retry simply decides again, and every rule is unit-tested without a database. Orders are
decided in service/order_credits.py, subscriptions in service/subscription_credits.py,
refunds and disputes step their order's state machines (service/order_disputes.py).

Before anything else the event is checked against its record: the app's records by their
status (domain/app_records.py); ours by their `payloadHash` (an event carrying another hash
than its record's is a `payload_conflict`: the webhook may publish a delivery before it knows
the event id was recorded with another body, SPEC section 5), then by their status.
"""

from __future__ import annotations

from dataclasses import replace

import pluggy

from paynow_service.domain import events as ev
from paynow_service.domain.app_records import FLAG_APP_UNFINISHED, app_verdict
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.decisions import Decision, EventState
from paynow_service.domain.errors import InvalidEventError, PayloadConflictError
from paynow_service.domain.orders import order_fields
from paynow_service.domain.statuses import FINAL_STATUSES
from paynow_service.service.order_credits import order_decision
from paynow_service.service.order_disputes import chargeback_step, refund_step
from paynow_service.service.subscription_credits import subscription_decision


def decide(event: ev.PaymentEvent, state: EventState, hooks: pluggy.HookRelay, catalog: Catalog) -> Decision:
    if state.app_record:
        # Before anything else: the app's statuses mean something else than ours.
        verdict = app_verdict(state.event_status)
        if verdict == "duplicate":
            return Decision(result="duplicate")
        if verdict == "unfinished":
            return Decision(result="duplicate", flag=FLAG_APP_UNFINISHED)
        # "take_over": the app never credited it; our record replaces the app's below.
    else:
        if state.payload_hash and event.payload_hash and state.payload_hash != event.payload_hash:
            # The same event id with another body (a delivery published at the same time as it was
            # recorded): never processed, whatever the record's status; the record is left alone.
            raise PayloadConflictError(f"event {event.event_id}: its payload hash differs from its record's")
        if state.event_status in FINAL_STATUSES:
            return Decision(result="duplicate")
    if event.ignored:
        return Decision(result="ignored")
    if event.order is not None and event.event_type == ev.ORDER_COMPLETED:
        return order_decision(event, event.order, state, hooks, catalog)
    if event.subscription is not None and event.event_type in ev.SUBSCRIPTION_TYPES:
        return subscription_decision(event, event.subscription, state, hooks, catalog)
    if event.refund is not None and event.event_type == ev.REFUND:
        return _dispute(event, event.refund.order_id, state, hooks, catalog)
    if event.chargeback is not None and event.event_type in (ev.CHARGEBACK, ev.CHARGEBACK_CLOSED):
        return _dispute(event, event.chargeback.order_id, state, hooks, catalog)
    raise InvalidEventError(f"{event.event_type} event carries no {event.event_type.lower()} details")


def _dispute(
    event: ev.PaymentEvent, order_id: str, state: EventState, hooks: pluggy.HookRelay, catalog: Catalog
) -> Decision:
    """A refund or dispute event: a step of its order's state machine, or parked until the order is."""
    if state.order is None:
        # Its ordering key differs from the order's, so it can overtake it: keep it for the order.
        return Decision(result="parked", order_id=order_id, park=True)
    order = replace(state.order, cycles=state.cycles or state.order.cycles)
    if event.refund is not None:
        step = refund_step(event, event.refund, order, hooks, catalog)
    else:
        assert event.chargeback is not None  # decide() dispatches only these two
        step = chargeback_step(event, event.chargeback, order, hooks, catalog)
    return Decision(
        result=step.result,
        uid=order.uid,
        entries=step.entries,
        points=step.points,
        order_update=order_fields(step.order) if step.result != "no_change" else None,
        order_id=order_id,
    )
