"""`decide`: what an event does to the ledger, from the event and the state read for it.

The real plugin manager (built-in catalog plugins loaded by entry point) and a small
catalog; no database. The lifecycle tests replay a sequence of events on a stand-in for
paynowOrders/{order_id} (merged like Firestore's `set(merge=True)`, read back by the
adapter's own reader) and, where balances matter, on the ledger's pure rules.

Every event carries a fixed PayNow timestamp (`sent_at_ms`): a promo credit's lot expires
a number of days after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pluggy
import pytest

from paynow_service import hookimpl
from paynow_service.adapters.processing_documents import order_record as _order_record
from paynow_service.domain import events as ev
from paynow_service.domain.catalog import Catalog, CatalogError, PlanRule, ProductRule
from paynow_service.domain.decisions import Decision, EventState
from paynow_service.domain.errors import (
    InvalidEventError,
    PayloadConflictError,
    UnknownProductError,
    UserNotFoundError,
)
from paynow_service.domain.ledger import Balance, EntryRequest, LedgerEntry, Wallet
from paynow_service.domain.ledger_rules import KeyRecord, LedgerState, plan, read_set
from paynow_service.domain.orders import Dispute, OrderRecord
from paynow_service.domain.statuses import FINAL_STATUSES
from paynow_service.hookspecs import Credit, CreditedEntry, PlannedCredit
from paynow_service.plugins import get_plugin_manager
from paynow_service.service.decide import decide

PACK, BIG_PACK, FREE_PACK, PLAN = "p-pack", "p-big", "p-free", "plan-gold"
SHORT_PACK, PAID_DAYS_PACK, SHORT_PLAN, PAID_PLAN = "p-short", "p-paid-days", "plan-short", "plan-paid"
CATALOG = Catalog.from_toml(
    f"""
[products."{PACK}"]
points = 100

[products."{BIG_PACK}"]
points = 250
kind = "promo"

[products."{FREE_PACK}"]
points = 0

[products."{SHORT_PACK}"]
points = 10
kind = "promo"
expires_in_days = 30

[products."{PAID_DAYS_PACK}"]
points = 5
expires_in_days = 30

[subscriptions."{PLAN}"]
points_per_cycle = 1000

[subscriptions."plan-free"]
points_per_cycle = 0

[subscriptions."{SHORT_PLAN}"]
points_per_cycle = 20
expires_in_days = 90

