"""What an event does to the ledger: a pure decision from the event and the state read for it.

The Firestore adapter reads the state inside the event's transaction, calls `decide`,
then applies the returned entries and documents in the same transaction. Nothing here
does I/O, so a transaction retry simply decides again, and every rule is unit-tested
without a database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pluggy

from paynow_service.domain import events as ev
from paynow_service.domain.app_records import FLAG_APP_UNFINISHED, app_verdict
from paynow_service.domain.catalog import MAX_EXPIRES_IN_DAYS, Catalog
from paynow_service.domain.errors import InvalidEventError, UnknownProductError, UserNotFoundError
from paynow_service.domain.ledger import (
    ACTION_ORDER,
    ACTION_SUBSCRIPTION,
    DEFAULT_PROMO_DAYS,
    EntryRequest,
    order_line_entry_id,
    subscription_entry_id,
)
from paynow_service.hookspecs import CreditedEntry, PlannedCredit
from paynow_service.service.order_disputes import (
    OrderRecord,
    apply_in_order,
    chargeback_step,
    order_fields,
    refund_step,
)

# A webhookEvents status (of ours) after which a delivery is a duplicate.
FINAL_STATUSES = frozenset({"processed", "ignored", "failed_terminal", "dead_lettered", "parked"})
SOURCE = "paynow"


@dataclass(frozen=True)
class EventState:
    """Everything `decide` needs, read in the event's transaction."""

    event_status: str | None = None
    app_record: bool = False  # the record is the app's, from before cut-over (domain/app_records.py)
    mapped_uid: str = ""  # paynowCustomers/{customer_id}.uid
    order: OrderRecord | None = None  # paynowOrders/{order_id} once credited (with its subscriptions' cycles)
    now: datetime | None = None  # the transaction's clock: an event's time when it carries none
    parked: tuple[ev.PaymentEvent, ...] = ()  # refunds and disputes that arrived before the order
    cycles: tuple[CreditedEntry, ...] = ()  # cycles credited to the subscriptions an order's lines name


@dataclass(frozen=True)
class Decision:
    result: str  # credited, reversed, recredited, status_updated, no_change, ignored, duplicate
    uid: str = ""
    entries: tuple[EntryRequest, ...] = ()
    points: int = 0  # net points this event moves (reversals negative)
    order_update: Mapping[str, Any] | None = None  # merged (set, merge=True) into paynowOrders/{order_id}
    order_id: str = ""
    customer_mapping: tuple[str, str] | None = None  # (customer_id, uid) to upsert
    subscription_update: Mapping[str, Any] | None = None  # merged into users/{uid}/subscriptions/{id}
    park: bool = False  # a refund or dispute ahead of its order: store it on the order, ack the message
    applied_parked: tuple[str, ...] = ()  # event ids of parked events this decision applied
    flag: str = ""  # a duplicate whose record is flagged for reconciliation (app_unfinished)

    @property
    def writes(self) -> bool:
        return self.result != "duplicate"


def decide(event: ev.PaymentEvent, state: EventState, hooks: pluggy.HookRelay, catalog: Catalog) -> Decision:
    if state.app_record:
        # Before anything else: the app's statuses mean something else than ours.
        verdict = app_verdict(state.event_status)
        if verdict == "duplicate":
            return Decision(result="duplicate")
        if verdict == "unfinished":
            return Decision(result="duplicate", flag=FLAG_APP_UNFINISHED)
        # "take_over": the app never credited it; our record replaces the app's below.
    elif state.event_status in FINAL_STATUSES:
        return Decision(result="duplicate")
    if event.ignored:
        return Decision(result="ignored")
    if event.order is not None and event.event_type == ev.ORDER_COMPLETED:
        return _order(event, event.order, state, hooks, catalog)
    if event.subscription is not None and event.event_type in ev.SUBSCRIPTION_TYPES:
        return _subscription(event, event.subscription, state, hooks, catalog)
    if event.refund is not None and event.event_type == ev.REFUND:
        return _dispute(event, event.refund.order_id, state, hooks, catalog)
    if event.chargeback is not None and event.event_type in (ev.CHARGEBACK, ev.CHARGEBACK_CLOSED):
        return _dispute(event, event.chargeback.order_id, state, hooks, catalog)
    raise InvalidEventError(f"{event.event_type} event carries no {event.event_type.lower()} details")


