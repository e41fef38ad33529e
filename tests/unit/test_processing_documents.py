"""adapters/processing_documents.py: the documents of an event's transaction, field by field."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from paynow_service.adapters.event_codec import encode_event
from paynow_service.adapters.processing_documents import (
    credited_entries,
    event_marker,
    event_status,
    order_record,
    parked_events,
    subscription_document,
)
from paynow_service.domain import events as ev
from paynow_service.domain.decisions import Decision
from paynow_service.domain.ledger import EntryRequest
from paynow_service.domain.orders import CreditedEntry, Dispute, OrderRecord, credits_fields, order_fields

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
TTL = dt.timedelta(days=30)
A, B = CreditedEntry("paynow:order:o1:line:l1", 300, "p1"), CreditedEntry("paynow:order:o1:line:l2", 250)
REFUND = ev.PaymentEvent(
    event_id="e-refund", event_type=ev.REFUND, refund=ev.Refund("r1", "o1", "approved", amount=500)
)


def credit(entry_id: str, amount: int, event_id: str = "e1") -> EntryRequest:
    return EntryRequest(entry_id, "u1", "credit", amount, "paynow", metadata={"eventId": event_id})


def test_an_order_reads_back_as_written() -> None:
    record = OrderRecord(
        uid="u1",
        order_id="o1",
        credits=(A, B),
        subscription_ids=("s1",),
        generation=2,
        entry_reversals={A.entry_id: 2},
        reversed={A.entry_id: 300},
        reversed_by="chargeback:cb1",
        refunds={"r1": "canceled"},
        refund_amounts={"r1": 500},
        chargebacks={"cb1": Dispute("open")},
    )
    stored = {"uid": "u1", "credits": credits_fields(record.credits), "subscriptionIds": ["s1"]}
    assert order_record("o1", {**stored, **order_fields(record)}) == record


def test_an_order_not_credited_yet_is_none() -> None:
    assert order_record("o1", None) is None
    assert order_record("o1", {"parked": {"e-refund": {}}, "parkedAt": NOW}) is None


def test_orders_written_by_earlier_versions() -> None:
    old = {
        "uid": "u1",
        "credits": [{"entryId": A.entry_id, "points": 300}, {"entryId": "bad", "points": "300"}, "junk"],
        "reversed": [{"entryId": A.entry_id, "points": 300}],
        "reversedBy": "refund:r1",
        "recredited": True,  # before generations: re-credited means credited again
        "chargebacks": {"cb1": "won", "cb2": "open"},
        "migratedFrom": "app",
    }
    record = order_record("o1", old)
    assert record is not None
    assert record.credits == (CreditedEntry(A.entry_id, 300),)
    assert (record.reversed_by, record.generation, dict(record.entry_reversals)) == ("", 1, {A.entry_id: 1})
    assert dict(record.chargebacks) == {"cb1": Dispute("won", True), "cb2": Dispute("open", False)}
    assert record.migrated_from == "app"


def test_parked_events_decode_and_what_does_not_is_left_out() -> None:
    stored = {"parked": {"e-refund": {"event": encode_event(REFUND)[0]}, "e-bad": {"event": b"\x00junk"}}}
    assert parked_events(stored) == {"e-refund": REFUND}
    assert parked_events(None) == {}


def test_a_subscription_keeps_every_cycle_it_credited() -> None:
    prev = {"cyclesCredited": 3, "cycleEntries": [{"entryId": "paynow:sub:s1:cycle:1", "points": 1000}]}
    update = {"productId": "plan", "status": "active", "cycle": 2, "currentPeriodEndMs": 1_772_323_200_000}
    doc = subscription_document(update, [credit("paynow:sub:s1:cycle:2", 900)], prev, NOW)
    assert doc == {
        "productId": "plan",
        "status": "active",
        "updatedAt": NOW,
        "cyclesCredited": 3,  # a late cycle never lowers the count
        "cycleEntries": [
            {"entryId": "paynow:sub:s1:cycle:1", "points": 1000},
            {"entryId": "paynow:sub:s1:cycle:2", "points": 900},
        ],
        "currentPeriodEnd": dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
    }
    canceled = subscription_document({"productId": "plan", "status": "canceled"}, [], prev, NOW)
    assert canceled == {"productId": "plan", "status": "canceled", "updatedAt": NOW}
    assert credited_entries(doc["cycleEntries"])[1] == CreditedEntry("paynow:sub:s1:cycle:2", 900)


def test_the_status_a_decision_leaves() -> None:
    assert [event_status(r) for r in ("credited", "no_change", "ignored", "parked", "reversed")] == [
        "processed",
        "processed",
        "ignored",
        "parked",
        "processed",
    ]


def test_the_marker_of_an_event_with_its_ingest_record() -> None:
    decision = Decision(result="reversed", uid="u1", entries=(credit("rev:a", 300, "e-refund"),), points=-300)
    marker = event_marker(
        REFUND,
        decision,
        {"status": "queued", "attempts": 2},
        replaces_record=False,
        now=NOW,
        ttl=TTL,
        component="w",
    )
    assert marker == {
        "status": "processed",
        "processedAt": NOW,
        "attempts": 3,
        "failureReason": None,
        "result": {"outcome": "reversed", "uid": "u1", "points": -300, "entryIds": ["rev:a"], "by": "w"},
    }


def test_the_marker_of_an_event_without_a_record_of_ours() -> None:
    decision = Decision(result="parked", order_id="o1", park=True)
    fresh = event_marker(REFUND, decision, None, replaces_record=False, now=NOW, ttl=TTL, component="w")
    assert (fresh["status"], fresh["result"]["uid"], fresh["attempts"]) == ("parked", None, 1)
    assert (fresh["eventType"], fresh["receivedAt"], fresh["expiresAt"]) == (ev.REFUND, NOW, NOW + TTL)
    app = {"rawEventType": "ON_REFUND", "status": "queued", "receivedAt": NOW - TTL}
    taken = event_marker(REFUND, decision, app, replaces_record=True, now=NOW, ttl=TTL, component="w")
    assert taken["takenOverFrom"] == {"by": "app", "appReceivedAt": NOW - TTL}
    assert taken["orderingKey"] == REFUND.resolved_ordering_key()
    assert "payloadHash" not in fresh  # an event published without its hash writes none


def test_the_marker_written_before_the_webhooks_record_carries_the_events_hash() -> None:
    # The worker got the message before the webhook's create: the create then meets this hash, its own.
    event = replace(REFUND, payload_hash="a" * 64)
    decision = Decision(result="parked", order_id="o1", park=True)
    fresh = event_marker(event, decision, None, replaces_record=False, now=NOW, ttl=TTL, component="w")
    assert fresh["payloadHash"] == "a" * 64
    app = {"rawEventType": "ON_REFUND", "status": "queued", "payloadHash": "the-apps-own"}
    taken = event_marker(event, decision, app, replaces_record=True, now=NOW, ttl=TTL, component="w")
    assert taken["payloadHash"] == "a" * 64  # ours replaces the app's record whole
    ours = event_marker(event, decision, {"status": "queued", "payloadHash": "a" * 64}, replaces_record=False,
                        now=NOW, ttl=TTL, component="w")  # fmt: skip
    assert "payloadHash" not in ours  # merged into the webhook's record, whose hash stays