[subscriptions."{PAID_PLAN}"]
points_per_cycle = 30
kind = "paid"
"""
)
HOOKS = get_plugin_manager().hook
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
# PayNow's timestamp of every test delivery (PayNow-Timestamp), and our receipt of it.
SENT = datetime(2025, 12, 31, 22, 0, 0, 123000, tzinfo=UTC)
SENT_MS = int(SENT.timestamp() * 1000)
RECEIVED = SENT + timedelta(seconds=2)
RECEIVED_MS = int(RECEIVED.timestamp() * 1000)
YEAR = timedelta(days=365)  # the default life of a promo lot


def line(line_id: str, product_id: str = PACK, quantity: int = 1, **kw: str) -> ev.OrderLine:
    return ev.OrderLine(line_id=line_id, product_id=product_id, quantity=quantity, price=500, **kw)


def order_event(
    *lines: ev.OrderLine,
    uid: str = "u1",
    customer_id: str = "c1",
    event_id: str = "e-order",
    sent_at_ms: int = SENT_MS,
    received_at_ms: int = 0,
) -> ev.PaymentEvent:
    return ev.PaymentEvent(
        event_id=event_id,
        event_type=ev.ORDER_COMPLETED,
        uid=uid,
        customer_id=customer_id,
        order=ev.Order(order_id="o1", lines=lines or (line("l1"),)),
        sent_at_ms=sent_at_ms,
        received_at_ms=received_at_ms,
    )


def sub_event(
    event_type: str = ev.SUBSCRIPTION_ACTIVATED,
    cycle: int = 1,
    product_id: str = PLAN,
    uid: str = "u1",
    customer_id: str = "c1",
    period_end_ms: int = 0,
    sent_at_ms: int = SENT_MS,
    received_at_ms: int = 0,
) -> ev.PaymentEvent:
    return ev.PaymentEvent(
        event_id=f"e-sub-{cycle}",
        event_type=event_type,
        uid=uid,
        customer_id=customer_id,
        sent_at_ms=sent_at_ms,
        received_at_ms=received_at_ms,
        subscription=ev.Subscription(
            subscription_id="s1",
            product_id=product_id,
            billing_cycle_sequence=cycle,
            status="active" if event_type != ev.SUBSCRIPTION_CANCELED else "canceled",
            current_period_end_ms=period_end_ms,
        ),
    )


def refund_event(status: str, refund_id: str = "r1", sent_at_ms: int = SENT_MS) -> ev.PaymentEvent:
    return ev.PaymentEvent(
        event_id=f"e-refund-{refund_id}-{status}",
        event_type=ev.REFUND,
        sent_at_ms=sent_at_ms,
        refund=ev.Refund(refund_id=refund_id, order_id="o1", status=status),
    )


def chargeback_event(
    event_type: str = ev.CHARGEBACK, outcome: str = "", cb_id: str = "cb1", status: str = "open"
) -> ev.PaymentEvent:
    return ev.PaymentEvent(
        event_id=f"e-{cb_id}-{event_type}-{outcome}",
        event_type=event_type,
        sent_at_ms=SENT_MS,
        chargeback=ev.Chargeback(
            chargeback_id=cb_id, order_id="o1", status=status, chargeback_status=outcome
        ),
    )


L1, L2 = "paynow:order:o1:line:l1", "paynow:order:o1:line:l2"
S1, S2 = "paynow:sub:s1:cycle:1", "paynow:sub:s1:cycle:2"
CREDITS = (CreditedEntry(L1, 300, PACK), CreditedEntry(L2, 250, BIG_PACK))


def credited(**kw: Any) -> EventState:
    """paynowOrders/o1 as the adapter reads it: credited (with `kw`: where its refunds and disputes stand)."""
    return EventState(order=OrderRecord(uid="u1", order_id="o1", credits=CREDITS, **kw))


def run(event: ev.PaymentEvent, state: EventState | None = None, hooks: pluggy.HookRelay = HOOKS) -> Decision:
    return decide(event, state or EventState(), hooks, CATALOG)


def amounts(decision: Decision) -> dict[str, int | None]:
    return {entry.entry_id: entry.amount for entry in decision.entries}


# ---- dispatch: duplicates, ignored types, missing details ----


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
def test_event_in_a_final_status_is_a_duplicate(status: str) -> None:
    # Even an event that would fail (unknown product, no uid) is only a duplicate now.
    event = order_event(line("l1", "unknown"), uid="", customer_id="")
    decision = run(event, EventState(event_status=status))
    assert decision == Decision(result="duplicate")
    assert not decision.writes


def test_every_documented_final_status_counts_as_duplicate() -> None:
    assert {"processed", "ignored", "failed_terminal", "dead_lettered", "parked"} == FINAL_STATUSES


@pytest.mark.parametrize("status", [None, "queued"])
def test_event_not_yet_final_is_processed(status: str | None) -> None:
    decision = run(order_event(), EventState(event_status=status))
    assert decision.result == "credited"
    assert decision.writes


# ---- the event's payload hash against its record's (the webhook publishes while it records) ----


@pytest.mark.parametrize("status", [None, "queued", *sorted(FINAL_STATUSES)])
def test_another_body_than_the_records_is_a_payload_conflict_whatever_the_status(status: str | None) -> None:
    # A copy published by a delivery of the same id with another body: never credited, not even
    # answered "duplicate" (it is dead-lettered, so that it can be seen).
    event = replace(order_event(), payload_hash="b" * 64)
    with pytest.raises(PayloadConflictError) as raised:
        run(event, EventState(event_status=status, payload_hash="a" * 64))
    assert raised.value.reason == "payload_conflict"
    assert raised.value.error_class == "terminal"


def test_the_records_own_body_is_processed_then_a_duplicate() -> None:
    event = replace(order_event(), payload_hash="a" * 64)
    assert run(event, EventState(event_status="queued", payload_hash="a" * 64)).result == "credited"
    assert run(event, EventState(event_status="processed", payload_hash="a" * 64)).result == "duplicate"


@pytest.mark.parametrize(("carried", "recorded"), [("", "a" * 64), ("b" * 64, ""), ("", "")])
def test_a_hash_missing_on_either_side_is_not_compared(carried: str, recorded: str) -> None:
    # Messages published before the field existed, records the worker wrote without one.
    event = replace(order_event(), payload_hash=carried)
    assert run(event, EventState(event_status="queued", payload_hash=recorded)).result == "credited"
    assert run(event, EventState(event_status="processed", payload_hash=recorded)).result == "duplicate"


@pytest.mark.parametrize(("status", "expected"), [("processed", "duplicate"), ("queued", "credited")])
def test_the_apps_records_are_judged_by_their_status_not_their_hash(status: str, expected: str) -> None:
    event = replace(order_event(), payload_hash="b" * 64)
    state = EventState(event_status=status, app_record=True, payload_hash="the-apps-own")
    assert run(event, state).result == expected


# ---- the app's own records, from before cut-over (rawEventType, its statuses) ----


@pytest.mark.parametrize("status", ["processed", "skipped"])
def test_an_event_the_app_handled_is_a_plain_duplicate(status: str) -> None:
    decision = run(order_event(), EventState(event_status=status, app_record=True))
    assert decision == Decision(result="duplicate")


def test_an_event_the_app_only_queued_is_credited() -> None:
    # The app's queue worker took every queued event for processed: it never credited it.
    decision = run(order_event(), EventState(event_status="queued", app_record=True))
    assert (decision.result, amounts(decision)) == ("credited", {L1: 100})


@pytest.mark.parametrize("status", ["received", "failed", "failed_terminal", "not-a-status"])
def test_an_event_the_app_left_unfinished_is_a_flagged_duplicate(status: str) -> None:
    # It may have credited some lines and not others: never credited again, flagged for reconciliation.
    decision = run(order_event(), EventState(event_status=status, app_record=True))
    assert decision == Decision(result="duplicate", flag="app_unfinished")
    assert not decision.writes


def test_a_new_delivery_of_an_order_the_app_credited_credits_nothing() -> None:
    # `migrate orders` recorded the app's credits (its own entry ids) on paynowOrders.
    migrated = OrderRecord(
        uid="u1", order_id="o1", credits=(CreditedEntry("app-entry-1", 100),), migrated_from="app"
    )
    decision = run(order_event(event_id="e-other-delivery"), EventState(order=migrated))
    assert (decision.result, decision.entries, decision.points, decision.order_update) == (
        "no_change",
        (),
        0,
        None,
    )


@pytest.mark.parametrize(
    "event_type",
    [
        "ON_PAYMENT_SUCCEEDED",
        "ON_TRIAL_ACTIVATED",
        "ON_DELIVERY_ITEM_ADDED",
        "ON_DISCORD_ACCOUNT_LINKED_TO_CHECKOUT",
        "ON_SOMETHING_NEW",
    ],
)
def test_unhandled_types_are_ignored(event_type: str) -> None:
    decision = run(ev.PaymentEvent(event_id="e1", event_type=event_type, uid="u1"))
    assert decision.result == "ignored"
    assert decision.writes  # the event is still marked
    assert decision.entries == ()


def test_ignored_type_already_final_is_a_duplicate() -> None:
    event = ev.PaymentEvent(event_id="e1", event_type="ON_PAYMENT_SUCCEEDED")
    assert run(event, EventState(event_status="ignored")).result == "duplicate"


@pytest.mark.parametrize("event_type", sorted(ev.HANDLED_TYPES))
def test_handled_type_without_its_details_is_invalid(event_type: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        run(ev.PaymentEvent(event_id="e1", event_type=event_type, uid="u1"))
    assert caught.value.reason == "invalid_event"


def test_details_of_another_type_are_invalid() -> None:
    event = ev.PaymentEvent(
        event_id="e1",
        event_type=ev.ORDER_COMPLETED,
        uid="u1",
        subscription=ev.Subscription(subscription_id="s1", product_id=PLAN, billing_cycle_sequence=1),
    )
    with pytest.raises(InvalidEventError):
        run(event)


# ---- orders ----


def test_order_credits_each_line_quantity_times_points() -> None:
    decision = run(order_event(line("l1", PACK, quantity=3), line("l2", BIG_PACK)))
    assert decision.result == "credited"
    assert decision.uid == "u1"
    assert decision.order_id == "o1"
    assert amounts(decision) == {L1: 300, L2: 250}
    assert [e.kind for e in decision.entries] == ["paid", "promo"]
    assert [e.expires_at for e in decision.entries] == [None, SENT + YEAR]
    assert all(e.action == "credit" and e.source == "paynow" and e.uid == "u1" for e in decision.entries)
    assert {(e.label, e.note) for e in decision.entries} == {("paynow.order", "order o1")}
    assert all(e.reversal_of is None for e in decision.entries)
    assert decision.entries[0].metadata == {
        "eventId": "e-order",
        "orderId": "o1",
        "productId": PACK,
        "lineId": "l1",
        "quantity": 3,
    }
    assert decision.points == 550


def test_order_records_its_credits_for_refunds() -> None:
    decision = run(order_event(line("l1", PACK, quantity=3), line("l2", BIG_PACK)))
    assert decision.order_update == {
        "uid": "u1",
        "customerId": "c1",
        "eventId": "e-order",
        "entryIds": [L1, L2],
        "credits": [
            {"entryId": L1, "points": 300, "productId": PACK},
            {"entryId": L2, "points": 250, "productId": BIG_PACK},
        ],
        "points": 550,
        # Where its refunds and disputes stand: none yet.
        "generation": 0,
        "reversals": {},
        "reversed": [],
        "reversedBy": "",
        "status": "credited",
        "refunds": {},
        "refundAmounts": {},
        "chargebacks": {},
    }
    assert decision.applied_parked == ()


def test_order_redelivered_keeps_the_order_status() -> None:
    # The webhookEvents record expired (TTL) and PayNow sent the order again.
    first = run(order_event())
    again = run(
        order_event(), EventState(order=OrderRecord(uid="u1", credits=(CreditedEntry(L1, 100, PACK),)))
    )
    assert again.entries == first.entries  # same entry ids: the ledger replays them
    assert again.order_update is not None
    assert "status" not in again.order_update  # a "reversed" order stays reversed


def test_order_skips_subscription_and_trial_lines() -> None:
    event = order_event(
        line("l1", PACK),
        line("l2", PLAN, subscription_id="s1"),  # a plan id is no product: it must not even be looked up
        line("l3", "trial-product", trial_id="t1"),
    )
    decision = run(event)
    assert amounts(decision) == {L1: 100}


def test_subscription_purchase_credits_the_plan_once_not_also_as_a_product() -> None:
    order = run(order_event(line("l1", PLAN, subscription_id="s1")))
    activated = run(sub_event(ev.SUBSCRIPTION_ACTIVATED, cycle=1))
    assert order.result == "no_change"
    assert order.entries == ()
    assert amounts(activated) == {"paynow:sub:s1:cycle:1": 1000}
    assert order.order_update is not None
    assert order.order_update["credits"] == []  # a later refund has nothing to reverse


def test_order_line_worth_zero_points_writes_no_entry() -> None:
    decision = run(order_event(line("l1", FREE_PACK, quantity=5)))
    assert decision.result == "no_change"
    assert decision.entries == ()
    assert decision.points == 0


def test_order_with_an_unknown_product_fails_as_a_whole() -> None:
    with pytest.raises(UnknownProductError, match=r"p-nope.*l2"):
        run(order_event(line("l1"), line("l2", "p-nope")))


def test_order_extra_credits_get_extra_entry_ids() -> None:
    class Bundle:
        @hookimpl
        def paynow_adjust_credits(self) -> list[PlannedCredit]:
            return [PlannedCredit(key="bundle", points=40, kind="promo", product_id=PACK)]

    decision = run(order_event(), hooks=get_plugin_manager([Bundle()]).hook)
    assert amounts(decision) == {L1: 100, "paynow:order:o1:extra:bundle": 40}
    extra = decision.entries[1]
    assert extra.kind == "promo"
    assert extra.expires_at == SENT + YEAR  # an extra without expires_in_days: the default
    assert (extra.label, extra.note) == ("paynow.order", "order o1")
    assert "lineId" not in extra.metadata
    assert decision.order_update is not None
    assert decision.order_update["credits"][1] == {
        "entryId": "paynow:order:o1:extra:bundle",
        "points": 40,
        "productId": PACK,
    }


def test_order_extra_credit_keyed_like_a_skipped_line_is_still_an_extra() -> None:
    class KeyedLikeALine:
        @hookimpl
        def paynow_adjust_credits(self) -> list[PlannedCredit]:
            return [PlannedCredit(key="l2", points=5, product_id="bonus")]

    event = order_event(line("l1"), line("l2", PLAN, subscription_id="s1"))
    decision = run(event, hooks=get_plugin_manager([KeyedLikeALine()]).hook)
    assert amounts(decision) == {L1: 100, "paynow:order:o1:extra:l2": 5}


# ---- who the user is ----


@pytest.mark.parametrize(
    ("event_uid", "line_uids", "mapped", "expected"),
    [
        ("u-meta", ("", "u-line"), "u-map", "u-meta"),  # checkout metadata first
        ("", ("", "u-line"), "u-map", "u-line"),  # then a line's metadata
        ("", ("", ""), "u-map", "u-map"),  # then paynowCustomers
    ],
    ids=["checkout-metadata", "line-metadata", "customer-mapping"],
)
def test_order_uid_resolution(event_uid: str, line_uids: tuple[str, str], mapped: str, expected: str) -> None:
    event = order_event(line("l1", uid=line_uids[0]), line("l2", uid=line_uids[1]), uid=event_uid)
    decision = run(event, EventState(mapped_uid=mapped))
    assert decision.uid == expected
    assert {e.uid for e in decision.entries} == {expected}


def test_order_without_any_uid_is_user_not_found() -> None:
    with pytest.raises(UserNotFoundError, match="c1") as caught:
        run(order_event(uid=""))
    assert caught.value.reason == "user_not_found"


def test_order_without_uid_or_customer_is_user_not_found() -> None:
    with pytest.raises(UserNotFoundError, match=r"\(none\)"):
        run(order_event(uid="", customer_id=""))


@pytest.mark.parametrize(
    ("customer_id", "mapped", "expected"),
    [
        ("c1", "", ("c1", "u1")),  # not mapped yet
        ("c1", "u-old", ("c1", "u1")),  # mapped to someone else: the event's uid wins
        ("c1", "u1", None),  # already right: no write
        ("", "", None),  # nothing to map
    ],
    ids=["new", "changed", "same", "no-customer"],
)
def test_customer_mapping_is_proposed_only_when_needed(
    customer_id: str, mapped: str, expected: tuple[str, str] | None
) -> None:
    order = run(order_event(customer_id=customer_id), EventState(mapped_uid=mapped))
    sub = run(sub_event(customer_id=customer_id), EventState(mapped_uid=mapped))
    cancel = run(sub_event(ev.SUBSCRIPTION_CANCELED, customer_id=customer_id), EventState(mapped_uid=mapped))
    assert order.customer_mapping == sub.customer_mapping == cancel.customer_mapping == expected


def test_uid_found_through_the_mapping_proposes_no_mapping() -> None:
    decision = run(order_event(uid=""), EventState(mapped_uid="u9"))
    assert decision.uid == "u9"
    assert decision.customer_mapping is None


# ---- subscriptions ----


@pytest.mark.parametrize(
    ("event_type", "cycle"), [(ev.SUBSCRIPTION_ACTIVATED, 1), (ev.SUBSCRIPTION_RENEWED, 7)]
)
def test_subscription_cycle_is_credited_under_its_cycle_entry_id(event_type: str, cycle: int) -> None:
    decision = run(sub_event(event_type, cycle=cycle, period_end_ms=1767225600000))
    assert decision.result == "credited"
    assert amounts(decision) == {f"paynow:sub:s1:cycle:{cycle}": 1000}
    entry = decision.entries[0]
    # A plan without `kind` grants promo points (the app's default), in a lot of 365 days.
    assert (entry.action, entry.kind, entry.source, entry.uid) == ("credit", "promo", "paynow", "u1")
    assert entry.expires_at == SENT + YEAR
    assert (entry.label, entry.note) == ("paynow.subscription", f"subscription s1 cycle {cycle}")
    assert entry.metadata == {
        "eventId": f"e-sub-{cycle}",
        "subscriptionId": "s1",
        "cycle": cycle,
        "productId": PLAN,
    }
    assert decision.subscription_update == {
        "productId": PLAN,
        "status": "active",
        "currentPeriodEndMs": 1767225600000,
        "pointsPerCycle": 1000,
        "cycle": cycle,
    }
    assert decision.order_update is None
    assert decision.points == 1000


def test_subscription_without_period_end_does_not_write_one() -> None:
    decision = run(sub_event())
    assert decision.subscription_update is not None
    assert "currentPeriodEndMs" not in decision.subscription_update


def test_subscription_canceled_updates_the_status_only() -> None:
    # Cancellations carry no usable cycle, and the plan need not be in the catalog.
    decision = run(sub_event(ev.SUBSCRIPTION_CANCELED, cycle=0, product_id="plan-retired"))
    assert decision.result == "status_updated"
    assert decision.entries == ()
    assert decision.points == 0
    assert decision.subscription_update == {"productId": "plan-retired", "status": "canceled"}
    assert decision.uid == "u1"


@pytest.mark.parametrize("event_type", [ev.SUBSCRIPTION_ACTIVATED, ev.SUBSCRIPTION_RENEWED])
@pytest.mark.parametrize("cycle", [-1, -7])
def test_subscription_negative_cycle_is_invalid(event_type: str, cycle: int) -> None:
    with pytest.raises(InvalidEventError, match="billing cycle") as caught:
        run(sub_event(event_type, cycle=cycle))
    assert caught.value.reason == "invalid_event"


@pytest.mark.parametrize("event_type", [ev.SUBSCRIPTION_ACTIVATED, ev.SUBSCRIPTION_RENEWED])
def test_subscription_cycle_zero_is_a_cycle_like_any_other(event_type: str) -> None:
    # PayNow's schema sets no minimum for billing_cycle_sequence; the parser accepts 0, so does decide.
    decision = run(sub_event(event_type, cycle=0))
    assert amounts(decision) == {"paynow:sub:s1:cycle:0": 1000}


def test_subscription_plan_unknown_is_unknown_product() -> None:
    with pytest.raises(UnknownProductError, match="plan-nope"):
        run(sub_event(product_id="plan-nope"))


def test_subscription_plan_worth_zero_points_still_updates_the_subscription() -> None:
    decision = run(sub_event(product_id="plan-free"))
    assert decision.result == "no_change"
    assert decision.entries == ()
    assert decision.subscription_update is not None
    assert decision.subscription_update["pointsPerCycle"] == 0


def test_subscription_uid_from_mapping_else_user_not_found() -> None:
    assert run(sub_event(uid=""), EventState(mapped_uid="u-map")).uid == "u-map"
    with pytest.raises(UserNotFoundError):
        run(sub_event(uid=""))
    with pytest.raises(UserNotFoundError):
        run(sub_event(ev.SUBSCRIPTION_CANCELED, uid=""))


# ---- refunds ----


def order_doc(**changes: Any) -> dict[str, Any]:
    """The dispute fields `decide` writes to paynowOrders/o1: those of a credited order, with `changes`."""
    return {
        "generation": 0,
        "reversals": {},
        "reversed": [],
        "reversedBy": "",
        "status": "credited",
        "refunds": {},
        "refundAmounts": {},
        "chargebacks": {},
        **changes,
    }


ALL_TAKEN = [{"entryId": L1, "points": 300}, {"entryId": L2, "points": 250}]
ONCE = {L1: 1, L2: 1}  # each entry reversed once
TWICE = {L1: 2, L2: 2}
OPEN = {"status": "open", "closed": False}  # a dispute opened, as stored
WON = Dispute("won", closed=True)


def held_by(by: str, taken: Mapping[str, int] | None = None) -> EventState:
    """The order as its first reversal left it: held by `by` ("refund:r1", "chargeback:cb1")."""
    kind, _, ident = by.partition(":")
    seen: dict[str, Any] = (
        {"refunds": {ident: "approved"}, "refund_amounts": {ident: 0}}
        if kind == "refund"
        else {"chargebacks": {ident: Dispute("open")}}
    )
    taken = dict(taken or {L1: 300, L2: 250})
    return credited(
        generation=1, entry_reversals=dict.fromkeys(taken, 1), reversed=taken, reversed_by=by, **seen
    )


def recredited_once(**seen: Any) -> EventState:
    """The order after its first reversal was re-credited: credited again, generation 1."""
    return credited(generation=1, entry_reversals=ONCE, reversed={L1: 300, L2: 250}, **seen)


@pytest.mark.parametrize("status", ["approved", "completed"])
def test_refund_reverses_every_credit_of_the_order(status: str) -> None:
    decision = run(refund_event(status), credited())
    assert decision.result == "reversed"
    assert decision.uid == "u1"
    assert decision.order_id == "o1"
    assert amounts(decision) == {f"rev:{L1}": None, f"rev:{L2}": None}  # None: the original's amount
    assert [e.reversal_of for e in decision.entries] == [L1, L2]
    assert all(e.action == "reversal" and e.uid == "u1" and e.source == "paynow" for e in decision.entries)
    assert [e.generation for e in decision.entries] == [1, 1]
    for entry in decision.entries:
        assert entry.metadata["eventId"] == f"e-refund-r1-{status}"
        assert entry.metadata["reversalOf"] == entry.reversal_of
        assert entry.metadata["by"] == "refund:r1"
    assert decision.points == -550
    assert decision.order_update == order_doc(
        generation=1,
        reversals=ONCE,
        reversed=ALL_TAKEN,
        reversedBy="refund:r1",
        status="reversed",
        refunds={"r1": status},
        refundAmounts={"r1": 0},
    )
    assert not decision.park
    assert decision.applied_parked == ()


def test_reversal_and_recredit_metadata_name_their_order() -> None:
    reversal = run(refund_event("approved"), credited()).entries[0]
    recredit = run(refund_event("failed"), held_by("refund:r1")).entries[0]
    assert reversal.metadata == {
        "eventId": "e-refund-r1-approved",
        "orderId": "o1",
        "reversalOf": L1,
        "by": "refund:r1",
    }
    # The re-credit names the reversal it gives back: who held the order.
    assert recredit.metadata == {
        "eventId": "e-refund-r1-failed",
        "orderId": "o1",
        "recreditOf": L1,
        "by": "refund:r1",
    }


def test_reversal_of_a_cycle_names_the_order_whose_dispute_took_it() -> None:
    state = replace(credited(subscription_ids=("s1",)), cycles=(CreditedEntry(S1, 1000, PLAN),))
    reversal = run(chargeback_event(), state).entries[-1]
    assert (reversal.entry_id, reversal.reversal_of) == (f"rev:{S1}", S1)
    assert reversal.metadata == {
        "eventId": f"e-cb1-{ev.CHARGEBACK}-",
        "orderId": "o1",
        "reversalOf": S1,
        "by": "chargeback:cb1",
    }


def test_an_order_read_back_names_itself_in_its_reversals() -> None:
    # A new order's record carries its id, so what it applies (here a parked refund) names it too.
    decision = run(order_event(), EventState(parked=(refund_event("approved"),)))
    assert [e.metadata.get("orderId") for e in decision.entries] == ["o1", "o1"]
    assert decision.entries[1].metadata["by"] == "refund:r1"


REFUND_STATUSES = ["created", "approved", "processing", "completed", "canceled", "failed"]


@pytest.mark.parametrize(
    "event",
    [refund_event(status) for status in REFUND_STATUSES]
    + [
        chargeback_event(),
        chargeback_event(ev.CHARGEBACK_CLOSED, outcome="won"),
        chargeback_event(ev.CHARGEBACK_CLOSED, outcome="lost"),
    ],
    ids=[f"refund-{status}" for status in REFUND_STATUSES] + ["chargeback", "closed-won", "closed-lost"],
)
def test_refund_or_chargeback_before_the_order_is_credited_is_parked(event: ev.PaymentEvent) -> None:
    # Acknowledged and stored on the order: its own transaction applies it (no more OrderNotCreditedError).
    decision = run(event)
    assert decision == Decision(result="parked", order_id="o1", park=True)
    assert decision.writes


def test_parked_event_delivered_again_is_a_duplicate() -> None:
    assert "parked" in FINAL_STATUSES
    assert run(refund_event("approved"), EventState(event_status="parked")) == Decision(result="duplicate")


@pytest.mark.parametrize("status", ["created", "processing", "canceled", "failed", "something-new"])
def test_refund_in_another_status_only_records_it(status: str) -> None:
    decision = run(refund_event(status), credited())
    assert decision.result == "status_updated"
    assert decision.entries == ()
    assert decision.points == 0
    assert decision.order_update == order_doc(refunds={"r1": status}, refundAmounts={"r1": 0})


def test_refund_status_is_recorded_in_lower_case() -> None:
    decision = run(refund_event("APPROVED"), credited())
    assert decision.result == "reversed"
    assert decision.order_update is not None
    assert decision.order_update["refunds"] == {"r1": "approved"}


def test_refund_delivered_again_changes_nothing() -> None:
    decision = run(refund_event("approved"), held_by("refund:r1"))
    assert decision == Decision(result="no_change", uid="u1", order_id="o1")


@pytest.mark.parametrize(
    ("event", "seen"),
    [
        (refund_event("completed"), {"refunds": {"r1": "completed"}, "refundAmounts": {"r1": 0}}),
        (
            refund_event("approved", "r2"),
            {"refunds": {"r1": "approved", "r2": "approved"}, "refundAmounts": {"r1": 0, "r2": 0}},
        ),
        (
            refund_event("failed", "r2"),
            {"refunds": {"r1": "approved", "r2": "failed"}, "refundAmounts": {"r1": 0, "r2": 0}},
        ),
        (
            chargeback_event(),
            {"refunds": {"r1": "approved"}, "refundAmounts": {"r1": 0}, "chargebacks": {"cb1": OPEN}},
        ),
    ],
    ids=["completed-after-approved", "another-refund", "another-refund-failed", "chargeback"],
)
def test_nothing_more_is_reversed_after_a_refund(event: ev.PaymentEvent, seen: dict[str, Any]) -> None:
    decision = run(event, held_by("refund:r1"))
    assert decision.result == "status_updated"  # the status is recorded, no point moves
    assert decision.entries == ()
    assert decision.points == 0
    assert decision.order_update == order_doc(
        generation=1, reversals=ONCE, reversed=ALL_TAKEN, reversedBy="refund:r1", status="reversed", **seen
    )


@pytest.mark.parametrize("status", ["canceled", "cancelled", "failed"])
def test_refund_undone_after_the_reversal_recredits(status: str) -> None:
    state = held_by("refund:r1", {L1: 300, L2: 100})
    decision = run(refund_event(status), state)
    assert decision.result == "recredited"
    # amount None: the ledger re-credits exactly what each reversal took.
    assert amounts(decision) == {f"recredit:{L1}": None, f"recredit:{L2}": None}
    assert [e.reversal_of for e in decision.entries] == [L1, L2]
    assert all(e.action == "credit" and e.uid == "u1" and e.generation == 1 for e in decision.entries)
    for entry in decision.entries:
        assert entry.metadata["eventId"] == f"e-refund-r1-{status}"
        assert entry.metadata["recreditOf"] == entry.reversal_of
    assert decision.points == 400
    assert decision.order_update == order_doc(
        generation=1,
        reversals=ONCE,
        reversed=[{"entryId": L1, "points": 300}, {"entryId": L2, "points": 100}],
        reversedBy="",
        status="recredited",
        refunds={"r1": status},
        refundAmounts={"r1": 0},
    )


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (
            held_by("refund:r2"),
            order_doc(
                generation=1,
                reversals=ONCE,
                reversed=ALL_TAKEN,
                reversedBy="refund:r2",
                status="reversed",
                refunds={"r2": "approved", "r1": "canceled"},
                refundAmounts={"r2": 0, "r1": 0},
            ),
        ),
        (
            held_by("chargeback:cb1"),
            order_doc(
                generation=1,
                reversals=ONCE,
                reversed=ALL_TAKEN,
                reversedBy="chargeback:cb1",
                status="reversed",
                refunds={"r1": "canceled"},
                refundAmounts={"r1": 0},
                chargebacks={"cb1": OPEN},
            ),
        ),
        (credited(), order_doc(refunds={"r1": "canceled"}, refundAmounts={"r1": 0})),
    ],
    ids=["other-refund", "chargeback", "not-reversed"],
)
def test_refund_canceled_recredits_only_its_own_reversal(state: EventState, expected: dict[str, Any]) -> None:
    decision = run(refund_event("canceled"), state)
    assert decision.result == "status_updated"
    assert decision.entries == ()
    assert decision.points == 0
    assert decision.order_update == expected


@pytest.mark.parametrize("status", ["canceled", "failed", "approved", "completed"])
def test_refund_recredited_once_changes_nothing_more(status: str) -> None:
    # canceled and failed are as far as a refund goes: anything of the same refund after is stale.
    decision = run(refund_event(status), recredited_once(refunds={"r1": "canceled"}))
    assert decision == Decision(result="no_change", uid="u1", order_id="o1")


def test_refund_failed_then_approved_never_reverses() -> None:
    # PayNow's retries overtook each other: the later status came first.
    failed = run(refund_event("failed"), credited())
    assert failed.result == "status_updated"
    assert failed.order_update == order_doc(refunds={"r1": "failed"}, refundAmounts={"r1": 0})
    approved = run(refund_event("approved"), credited(refunds={"r1": "failed"}))
    assert approved == Decision(result="no_change", uid="u1", order_id="o1")


def test_refund_reverses_the_cycles_the_order_bought_after_its_lines() -> None:
    cycles = (CreditedEntry(S1, 1000, PLAN), CreditedEntry(S2, 1000, PLAN))
    decision = run(refund_event("approved"), replace(credited(), cycles=cycles))
    assert [e.entry_id for e in decision.entries] == [f"rev:{L1}", f"rev:{L2}", f"rev:{S1}", f"rev:{S2}"]
    assert decision.points == -2550
    assert decision.order_update is not None
    assert decision.order_update["reversed"] == [
        *ALL_TAKEN,
        *({"entryId": s, "points": 1000} for s in (S1, S2)),
    ]


def test_refund_partial_through_the_hook() -> None:
    class Partial:
        @hookimpl
        def paynow_refund_points(self) -> int:
            return 400

    decision = run(refund_event("approved"), credited(), hooks=get_plugin_manager([Partial()]).hook)
    assert amounts(decision) == {f"rev:{L1}": None, f"rev:{L2}": 100}
    assert decision.points == -400
    assert decision.order_update is not None
    assert decision.order_update["reversed"] == [
        {"entryId": L1, "points": 300},
        {"entryId": L2, "points": 100},
    ]


def test_refund_after_a_recredit_reverses_again_as_generation_two() -> None:
    decision = run(refund_event("approved", "r2"), recredited_once(chargebacks={"cb1": WON}))
    assert decision.result == "reversed"
    assert amounts(decision) == {f"rev2:{L1}": None, f"rev2:{L2}": None}
    assert [e.generation for e in decision.entries] == [2, 2]
    assert decision.points == -550
    assert decision.order_update == order_doc(
        generation=2,
        reversals=TWICE,
        reversed=ALL_TAKEN,
        reversedBy="refund:r2",
        status="reversed",
        refunds={"r2": "approved"},
        refundAmounts={"r2": 0},
        chargebacks={"cb1": {"status": "won", "closed": True}},
    )


# ---- chargebacks ----


def test_chargeback_reverses_every_credit_once() -> None:
    decision = run(chargeback_event(), credited())
    assert decision.result == "reversed"
    assert amounts(decision) == {f"rev:{L1}": None, f"rev:{L2}": None}
    assert [e.metadata["by"] for e in decision.entries] == ["chargeback:cb1"] * 2
    assert [e.generation for e in decision.entries] == [1, 1]
    assert decision.points == -550
    assert decision.order_update == order_doc(
        generation=1,
        reversals=ONCE,
        reversed=ALL_TAKEN,
        reversedBy="chargeback:cb1",
        status="reversed",
        chargebacks={"cb1": OPEN},
    )


def test_chargeback_does_not_ask_the_refund_hook() -> None:
    class Partial:
        @hookimpl
        def paynow_refund_points(self) -> int:
            return 1

    decision = run(chargeback_event(), credited(), hooks=get_plugin_manager([Partial()]).hook)
    assert decision.points == -550


def test_chargeback_again_reverses_nothing_more() -> None:
    decision = run(chargeback_event(), held_by("chargeback:cb1"))
    assert decision == Decision(result="no_change", uid="u1", order_id="o1")


def test_chargeback_in_a_new_open_status_only_records_it() -> None:
    decision = run(chargeback_event(status="under_review"), held_by("chargeback:cb1"))
    assert decision.result == "status_updated"
    assert decision.entries == ()
    assert decision.order_update == order_doc(
        generation=1,
        reversals=ONCE,
        reversed=ALL_TAKEN,
        reversedBy="chargeback:cb1",
        status="reversed",
        chargebacks={"cb1": {"status": "under_review", "closed": False}},
    )


def test_chargeback_won_recredits_once() -> None:
    state = held_by("chargeback:cb1")
    decision = run(chargeback_event(ev.CHARGEBACK_CLOSED, outcome="won", status="closed"), state)
    assert decision.result == "recredited"
    assert amounts(decision) == {f"recredit:{L1}": None, f"recredit:{L2}": None}  # what the reversals took
    assert [e.generation for e in decision.entries] == [1, 1]
    assert decision.points == 550
    assert decision.order_update == order_doc(
        generation=1,
        reversals=ONCE,
        reversed=ALL_TAKEN,
        reversedBy="",
        status="recredited",
        chargebacks={"cb1": {"status": "won", "closed": True}},
    )


@pytest.mark.parametrize(
    ("outcome", "state", "reversed_by", "seen"),
    [
        ("lost", held_by("chargeback:cb1"), "chargeback:cb1", {}),
        (
            "won",
            held_by("refund:r1"),
            "refund:r1",
            {"refunds": {"r1": "approved"}, "refundAmounts": {"r1": 0}},
        ),
        (
            "lost",
            held_by("refund:r1"),
            "refund:r1",
            {"refunds": {"r1": "approved"}, "refundAmounts": {"r1": 0}},
        ),
        ("won", held_by("chargeback:cb2"), "chargeback:cb2", {"cb2": OPEN}),
    ],
    ids=["lost", "reversed-by-refund", "lost-while-reversed-by-refund", "another-chargeback"],
)
def test_chargeback_closed_recredits_nothing_otherwise(
    outcome: str, state: EventState, reversed_by: str, seen: dict[str, Any]
) -> None:
    decision = run(chargeback_event(ev.CHARGEBACK_CLOSED, outcome=outcome), state)
    assert decision.result == "status_updated"
    assert decision.entries == ()
    assert decision.points == 0
    closed = {"cb1": {"status": outcome, "closed": True}}
    other_disputes = {k: v for k, v in seen.items() if k not in ("refunds", "refundAmounts")}
    assert decision.order_update == order_doc(
        generation=1,
        reversals=ONCE,
        reversed=ALL_TAKEN,
        reversedBy=reversed_by,
        status="reversed",
        refunds=seen.get("refunds", {}),
        refundAmounts=seen.get("refundAmounts", {}),
        chargebacks={**other_disputes, **closed},
    )


@pytest.mark.parametrize(
    "event",
    [
        chargeback_event(ev.CHARGEBACK_CLOSED, outcome="won"),
        chargeback_event(ev.CHARGEBACK_CLOSED, outcome="lost"),
        chargeback_event(),
    ],
    ids=["won-twice", "lost-after-won", "opened-after-closed"],
)
def test_chargeback_closed_is_final(event: ev.PaymentEvent) -> None:
    decision = run(event, recredited_once(chargebacks={"cb1": WON}))
    assert decision == Decision(result="no_change", uid="u1", order_id="o1")


def test_chargeback_lost_whose_opening_was_missed_reverses() -> None:
    decision = run(chargeback_event(ev.CHARGEBACK_CLOSED, outcome="lost"), credited())
    assert decision.result == "reversed"
    assert amounts(decision) == {f"rev:{L1}": None, f"rev:{L2}": None}
    assert decision.order_update == order_doc(
        generation=1,
        reversals=ONCE,
        reversed=ALL_TAKEN,
        reversedBy="chargeback:cb1",
        status="reversed",
        chargebacks={"cb1": {"status": "lost", "closed": True}},
    )


def test_chargeback_won_whose_opening_was_missed_moves_nothing() -> None:
    decision = run(chargeback_event(ev.CHARGEBACK_CLOSED, outcome="won"), credited())
    assert decision.result == "status_updated"
    assert decision.entries == ()
    assert decision.order_update == order_doc(chargebacks={"cb1": {"status": "won", "closed": True}})


def test_chargeback_after_a_recredit_reverses_again_as_generation_two() -> None:
    # A refund approved then failed left the order credited: a new dispute takes it back again.
    decision = run(chargeback_event(), recredited_once(refunds={"r1": "failed"}))
    assert decision.result == "reversed"
    assert amounts(decision) == {f"rev2:{L1}": None, f"rev2:{L2}": None}
    assert [e.generation for e in decision.entries] == [2, 2]
    assert [e.reversal_of for e in decision.entries] == [L1, L2]
    assert decision.points == -550
    assert decision.order_update == order_doc(
        generation=2,
        reversals=TWICE,
        reversed=ALL_TAKEN,
        reversedBy="chargeback:cb1",
        status="reversed",
        refunds={"r1": "failed"},
        chargebacks={"cb1": OPEN},
    )


def test_chargeback_after_a_recredited_partial_refund_counts_each_entry_on_its_own() -> None:
    # The partial refund took 200 of L1 only, and failed: L1 was reversed once, L2 never.
    state = credited(
        generation=1,
        entry_reversals={L1: 1},
        reversed={L1: 200},
        refunds={"r1": "failed"},
        refund_amounts={"r1": 200},
    )
    decision = run(chargeback_event(), state)
    assert decision.result == "reversed"
    assert amounts(decision) == {f"rev2:{L1}": None, f"rev:{L2}": None}
    assert [e.generation for e in decision.entries] == [2, 1]
    assert decision.points == -550
    assert decision.order_update == order_doc(
        generation=2,
        reversals={L1: 2, L2: 1},
        reversed=ALL_TAKEN,
        reversedBy="chargeback:cb1",
        status="reversed",
        refunds={"r1": "failed"},
        refundAmounts={"r1": 200},
        chargebacks={"cb1": OPEN},
    )
    # Won, it gives back each entry's own reversal, as read back from what was written.
    won = run(chargeback_event(ev.CHARGEBACK_CLOSED, outcome="won"), read_back(decision))
    assert amounts(won) == {f"recredit2:{L1}": None, f"recredit:{L2}": None}
    assert [e.generation for e in won.entries] == [2, 1]
    assert won.points == 550


def read_back(decision: Decision) -> EventState:
    """paynowOrders/o1 (the order of `credited()`) after `decision`, read as the adapter does."""
    assert decision.order_update is not None
    credits = [{"entryId": c.entry_id, "points": c.points, "productId": c.product_id} for c in CREDITS]
    return EventState(order=_order_record("o1", {"uid": "u1", "credits": credits, **decision.order_update}))


def test_dispute_won_hands_the_order_to_a_refund_still_approved_through_the_hook() -> None:
    # decide passes the hooks to the dispute's step: the pending refund takes what the plugins say.
    class ByAmount:
        def __init__(self) -> None:
            self.asked: list[tuple[str, str, int]] = []

        @hookimpl
        def paynow_refund_points(self, refund: ev.Refund) -> int:
            self.asked.append((refund.refund_id, refund.status, refund.amount))
            return refund.amount

    plugin = ByAmount()
    state = credited(
        generation=1,
        entry_reversals=ONCE,
        reversed={L1: 300, L2: 250},
        reversed_by="chargeback:cb1",
        refunds={"r2": "approved"},  # approved while the dispute held the order: recorded only
        refund_amounts={"r2": 200},
        chargebacks={"cb1": Dispute("open")},
    )
    decision = run(
        chargeback_event(ev.CHARGEBACK_CLOSED, outcome="won"), state, get_plugin_manager([plugin]).hook
    )
    assert decision.result == "recredited"
    assert [(e.entry_id, e.action, e.amount, e.generation) for e in decision.entries] == [
        (f"recredit:{L1}", "credit", None, 1),
        (f"recredit:{L2}", "credit", None, 1),
        (f"rev2:{L1}", "reversal", 200, 2),
    ]
    assert [e.metadata["by"] for e in decision.entries] == ["chargeback:cb1", "chargeback:cb1", "refund:r2"]
    assert decision.points == 550 - 200
    assert plugin.asked == [("r2", "approved", 200)]
    assert decision.order_update == order_doc(
        generation=2,
        reversals={L1: 2, L2: 1},
        reversed=[{"entryId": L1, "points": 200}],
        reversedBy="refund:r2",
        status="reversed",
        refunds={"r2": "approved"},
        refundAmounts={"r2": 200},
        chargebacks={"cb1": {"status": "won", "closed": True}},
    )


def test_chargeback_won_of_generation_two_recredits_as_generation_two() -> None:
    state = credited(
        generation=2,
        entry_reversals=TWICE,
        reversed={L1: 300, L2: 250},
        reversed_by="chargeback:cb2",
        chargebacks={"cb1": WON, "cb2": Dispute("open")},
    )
    decision = run(chargeback_event(ev.CHARGEBACK_CLOSED, outcome="won", cb_id="cb2"), state)
    assert decision.result == "recredited"
    assert amounts(decision) == {f"recredit2:{L1}": None, f"recredit2:{L2}": None}
    assert [e.generation for e in decision.entries] == [2, 2]
    assert decision.order_update == order_doc(
        generation=2,
        reversals=TWICE,
        reversed=ALL_TAKEN,
        reversedBy="",
        status="recredited",
        chargebacks={"cb1": {"status": "won", "closed": True}, "cb2": {"status": "won", "closed": True}},
    )


def test_chargeback_reverses_the_cycles_read_with_the_order() -> None:
    # The adapter reads the cycles of the order's subscriptions into the state, not the order record.
    state = replace(credited(subscription_ids=("s1",)), cycles=(CreditedEntry(S1, 1000, PLAN),))
    decision = run(chargeback_event(), state)
    assert [e.entry_id for e in decision.entries] == [f"rev:{L1}", f"rev:{L2}", f"rev:{S1}"]
    assert decision.points == -1550


# ---- an order applies the refunds and disputes parked before it ----


def test_order_applies_what_was_parked_in_status_order() -> None:
    # The failed refund arrived first: applied after its approval, it re-credits what that took.
    parked = (refund_event("failed", sent_at_ms=SENT_MS + 1), refund_event("approved"))
    decision = run(order_event(), EventState(parked=parked))
    assert decision.result == "credited"
    assert [(e.entry_id, e.action, e.amount) for e in decision.entries] == [
        (L1, "credit", 100),
        (f"rev:{L1}", "reversal", None),
        (f"recredit:{L1}", "credit", None),
    ]
    assert decision.points == 100
    assert decision.applied_parked == ("e-refund-r1-failed", "e-refund-r1-approved")
    assert not decision.park
    assert decision.order_update == {
        "uid": "u1",
        "customerId": "c1",
        "eventId": "e-order",
        "entryIds": [L1],
        "credits": [{"entryId": L1, "points": 100, "productId": PACK}],
        "points": 100,
        **order_doc(
            generation=1,
            reversals={L1: 1},
            reversed=[{"entryId": L1, "points": 100}],
            status="recredited",
            refunds={"r1": "failed"},
            refundAmounts={"r1": 0},
        ),
    }


def test_order_applies_a_parked_refund_that_reverses_it() -> None:
    decision = run(order_event(), EventState(parked=(refund_event("approved"),)))
    assert decision.result == "credited"
    assert amounts(decision) == {L1: 100, f"rev:{L1}": None}
    assert decision.points == 0
    assert decision.applied_parked == ("e-refund-r1-approved",)
    assert decision.order_update is not None
    assert {k: decision.order_update[k] for k in ("points", "status", "reversedBy", "generation")} == {
        "points": 100,  # what the order credited
        "status": "reversed",
        "reversedBy": "refund:r1",
        "generation": 1,
    }


def test_order_applies_a_parked_partial_refund_through_the_hook() -> None:
    class Partial:
        @hookimpl
        def paynow_refund_points(self) -> int:
            return 200

    hooks = get_plugin_manager([Partial()]).hook
    decision = run(
        order_event(line("l1", PACK, quantity=5)), EventState(parked=(refund_event("approved"),)), hooks
    )
    assert amounts(decision) == {L1: 500, f"rev:{L1}": 200}
    assert decision.points == 300
    assert decision.order_update is not None
    assert decision.order_update["reversed"] == [{"entryId": L1, "points": 200}]


def test_order_applies_a_whole_parked_dispute() -> None:
    parked = (chargeback_event(ev.CHARGEBACK_CLOSED, outcome="won"), chargeback_event())
    decision = run(order_event(), EventState(parked=parked))
    assert [e.entry_id for e in decision.entries] == [L1, f"rev:{L1}", f"recredit:{L1}"]
    assert decision.points == 100
    assert decision.order_update is not None
    assert decision.order_update["chargebacks"] == {"cb1": {"status": "won", "closed": True}}
    assert decision.order_update["status"] == "recredited"


def test_order_of_a_plan_applies_a_parked_dispute_to_the_cycles_credited_before_it() -> None:
    # The order credits nothing itself; cycle 1 was credited first, and the dispute came first too.
    event = order_event(line("l1", PLAN, subscription_id="s1"))
    state = EventState(parked=(chargeback_event(),), cycles=(CreditedEntry(S1, 1000, PLAN),))
    decision = run(event, state)
    assert decision.result == "credited"  # it writes entries: the reversal
    assert [(e.entry_id, e.reversal_of) for e in decision.entries] == [(f"rev:{S1}", S1)]
    assert decision.points == -1000
    assert decision.order_update is not None
    assert decision.order_update["subscriptionIds"] == ["s1"]
    assert decision.order_update["credits"] == []
    assert decision.order_update["reversed"] == [{"entryId": S1, "points": 1000}]


def test_order_with_a_parked_status_only_records_it() -> None:
    decision = run(order_event(), EventState(parked=(refund_event("created"),)))
    assert amounts(decision) == {L1: 100}
    assert decision.applied_parked == ("e-refund-r1-created",)
    assert decision.order_update is not None
    assert decision.order_update["refunds"] == {"r1": "created"}
    assert decision.order_update["status"] == "credited"


def test_order_redelivered_applies_nothing_parked() -> None:
    # A credited order has nothing parked (its transaction applied it); decide does not apply twice.
    state = EventState(order=OrderRecord(uid="u1", credits=(CreditedEntry(L1, 100, PACK),)))
    decision = run(order_event(), replace(state, parked=(refund_event("approved"),)))
    assert amounts(decision) == {L1: 100}
    assert decision.applied_parked == ()


# ---- lifecycles: decisions applied to paynowOrders, then read back as the adapter does ----


def _merge(doc: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Firestore's set(merge=True): nested maps merge, everything else is replaced."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(doc.get(key), dict):
            _merge(doc[key], value)
        else:
            doc[key] = dict(value) if isinstance(value, Mapping) else value


class Order:
    """paynowOrders/o1 across a sequence of events, parked ones included."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = None
        self.parked: dict[str, ev.PaymentEvent] = {}

    def apply(self, event: ev.PaymentEvent) -> Decision:
        state = EventState(order=_order_record("o1", self.doc), parked=tuple(self.parked.values()))
        decision = run(event, state)
        if decision.park:
            self.parked[event.event_id] = event
        for event_id in decision.applied_parked:
            del self.parked[event_id]
        if decision.order_update is not None:
            self.doc = self.doc or {}
            _merge(self.doc, decision.order_update)
        return decision