def known_uid(event: ev.PaymentEvent, mapped_uid: str) -> str:
    """The uid an event names (checkout, else a line's metadata), else the customer mapping's; or ""."""
    lines = event.order.lines if event.order is not None else ()
    return event.uid or next((line.uid for line in lines if line.uid), "") or mapped_uid


def _resolve_uid(event: ev.PaymentEvent, state: EventState) -> str:
    uid = known_uid(event, state.mapped_uid)
    if not uid:
        raise UserNotFoundError(
            f"no uid in checkout metadata and customer {event.customer_id or '(none)'} is not mapped"
        )
    return uid


def _mapping(event: ev.PaymentEvent, uid: str, state: EventState) -> tuple[str, str] | None:
    if event.customer_id and state.mapped_uid != uid:
        return (event.customer_id, uid)
    return None


def _order(
    event: ev.PaymentEvent, order: ev.Order, state: EventState, hooks: pluggy.HookRelay, catalog: Catalog
) -> Decision:
    if state.order is not None and state.order.migrated_from:
        # The app credited this order before cut-over under its own entry ids (`migrate orders`
        # recorded them): a new delivery of it must not credit it again under ours.
        return Decision(result="no_change", uid=state.order.uid, order_id=order.order_id)
    uid = _resolve_uid(event, state)
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
    planned += _extras(event, planned, hooks, catalog)
    # Only credited lines: an extra keyed like a skipped subscription/trial line stays an extra.
    lines = {line.line_id: line for line in order.lines if line.credited_by_order}
    entries: list[EntryRequest] = []
    for credit in planned:
        if credit.points <= 0:
            continue
        order_line = lines.get(credit.key)
        entry_id = (
            order_line_entry_id(order.order_id, credit.key)
            if order_line
            else f"paynow:order:{order.order_id}:extra:{credit.key}"
        )
        metadata: dict[str, Any] = {
            "eventId": event.event_id,
            "orderId": order.order_id,
            "productId": credit.product_id,
        }
        if order_line:
            metadata.update(lineId=order_line.line_id, quantity=order_line.quantity)
        entries.append(
            EntryRequest(
                entry_id=entry_id,
                uid=uid,
                action="credit",
                amount=credit.points,
                source=SOURCE,
                kind=credit.kind,
                metadata=metadata,
                expires_at=_expiry(event, state, credit),
                label=ACTION_ORDER,
                note=f"order {order.order_id}",
            )
        )
    credits = [
        {"entryId": e.entry_id, "points": e.amount, "productId": e.metadata.get("productId", "")}
        for e in entries
    ]
    total = sum(e.amount or 0 for e in entries)
    order_update: dict[str, Any] = {
        "uid": uid,
        "customerId": event.customer_id,
        "eventId": event.event_id,
        "entryIds": [e.entry_id for e in entries],
        "credits": credits,
        "points": total,
    }
    subscriptions = sorted({line.subscription_id for line in order.lines if line.subscription_id})
    if subscriptions:
        order_update["subscriptionIds"] = subscriptions
    applied: tuple[str, ...] = ()
    requests: list[EntryRequest] = list(entries)
    if state.order is None:
        # Refunds and disputes that arrived first are applied now, in the order's own transaction.
        record = OrderRecord(
            uid=uid,
            order_id=order.order_id,
            credits=tuple(
                CreditedEntry(e.entry_id, e.amount or 0, str(e.metadata.get("productId", "")))
                for e in entries
            ),
            cycles=state.cycles,
            subscription_ids=tuple(subscriptions),
        )
        record, undone, moved = apply_in_order(state.parked, record, hooks, catalog)
        requests += undone
        total += moved
        order_update.update(order_fields(record))
        applied = tuple(parked.event_id for parked in state.parked)
    return Decision(
        result="credited" if requests else "no_change",
        uid=uid,
        entries=tuple(requests),
        points=total,
        order_update=order_update,
        order_id=order.order_id,
        customer_mapping=_mapping(event, uid, state),
        applied_parked=applied,
    )


