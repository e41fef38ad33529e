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
from paynow_service.adapters.firestore_processing import _order_record
from paynow_service.domain import events as ev
from paynow_service.domain.catalog import Catalog, CatalogError, PlanRule, ProductRule
from paynow_service.domain.errors import (
    InvalidEventError,
    OrderNotCreditedError,
    TransientError,
    UnknownProductError,
    UserNotFoundError,
)
from paynow_service.domain.ledger import Balance, EntryRequest, LedgerEntry, Wallet
from paynow_service.domain.ledger_rules import KeyRecord, LedgerState, plan, read_set
from paynow_service.hookspecs import Credit, CreditedEntry, PlannedCredit
from paynow_service.plugins import get_plugin_manager
from paynow_service.service.decide import FINAL_STATUSES, Decision, EventState, OrderRecord, decide

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


def refund_event(status: str, refund_id: str = "r1") -> ev.PaymentEvent:
    return ev.PaymentEvent(
        event_id=f"e-refund-{refund_id}-{status}",
        event_type=ev.REFUND,
        sent_at_ms=SENT_MS,
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
CREDITS = (CreditedEntry(L1, 300, PACK), CreditedEntry(L2, 250, BIG_PACK))


def credited(**kw: Any) -> EventState:
    return EventState(order=OrderRecord(uid="u1", credits=CREDITS, **kw))


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
    assert {"processed", "ignored", "failed_terminal", "dead_lettered"} == FINAL_STATUSES


@pytest.mark.parametrize("status", [None, "queued"])
def test_event_not_yet_final_is_processed(status: str | None) -> None:
    decision = run(order_event(), EventState(event_status=status))
    assert decision.result == "credited"
    assert decision.writes


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
        "status": "credited",
    }


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


@pytest.mark.parametrize("status", ["approved", "completed"])
def test_refund_reverses_every_credit_of_the_order(status: str) -> None:
    decision = run(refund_event(status), credited())
    assert decision.result == "reversed"
    assert decision.uid == "u1"
    assert decision.order_id == "o1"
    assert amounts(decision) == {f"rev:{L1}": None, f"rev:{L2}": None}  # None: the original's amount
    assert [e.reversal_of for e in decision.entries] == [L1, L2]
    assert all(e.action == "reversal" and e.uid == "u1" for e in decision.entries)
    assert decision.entries[0].metadata == {
        "eventId": f"e-refund-r1-{status}",
        "orderId": "o1",
        "reversalOf": L1,
        "by": "refund:r1",
    }
    assert decision.points == -550
    assert decision.order_update == {
        "reversed": [{"entryId": L1, "points": 300}, {"entryId": L2, "points": 250}],
        "reversedBy": "refund:r1",
        "recredited": False,
        "status": "reversed",
        "refunds": {"r1": status},
    }


@pytest.mark.parametrize("status", ["created", "approved", "processing", "completed", "canceled", "failed"])
def test_refund_before_the_order_is_credited_is_transient(status: str) -> None:
    with pytest.raises(OrderNotCreditedError, match="o1") as caught:
        run(refund_event(status))
    assert isinstance(caught.value, TransientError)
    assert caught.value.reason == "order_not_credited"


@pytest.mark.parametrize("status", ["created", "processing", "something-new"])
def test_refund_in_another_status_only_records_it(status: str) -> None:
    decision = run(refund_event(status), credited())
    assert decision.result == "status_updated"
    assert decision.entries == ()
    assert decision.order_update == {"refunds": {"r1": status}}


@pytest.mark.parametrize(
    "event",
    [refund_event("approved"), refund_event("completed"), refund_event("approved", "r2"), chargeback_event()],
    ids=["same-refund-again", "completed-after-approved", "another-refund", "chargeback"],
)
def test_nothing_more_is_reversed_after_a_refund(event: ev.PaymentEvent) -> None:
    state = credited(reversed={L1: 300, L2: 250}, reversed_by="refund:r1")
    decision = run(event, state)
    assert decision.result == "no_change"
    assert decision.entries == ()
    assert decision.points == 0
    assert decision.order_update is not None
    assert "reversed" not in decision.order_update


@pytest.mark.parametrize("status", ["canceled", "cancelled", "failed"])
def test_refund_undone_after_the_reversal_recredits(status: str) -> None:
    state = credited(reversed={L1: 300, L2: 100}, reversed_by="refund:r1")
    decision = run(refund_event(status), state)
    assert decision.result == "recredited"
    # amount None: the ledger re-credits exactly what each reversal took.
    assert amounts(decision) == {f"recredit:{L1}": None, f"recredit:{L2}": None}
    assert {e.reversal_of for e in decision.entries} == {L1, L2}
    assert [e.reversal_of for e in decision.entries] == [L1, L2]
    assert all(e.action == "credit" and e.uid == "u1" for e in decision.entries)
    assert decision.entries[0].metadata == {
        "eventId": f"e-refund-r1-{status}",
        "orderId": "o1",
        "recreditOf": L1,
    }
    assert decision.points == 400
    assert decision.order_update == {"recredited": True, "status": "recredited", "refunds": {"r1": status}}