def test_refund_lifecycle_reverses_once_recredits_once_then_a_new_refund_reverses_again() -> None:
    order = Order()
    steps = [
        order_event(line("l1", PACK, quantity=3), line("l2", BIG_PACK)),
        refund_event("approved"),
        refund_event("completed"),
        refund_event("canceled"),
        refund_event("canceled"),
        refund_event("failed"),
        refund_event("approved", "r2"),
    ]
    decisions = list(map(order.apply, steps))
    assert [(d.result, d.points) for d in decisions] == [
        ("credited", 550),
        ("reversed", -550),
        ("status_updated", 0),  # recorded: nothing more to take
        ("recredited", 550),
        ("no_change", 0),
        ("no_change", 0),  # failed is no further than canceled
        ("reversed", -550),  # credited again: the next generation
    ]
    assert list(amounts(decisions[-1])) == [f"rev2:{L1}", f"rev2:{L2}"]
    assert order.doc is not None
    assert order.doc["refunds"] == {"r1": "canceled", "r2": "approved"}
    assert order.doc["chargebacks"] == {}
    assert (order.doc["generation"], order.doc["reversedBy"], order.doc["status"]) == (
        2,
        "refund:r2",
        "reversed",
    )
    assert order.doc["reversals"] == TWICE


def test_refund_lifecycle_a_dispute_opened_while_the_refund_held_takes_the_order_over() -> None:
    order = Order()
    steps = [
        order_event(line("l1", PACK, quantity=3), line("l2", BIG_PACK)),
        refund_event("approved"),
        refund_event("completed"),
        chargeback_event(),
        refund_event("canceled"),
        refund_event("canceled"),
        refund_event("failed"),
        refund_event("approved", "r2"),
    ]
    decisions = list(map(order.apply, steps))
    assert [(d.result, d.points) for d in decisions] == [
        ("credited", 550),
        ("reversed", -550),
        ("status_updated", 0),  # recorded: nothing more to take
        ("status_updated", 0),  # recorded while the refund holds the order
        ("recredited", 0),  # 550 given back, and the dispute still open takes them again at once
        ("no_change", 0),
        ("no_change", 0),  # failed is no further than canceled
        ("status_updated", 0),  # recorded while the dispute holds the order
    ]
    assert list(amounts(decisions[4])) == [f"recredit:{L1}", f"recredit:{L2}", f"rev2:{L1}", f"rev2:{L2}"]
    assert [e.metadata["by"] for e in decisions[4].entries] == ["refund:r1"] * 2 + ["chargeback:cb1"] * 2
    assert order.doc is not None
    assert order.doc["refunds"] == {"r1": "canceled", "r2": "approved"}
    assert order.doc["chargebacks"] == {"cb1": OPEN}
    assert (order.doc["generation"], order.doc["reversedBy"], order.doc["status"]) == (
        2,
        "chargeback:cb1",
        "reversed",
    )
    assert order.doc["reversals"] == TWICE
    # The dispute won: its reversal comes back, and the refund r2, still approved, takes the order over.
    won = order.apply(chargeback_event(ev.CHARGEBACK_CLOSED, outcome="won"))
    assert (won.result, won.points) == ("recredited", 0)
    assert list(amounts(won)) == [f"recredit2:{L1}", f"recredit2:{L2}", f"rev3:{L1}", f"rev3:{L2}"]
    assert (order.doc["generation"], order.doc["reversedBy"]) == (3, "refund:r2")