def _expiry(event: ev.PaymentEvent, state: EventState, credit: PlannedCredit) -> datetime | None:
    """A promo credit's lot expires `expires_in_days` after the event (PayNow's timestamp of it)."""
    if credit.kind != "promo":
        return None
    days = DEFAULT_PROMO_DAYS if credit.expires_in_days is None else credit.expires_in_days
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXPIRES_IN_DAYS:
        raise InvalidEventError(
            f"plugin credit {credit.key!r}: expires_in_days must be 1 to {MAX_EXPIRES_IN_DAYS}"
        )
    sent_ms = event.sent_at_ms or event.received_at_ms
    at = datetime.fromtimestamp(sent_ms / 1000, UTC) if sent_ms else state.now
    if at is None:
        raise InvalidEventError("the event carries no time to date its promo lot's expiry from")
    return at + timedelta(days=days)


def _extras(
    event: ev.PaymentEvent, planned: Sequence[PlannedCredit], hooks: pluggy.HookRelay, catalog: Catalog
) -> list[PlannedCredit]:
    extras: list[PlannedCredit] = []
    seen = {credit.key for credit in planned}
    for contribution in hooks.paynow_adjust_credits(event=event, credits=tuple(planned), catalog=catalog):
        for credit in contribution or ():
            if credit.key in seen:
                raise InvalidEventError(f"plugin credit key {credit.key!r} is used twice in this event")
            seen.add(credit.key)
            extras.append(credit)
    return extras


def _subscription(
    event: ev.PaymentEvent, sub: ev.Subscription, state: EventState, hooks: pluggy.HookRelay, catalog: Catalog
) -> Decision:
    uid = _resolve_uid(event, state)
    update: dict[str, Any] = {"productId": sub.product_id, "status": sub.status}
    if sub.current_period_end_ms:
        update["currentPeriodEndMs"] = sub.current_period_end_ms
    if event.event_type == ev.SUBSCRIPTION_CANCELED:
        return Decision(
            result="status_updated",
            uid=uid,
            subscription_update=update,
            customer_mapping=_mapping(event, uid, state),
        )
    # PayNow's schema allows cycle 0, so 0 is a cycle like any other; only negatives are impossible.
    if sub.billing_cycle_sequence < 0:
        raise InvalidEventError(
            f"subscription {sub.subscription_id} has billing cycle {sub.billing_cycle_sequence}"
        )
    credit = hooks.paynow_map_subscription(event=event, subscription=sub, catalog=catalog)
    if credit is None:
        raise UnknownProductError(f"no plugin maps subscription plan {sub.product_id}")
    cycle_key = f"cycle:{sub.billing_cycle_sequence}"
    planned = [
        PlannedCredit(
            key=cycle_key,
            points=credit.points,
            kind=credit.kind,
            product_id=sub.product_id,
            expires_in_days=credit.expires_in_days,
        )
    ]
    planned += _extras(event, planned, hooks, catalog)
    entries = []
    base_id = subscription_entry_id(sub.subscription_id, sub.billing_cycle_sequence)
    for planned_credit in planned:
        if planned_credit.points <= 0:
            continue
        entry_id = base_id if planned_credit.key == cycle_key else f"{base_id}:extra:{planned_credit.key}"
        entries.append(
            EntryRequest(
                entry_id=entry_id,
                uid=uid,
                action="credit",
                amount=planned_credit.points,
                source=SOURCE,
                kind=planned_credit.kind,
                metadata={
                    "eventId": event.event_id,
                    "subscriptionId": sub.subscription_id,
                    "cycle": sub.billing_cycle_sequence,
                    "productId": sub.product_id,
                },
                expires_at=_expiry(event, state, planned_credit),
                label=ACTION_SUBSCRIPTION,
                note=f"subscription {sub.subscription_id} cycle {sub.billing_cycle_sequence}",
            )
        )
    update.update(pointsPerCycle=credit.points, cycle=sub.billing_cycle_sequence)
    total = sum(e.amount or 0 for e in entries)
    return Decision(
        result="credited" if entries else "no_change",
        uid=uid,
        entries=tuple(entries),
        points=total,
        subscription_update=update,
        customer_mapping=_mapping(event, uid, state),
    )


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
