"""What deciding an event takes and gives: the state read for it, and the decision.

The processing transaction reads an `EventState`, the service's pure `decide` turns it into
a `Decision`, and the same transaction applies it. Both are plain values, so a
transaction retry reads and decides again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from paynow_service.domain import events as ev
from paynow_service.domain.ledger import EntryRequest
from paynow_service.domain.orders import CreditedEntry, OrderRecord
from paynow_service.domain.statuses import DecisionResult

SOURCE = "paynow"  # the ledger `source` of every entry a PayNow event writes


@dataclass(frozen=True)
class EventState:
    """Everything `decide` needs, read in the event's transaction."""

    event_status: str | None = None  # webhookEvents/{event_id}.status: ours, or the app's
    app_record: bool = False  # the record is the app's, from before cut-over (domain/app_records.py)
    payload_hash: str = ""  # webhookEvents/{event_id}.payloadHash of our record ("" : none, or the app's)
    mapped_uid: str = ""  # paynowCustomers/{customer_id}.uid
    order: OrderRecord | None = None  # paynowOrders/{order_id} once credited (with its subscriptions' cycles)
    now: datetime | None = None  # the transaction's clock: an event's time when it carries none
    parked: tuple[ev.PaymentEvent, ...] = ()  # refunds and disputes that arrived before the order
    cycles: tuple[CreditedEntry, ...] = ()  # cycles credited to the subscriptions an order's lines name


@dataclass(frozen=True)
class Decision:
    result: DecisionResult
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

    def entry_ids_of(self, event_id: str) -> list[str]:
        """The entries one event wrote: an order's transaction also writes those of the events
        parked on it, each recorded on its own event."""
        if not self.applied_parked:
            return [e.entry_id for e in self.entries]
        return [e.entry_id for e in self.entries if e.metadata.get("eventId") == event_id]


def known_uid(event: ev.PaymentEvent, mapped_uid: str) -> str:
    """The uid an event names (checkout, else a line's metadata), else the customer mapping's; or ""."""
    lines = event.order.lines if event.order is not None else ()
    return event.uid or next((line.uid for line in lines if line.uid), "") or mapped_uid


def order_id_of(event: ev.PaymentEvent) -> str:
    """The PayNow order an event is about ("" for a subscription event)."""
    for detail in (event.order, event.refund, event.chargeback):
        if detail is not None:
            return detail.order_id
    return ""


def subscription_ids(order: ev.Order) -> tuple[str, ...]:
    """The subscriptions an order's lines bought, sorted."""
    return tuple(sorted({line.subscription_id for line in order.lines if line.subscription_id}))


def cycles_to_read(
    event: ev.PaymentEvent, order: OrderRecord | None, mapped_uid: str, parked: bool
) -> tuple[str, tuple[str, ...]]:
    """(uid, subscription ids) whose credited cycles the state needs, or ("", ()).

    A refund or dispute of an order reverses the cycles of the subscriptions its lines bought
    with it, and so does a parked one applied with its order: only then are they read.
    """
    if order is not None and (event.refund is not None or event.chargeback is not None):
        uid, subscriptions = order.uid, order.subscription_ids
    elif event.order is not None and parked:
        uid, subscriptions = known_uid(event, mapped_uid), subscription_ids(event.order)
    else:
        return "", ()
    return (uid, subscriptions) if uid and subscriptions else ("", ())