def test_chargeback_lifecycle_won_recredits_once_lost_never() -> None:
    won, lost = Order(), Order()
    for order, outcome in ((won, "won"), (lost, "lost")):
        order.apply(order_event())
        assert order.apply(chargeback_event()).points == -100
        assert order.apply(chargeback_event()).points == 0
        first = order.apply(chargeback_event(ev.CHARGEBACK_CLOSED, outcome=outcome))
        again = order.apply(chargeback_event(ev.CHARGEBACK_CLOSED, outcome=outcome))
        assert (first.points, again.points) == ((100, 0) if outcome == "won" else (0, 0))
        assert again.entries == ()
    # Won: credited again, so the next dispute reverses again (generation 2); lost: it stays reversed.
    second = won.apply(chargeback_event(cb_id="cb2"))
    assert (second.result, list(amounts(second))) == ("reversed", [f"rev2:{L1}"])
    assert lost.apply(chargeback_event(cb_id="cb2")).result == "status_updated"


def test_refund_before_its_order_is_parked_then_applied_with_it() -> None:
    order = Order()
    parked = order.apply(refund_event("approved"))
    assert (parked.result, parked.park, order.doc) == ("parked", True, None)
    credited_ = order.apply(order_event())
    assert [e.entry_id for e in credited_.entries] == [L1, f"rev:{L1}"]
    assert credited_.applied_parked == ("e-refund-r1-approved",)
    assert order.parked == {}
    # The order now holds the refund's reversal: its failure re-credits.
    failed = order.apply(refund_event("failed"))
    assert (failed.result, list(amounts(failed))) == ("recredited", [f"recredit:{L1}"])


