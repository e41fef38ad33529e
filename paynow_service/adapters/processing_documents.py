"""The documents an event's transaction reads and writes besides the ledger, as Firestore fields.

paynowOrders/{order_id} read back as an `OrderRecord` (every shape written so far), the
events parked on it, users/{uid}/subscriptions/{id} and the event's own webhookEvents
marker. Pure: the transaction in firestore_processing.py does the reads and the writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from paynow_service.adapters.event_codec import decode_stored_event
from paynow_service.domain.decisions import Decision, order_id_of
from paynow_service.domain.events import PaymentEvent
from paynow_service.domain.ledger import EntryRequest
from paynow_service.domain.orders import CreditedEntry, Dispute, OrderRecord
from paynow_service.domain.statuses import DecisionResult, EventStatus


def credited_entries(items: Any) -> tuple[CreditedEntry, ...]:
    """A stored list of {entryId, points, productId}; malformed items are skipped."""
    return tuple(
        CreditedEntry(
            entry_id=str(c["entryId"]), points=int(c["points"]), product_id=str(c.get("productId", ""))
        )
        for c in (items if isinstance(items, list) else [])
        if isinstance(c, dict) and "entryId" in c and isinstance(c.get("points"), int)
    )


def order_record(order_id: str, data: Mapping[str, Any] | None) -> OrderRecord | None:
    """paynowOrders/{id} once the order is credited (a document holding only parked events is not)."""
    if not data or not data.get("uid"):
        return None
    reversed_ = {str(r["entryId"]): int(r["points"]) for r in data.get("reversed") or []}
    reversed_by = str(data.get("reversedBy") or "")
    if data.get("recredited") and data.get("generation") is None:
        reversed_by = ""  # written before generations: a re-credited order is credited again
    generation = data.get("generation")
    disputes = data.get("chargebacks")
    disputes = disputes if isinstance(disputes, dict) else {}
    counts = data.get("reversals")
    if isinstance(counts, dict):
        entry_reversals = {str(k): int(v) for k, v in counts.items() if isinstance(v, int)}
    else:  # written before per-entry counts: what the one reversal took was its first
        entry_reversals = dict.fromkeys(reversed_, 1)
    amounts = data.get("refundAmounts") if isinstance(data.get("refundAmounts"), dict) else {}
    return OrderRecord(
        uid=str(data["uid"]),
        order_id=order_id,
        entry_reversals=entry_reversals,
        refund_amounts={str(k): int(v) for k, v in (amounts or {}).items() if isinstance(v, int)},
        credits=credited_entries(data.get("credits")),
        subscription_ids=tuple(str(s) for s in data.get("subscriptionIds") or []),
        generation=int(generation) if isinstance(generation, int) else int(bool(reversed_)),
        reversed=reversed_,
        reversed_by=reversed_by,
        refunds={str(k): str(v) for k, v in (data.get("refunds") or {}).items()},
        chargebacks={str(k): _dispute(v) for k, v in disputes.items()},
        migrated_from=str(data.get("migratedFrom") or ""),
    )


def _dispute(value: Any) -> Dispute:
    if isinstance(value, dict):
        return Dispute(str(value.get("status", "")), bool(value.get("closed")))
    return Dispute(str(value), str(value).lower() in ("won", "lost"))  # a bare status, written before


def parked_events(data: Mapping[str, Any] | None) -> dict[str, PaymentEvent]:
    """The refunds and disputes stored on the order while it was not credited, decoded (what does not
    decode is left for sweep to dead-letter)."""
    found: dict[str, PaymentEvent] = {}
    for event_id, item in ((data or {}).get("parked") or {}).items():
        event = decode_stored_event(item.get("event") if isinstance(item, dict) else None)
        if event is not None:
            found[str(event_id)] = event
    return found


def subscription_document(
    update: Mapping[str, Any],
    entries: Sequence[EntryRequest],
    prev: Mapping[str, Any] | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """What a subscription decision merges into users/{uid}/subscriptions/{id}, given the document
    as read (`prev`) and the cycle entries the decision writes."""
    fields = dict(update)
    cycle = int(fields.pop("cycle", 0) or 0)
    period_end_ms = fields.pop("currentPeriodEndMs", None)
    doc: dict[str, Any] = {**fields, "updatedAt": now}
    if cycle:
        doc["cyclesCredited"] = max(cycle, int((prev or {}).get("cyclesCredited") or 0))
    # Every cycle entry with its points: a refund or dispute of the order that bought the plan
    # reverses them with the order.
    known = list(credited_entries((prev or {}).get("cycleEntries")))
    fresh = [CreditedEntry(e.entry_id, e.amount or 0) for e in entries]
    listed = {c.entry_id for c in known}
    cycles = known + [c for c in fresh if c.entry_id not in listed]
    if fresh:
        doc["cycleEntries"] = [{"entryId": c.entry_id, "points": c.points} for c in cycles]
    if period_end_ms:
        doc["currentPeriodEnd"] = dt.datetime.fromtimestamp(period_end_ms / 1000, dt.UTC)
    return doc


def event_status(result: DecisionResult) -> EventStatus:
    """The webhookEvents status a written decision leaves (a duplicate writes none)."""
    if result == "ignored":
        return "ignored"
    if result == "parked":
        return "parked"
    return "processed"


def event_marker(
    event: PaymentEvent,
    decision: Decision,
    record: Mapping[str, Any] | None,
    *,
    replaces_record: bool,
    now: dt.datetime,
    ttl: dt.timedelta,
    component: str,
) -> dict[str, Any]:
    """webhookEvents/{event_id} once the event is processed, given its record as read (None: none).

    `replaces_record`: the record is the app's `queued` one, replaced whole by ours.
    """
    marker: dict[str, Any] = {
        "status": event_status(decision.result),
        "processedAt": now,
        "attempts": int((record or {}).get("attempts") or 0) + 1,
        "failureReason": None,
        "result": {
            "outcome": decision.result,
            "uid": decision.uid or None,
            "points": decision.points,
            "entryIds": decision.entry_ids_of(event.event_id),
            "by": component,
        },
    }
    if record is None or replaces_record:
        # Processed without an ingest record of ours (a replay after TTL, a foreign publisher, or
        # the app's `queued` record of an event it never credited, which ours replaces whole).
        marker.update(
            eventType=event.event_type,
            orderingKey=event.resolved_ordering_key(),
            # Ids only, for the operators' search (as the webhook's record has them).
            orderId=order_id_of(event) or None,
            customerId=event.customer_id or None,
            receivedAt=now,
            expiresAt=now + ttl,
        )
        if event.payload_hash:
            # The worker got here before the webhook's record (published and recorded at the same
            # time): the webhook's create then finds this record with its own hash, a duplicate.
            marker["payloadHash"] = event.payload_hash
    if replaces_record:
        marker["takenOverFrom"] = {"by": "app", "appReceivedAt": (record or {}).get("receivedAt")}
    return marker