@pytest.mark.parametrize(
    "state",
    [
        credited(reversed={L1: 300}, reversed_by="refund:r1", recredited=True),  # already re-credited
        credited(reversed={L1: 300}, reversed_by="refund:r2"),  # another refund reversed it
        credited(reversed={L1: 300}, reversed_by="chargeback:cb1"),  # a chargeback reversed it
        credited(),  # nothing was reversed
    ],
    ids=["twice", "other-refund", "chargeback", "not-reversed"],
)
def test_refund_canceled_recredits_only_its_own_reversal_once(state: EventState) -> None:
    decision = run(refund_event("canceled"), state)
    assert decision.result == "status_updated"
    assert decision.entries == ()
    assert decision.order_update == {"refunds": {"r1": "canceled"}}


# ---- chargebacks ----


def test_chargeback_reverses_every_credit_once() -> None:
    decision = run(chargeback_event(), credited())
    assert decision.result == "reversed"
    assert amounts(decision) == {f"rev:{L1}": None, f"rev:{L2}": None}
    assert decision.entries[0].metadata["by"] == "chargeback:cb1"
    assert decision.points == -550
    assert decision.order_update is not None
    assert decision.order_update["reversedBy"] == "chargeback:cb1"
    assert decision.order_update["chargebacks"] == {"cb1": "open"}


def test_chargeback_does_not_ask_the_refund_hook() -> None:
    class Partial:
        @hookimpl
        def paynow_refund_points(self) -> int:
            return 1

    decision = run(chargeback_event(), credited(), hooks=get_plugin_manager([Partial()]).hook)
    assert decision.points == -550


def test_chargeback_again_reverses_nothing_more() -> None:
    decision = run(chargeback_event(), credited(reversed={L1: 300, L2: 250}, reversed_by="chargeback:cb1"))
    assert decision.result == "no_change"
    assert decision.entries == ()
    assert decision.order_update == {"chargebacks": {"cb1": "open"}}


@pytest.mark.parametrize("event_type", [ev.CHARGEBACK, ev.CHARGEBACK_CLOSED])
def test_chargeback_before_the_order_is_credited_is_transient(event_type: str) -> None:
    with pytest.raises(OrderNotCreditedError):
        run(chargeback_event(event_type, outcome="won"))


def test_chargeback_won_recredits_once() -> None:
    state = credited(reversed={L1: 300, L2: 250}, reversed_by="chargeback:cb1")
    decision = run(chargeback_event(ev.CHARGEBACK_CLOSED, outcome="won", status="closed"), state)
    assert decision.result == "recredited"
    assert amounts(decision) == {f"recredit:{L1}": None, f"recredit:{L2}": None}  # what the reversals took
    assert decision.points == 550
    assert decision.order_update == {
        "recredited": True,
        "status": "recredited",
        "chargebacks": {"cb1": "won"},
    }


@pytest.mark.parametrize(
    ("outcome", "state"),
    [
        ("won", credited(reversed={L1: 300}, reversed_by="chargeback:cb1", recredited=True)),
        ("lost", credited(reversed={L1: 300}, reversed_by="chargeback:cb1")),
        ("won", credited(reversed={L1: 300}, reversed_by="refund:r1")),
        ("won", credited(reversed={L1: 300}, reversed_by="chargeback:cb2")),
    ],
    ids=["won-twice", "lost", "reversed-by-refund", "another-chargeback"],
)
def test_chargeback_closed_recredits_nothing_otherwise(outcome: str, state: EventState) -> None:
    decision = run(chargeback_event(ev.CHARGEBACK_CLOSED, outcome=outcome), state)
    assert decision.result == "status_updated"
    assert decision.entries == ()
    assert decision.order_update == {"chargebacks": {"cb1": outcome}}


# ---- lifecycles: decisions applied to paynowOrders, then read back as the adapter does ----


def _merge(doc: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Firestore's set(merge=True): nested maps merge, everything else is replaced."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(doc.get(key), dict):
            _merge(doc[key], value)
        else:
            doc[key] = dict(value) if isinstance(value, Mapping) else value


class Order:
    """paynowOrders/o1 across a sequence of events."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] | None = None

    def apply(self, event: ev.PaymentEvent) -> Decision:
        decision = run(event, EventState(order=_order_record(self.doc)))
        if decision.order_update is not None:
            self.doc = self.doc or {}
            _merge(self.doc, decision.order_update)
        return decision


def test_refund_lifecycle_reverses_once_and_recredits_once() -> None:
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
    results = [(d.result, d.points) for d in map(order.apply, steps)]
    assert results == [
        ("credited", 550),
        ("reversed", -550),
        ("no_change", 0),
        ("no_change", 0),
        ("recredited", 550),
        ("status_updated", 0),
        ("status_updated", 0),
        ("no_change", 0),
    ]
    assert order.doc is not None
    assert order.doc["refunds"] == {"r1": "failed", "r2": "approved"}
    assert order.doc["chargebacks"] == {"cb1": "open"}


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
    recredited = run(refund_event("canceled"), credited(reversed={L1: 300}, reversed_by="refund:r1"))
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