# ---- decisions applied to the ledger's pure rules ----


class Ledger:
    """Wallets, ledgerKeys and entries in memory, changed only through `ledger_rules.plan`."""

    def __init__(self, *, allow_negative_balance: bool = True) -> None:
        self.allow_negative = allow_negative_balance
        self.wallets: dict[str, Wallet] = {}
        self.keys: dict[str, KeyRecord] = {}
        self.entries: dict[tuple[str, str], LedgerEntry] = {}

    def apply(self, requests: Sequence[EntryRequest]) -> None:
        if not requests:
            return
        needed = read_set(requests)
        state = LedgerState(
            wallets={uid: self.wallets.get(uid) for uid in needed.uids},
            keys={key: self.keys.get(key) for key in needed.key_ids},
            entries={ref: self.entries.get(ref) for ref in needed.entries},
        )
        result = plan(requests, state, now=NOW, allow_negative_balance=self.allow_negative)
        self.entries.update({(e.uid, e.entry_id): e for e in result.new_entries})
        self.keys.update({key.entry_id: key for key, _ in result.new_keys})
        self.wallets.update({uid: result.wallets[uid] for uid in result.changed_wallets})

    def balance(self, uid: str) -> Balance:
        return self.wallets[uid].balance(NOW)

    def spend(self, uid: str, points: int) -> None:
        """The app spends paid points outside this service (it writes the wallet directly)."""
        wallet = self.wallets[uid]
        self.wallets[uid] = replace(wallet, paid=wallet.paid - points)


def _refund_then_cancel(ledger: Ledger, spent: int) -> None:
    order = Order()
    ledger.apply(order.apply(order_event(line("l1", PACK, quantity=5))).entries)  # 500 paid
    ledger.spend("u1", spent)
    ledger.apply(order.apply(refund_event("approved")).entries)
    ledger.apply(order.apply(refund_event("canceled")).entries)


def test_refund_canceled_restores_the_wallet() -> None:
    ledger = Ledger(allow_negative_balance=True)
    _refund_then_cancel(ledger, spent=400)
    assert ledger.wallets["u1"].paid == 100  # 500 - 400 spent - 500 reversed + 500 re-credited
    # Each entry stores what it is for: the order's label, then the ledger's own for the undoing.
    stored = {entry_id: (e.action, e.note) for (_, entry_id), e in ledger.entries.items()}
    assert stored == {
        L1: ("paynow.order", "order o1"),
        f"rev:{L1}": ("reversal", f"reversal of {L1}"),
        f"recredit:{L1}": ("recredit", f"re-credit of {L1}"),
    }


def test_refund_canceled_after_a_reversal_stopped_at_zero_restores_what_was_taken() -> None:
    ledger = Ledger(allow_negative_balance=False)
    _refund_then_cancel(ledger, spent=400)  # the reversal takes 100 (shortfall 400)
    assert ledger.wallets["u1"].paid == 100


@pytest.mark.parametrize("allow_negative", [True, False])
def test_each_generation_moves_the_wallet_and_the_ledger_accepts_its_ids(allow_negative: bool) -> None:
    # docs/refunds-and-disputes.md rows 6 and 9: a refund failed, then a dispute won, on one order.
    ledger = Ledger(allow_negative_balance=allow_negative)
    order = Order()
    paid = []
    for event in [
        order_event(line("l1", PACK, quantity=5)),
        refund_event("approved"),
        refund_event("failed"),
        chargeback_event(),
        chargeback_event(ev.CHARGEBACK_CLOSED, outcome="won"),
        chargeback_event(cb_id="cb2"),
    ]:
        ledger.apply(order.apply(event).entries)
        paid.append(ledger.wallets["u1"].paid)
    assert paid == [500, 0, 500, 0, 500, 0]
    assert [entry_id for _, entry_id in ledger.entries] == [
        L1,
        f"rev:{L1}",
        f"recredit:{L1}",
        f"rev2:{L1}",
        f"recredit2:{L1}",
        f"rev3:{L1}",
    ]
    assert order.doc is not None
    assert (order.doc["generation"], order.doc["reversedBy"]) == (3, "chargeback:cb2")


def test_parked_refund_then_order_moves_the_wallet_like_the_other_way_round() -> None:
    # docs/refunds-and-disputes.md row 19: parked out of order, applied in status order.
    ledger = Ledger()
    order = Order()
    for event in [
        refund_event("failed"),
        refund_event("approved"),
        order_event(line("l1", PACK, quantity=5)),
    ]:
        ledger.apply(order.apply(event).entries)
    assert ledger.wallets["u1"].paid == 500
    assert [entry_id for _, entry_id in ledger.entries] == [L1, f"rev:{L1}", f"recredit:{L1}"]


# ---- promo lots: when they expire, and what the entries are labelled ----


def test_promo_credit_lands_in_a_lot_expiring_with_its_entry() -> None:
    ledger = Ledger()
    ledger.apply(run(order_event(line("l1", PACK), line("l2", BIG_PACK))).entries)
    wallet = ledger.wallets["u1"]
    assert wallet.paid == 100
    assert [(lot.lot_id, lot.amount_remaining, lot.expires_at) for lot in wallet.lots] == [
        (L2, 250, SENT + YEAR)
    ]
    assert (ledger.balance("u1").paid, ledger.balance("u1").promo) == (100, 250)
    entry = ledger.entries[("u1", L2)]
    assert (entry.action, entry.note, entry.channel) == ("paynow.order", "order o1", "promo")
    assert entry.credit_lot is not None
    assert entry.credit_lot.expires_at == SENT + YEAR


def test_subscription_cycle_lot_is_dated_from_its_event() -> None:
    ledger = Ledger()
    ledger.apply(run(sub_event(ev.SUBSCRIPTION_RENEWED, cycle=7)).entries)
    entry = ledger.entries[("u1", "paynow:sub:s1:cycle:7")]
    assert (entry.action, entry.note) == ("paynow.subscription", "subscription s1 cycle 7")
    assert [(lot.amount_remaining, lot.expires_at) for lot in ledger.wallets["u1"].lots] == [
        (1000, SENT + YEAR)
    ]


@pytest.mark.parametrize(
    ("event", "expires_at"),
    [
        (order_event(line("l1", SHORT_PACK, quantity=3)), SENT + timedelta(days=30)),
        (order_event(line("l1", PAID_DAYS_PACK)), None),  # a paid product's expires_in_days is unused
        (sub_event(product_id=SHORT_PLAN), SENT + timedelta(days=90)),
        (sub_event(product_id=PAID_PLAN), None),  # kind = "paid" on a plan: no lot
    ],
    ids=["promo-product-30", "paid-product", "promo-plan-90", "paid-plan"],
)
def test_catalog_expires_in_days_sets_the_lot_life(
    event: ev.PaymentEvent, expires_at: datetime | None
) -> None:
    (entry,) = run(event).entries
    assert entry.kind == ("paid" if expires_at is None else "promo")
    assert entry.expires_at == expires_at


def test_extra_credit_paid_or_promo_has_its_own_lot_life() -> None:
    class Extras:
        @hookimpl
        def paynow_adjust_credits(self) -> list[PlannedCredit]:
            return [
                PlannedCredit(key="week", points=5, kind="promo", expires_in_days=7),
                PlannedCredit(key="cash", points=5, kind="paid", expires_in_days=7),
            ]

    hooks = get_plugin_manager([Extras()]).hook
    order = {e.entry_id: e.expires_at for e in run(order_event(), hooks=hooks).entries}
    assert order == {
        L1: None,
        "paynow:order:o1:extra:week": SENT + timedelta(days=7),
        "paynow:order:o1:extra:cash": None,
    }
    sub = run(sub_event(cycle=2), hooks=hooks)
    assert {e.entry_id: e.expires_at for e in sub.entries} == {
        "paynow:sub:s1:cycle:2": SENT + YEAR,
        "paynow:sub:s1:cycle:2:extra:week": SENT + timedelta(days=7),
        "paynow:sub:s1:cycle:2:extra:cash": None,
    }
    assert {(e.label, e.note) for e in sub.entries} == {("paynow.subscription", "subscription s1 cycle 2")}


@pytest.mark.parametrize(
    ("sent_ms", "received_ms", "now", "expected"),
    [
        (SENT_MS, RECEIVED_MS, NOW, SENT + YEAR),  # PayNow's timestamp first
        (0, RECEIVED_MS, NOW, RECEIVED + YEAR),  # then our receipt
        (0, 0, NOW, NOW + YEAR),  # then the transaction's clock
    ],
    ids=["sent", "received", "now"],
)
def test_promo_expiry_counts_from_the_event_time_else_receipt_else_now(
    sent_ms: int, received_ms: int, now: datetime, expected: datetime
) -> None:
    event = order_event(line("l1", BIG_PACK), sent_at_ms=sent_ms, received_at_ms=received_ms)
    sub = sub_event(sent_at_ms=sent_ms, received_at_ms=received_ms)
    assert [e.expires_at for e in run(event, EventState(now=now)).entries] == [expected]
    assert [e.expires_at for e in run(sub, EventState(now=now)).entries] == [expected]


def test_promo_expiry_does_not_move_with_the_transaction_clock_when_the_event_has_a_time() -> None:
    # A retried transaction has another clock: the entry (and its request hash) must not change.
    event = order_event(line("l1", BIG_PACK))
    assert run(event, EventState(now=NOW)) == run(event, EventState(now=NOW + timedelta(hours=5)))


@pytest.mark.parametrize(
    "event",
    [order_event(line("l1", BIG_PACK), sent_at_ms=0), sub_event(sent_at_ms=0)],
    ids=["order", "subscription"],
)
def test_promo_credit_without_any_time_is_invalid(event: ev.PaymentEvent) -> None:
    with pytest.raises(InvalidEventError, match="no time") as caught:
        run(event)
    assert caught.value.reason == "invalid_event"


def test_paid_credit_needs_no_time() -> None:
    decision = run(order_event(line("l1", PACK), sent_at_ms=0))
    assert [e.expires_at for e in decision.entries] == [None]


class LotLife:
    """Maps every line and plan to promo points that expire after `days`, and adds one such extra."""

    def __init__(self, days: object, *, extra: bool = False) -> None:
        self.days, self.extra = days, extra

    @hookimpl
    def paynow_map_order_line(self) -> Credit | None:
        return None if self.extra else Credit(points=10, kind="promo", expires_in_days=self.days)  # type: ignore[arg-type]

    @hookimpl
    def paynow_map_subscription(self) -> Credit | None:
        return None if self.extra else Credit(points=10, kind="promo", expires_in_days=self.days)  # type: ignore[arg-type]

    @hookimpl
    def paynow_adjust_credits(self) -> list[PlannedCredit]:
        if not self.extra:
            return []
        return [PlannedCredit(key="bonus", points=1, kind="promo", expires_in_days=self.days)]  # type: ignore[arg-type]


@pytest.mark.parametrize("days", [0, -1, 36_501, 40_000, True, 30.0, "30"])
@pytest.mark.parametrize("extra", [False, True], ids=["mapped", "extra"])
@pytest.mark.parametrize("make_event", [order_event, sub_event], ids=["order", "subscription"])
def test_plugin_expires_in_days_outside_1_to_36500_is_invalid(
    days: object, extra: bool, make_event: Any
) -> None:
    hooks = get_plugin_manager([LotLife(days, extra=extra)]).hook
    with pytest.raises(InvalidEventError, match="expires_in_days") as caught:
        run(make_event(), hooks=hooks)
    assert caught.value.reason == "invalid_event"


@pytest.mark.parametrize("days", [1, 36_500])
def test_plugin_expires_in_days_limits_are_inclusive(days: int) -> None:
    hooks = get_plugin_manager([LotLife(days)]).hook
    assert [e.expires_at for e in run(order_event(), hooks=hooks).entries] == [SENT + timedelta(days=days)]
    assert [e.expires_at for e in run(sub_event(), hooks=hooks).entries] == [SENT + timedelta(days=days)]


def test_reversals_and_recredits_carry_no_expiry_of_their_own() -> None:
    reversed_ = run(refund_event("approved"), credited())
    recredited = run(refund_event("canceled"), held_by("refund:r1", {L1: 300}))
    assert [e.expires_at for e in reversed_.entries + recredited.entries] == [None, None, None]


def test_promo_order_redelivered_with_another_timestamp_is_a_replay() -> None:
    # The webhookEvents record expired (TTL) and PayNow sent the order again, signed anew.
    ledger = Ledger()
    ledger.apply(run(order_event(line("l1", BIG_PACK))).entries)
    later = order_event(line("l1", BIG_PACK), sent_at_ms=SENT_MS + 3_600_000)
    ledger.apply(
        run(later, EventState(order=OrderRecord(uid="u1", credits=(CreditedEntry(L1, 250),)))).entries
    )
    assert ledger.balance("u1").promo == 250
    # The lot keeps the expiry of the first delivery: the entry id pins the event, not the delivery.
    assert [lot.expires_at for lot in ledger.balance("u1").lots] == [SENT + timedelta(days=365)]


# ---- the catalog: kind defaults and the life of promo lots ----


def test_catalog_kind_defaults_paid_for_products_promo_for_plans() -> None:
    catalog = Catalog.from_toml("[products.p]\npoints = 1\n[subscriptions.s]\npoints_per_cycle = 2\n")
    assert catalog.products == {"p": ProductRule(points=1, kind="paid", expires_in_days=365)}
    assert catalog.subscriptions == {"s": PlanRule(points_per_cycle=2, kind="promo", expires_in_days=365)}


def test_catalog_reads_kind_and_expires_in_days() -> None:
    catalog = Catalog.from_toml(
        "[products.p]\npoints = 1\nkind = 'promo'\nexpires_in_days = 1\n"
        "[subscriptions.s]\npoints_per_cycle = 2\nkind = 'paid'\nexpires_in_days = 36500\n"
    )
    assert catalog.products["p"] == ProductRule(points=1, kind="promo", expires_in_days=1)
    assert catalog.subscriptions["s"] == PlanRule(points_per_cycle=2, kind="paid", expires_in_days=36_500)


@pytest.mark.parametrize("value", ["0", "-5", "36501", "true", "30.0", '"30"', "[30]"])
@pytest.mark.parametrize(
    ("section", "points"), [("products", "points"), ("subscriptions", "points_per_cycle")]
)
def test_catalog_expires_in_days_must_be_1_to_36500_whole_days(section: str, points: str, value: str) -> None:
    with pytest.raises(CatalogError, match=r"'x'.*expires_in_days"):
        Catalog.from_toml(f"[{section}.x]\n{points} = 1\nexpires_in_days = {value}\n")
