"""domain/decisions.py and domain/statuses.py: what the processing transaction reads for `decide`."""

from __future__ import annotations

import pytest

from paynow_service.domain import events as ev
from paynow_service.domain.decisions import (
    Decision,
    cycles_to_read,
    known_uid,
    order_id_of,
    subscription_ids,
)
from paynow_service.domain.ledger import EntryRequest
from paynow_service.domain.orders import OrderRecord
from paynow_service.domain.statuses import FINAL_STATUSES


def order(*lines: ev.OrderLine, order_id: str = "o1") -> ev.Order:
    return ev.Order(order_id=order_id, lines=lines)


def line(line_id: str, uid: str = "", subscription_id: str = "") -> ev.OrderLine:
    return ev.OrderLine(line_id, "p", 1, 100, subscription_id=subscription_id, uid=uid)


def event(**kw: object) -> ev.PaymentEvent:
    return ev.PaymentEvent(event_id="e1", event_type=kw.pop("event_type", ev.ORDER_COMPLETED), **kw)  # type: ignore[arg-type]


REFUND = event(event_type=ev.REFUND, refund=ev.Refund("r1", "o9", "approved"))
CHARGEBACK = event(event_type=ev.CHARGEBACK, chargeback=ev.Chargeback("cb1", "o8"))
PLANS = order(line("l1", subscription_id="s2"), line("l2"), line("l3", subscription_id="s1"))
CREDITED = OrderRecord(uid="u7", order_id="o9", subscription_ids=("s1",))


def test_the_uid_an_event_names_before_the_mapping() -> None:
    assert known_uid(event(uid="u1", order=order(line("l1", uid="u2"))), "u3") == "u1"
    assert known_uid(event(order=order(line("l1"), line("l2", uid="u2"))), "u3") == "u2"
    assert known_uid(event(order=order(line("l1"))), "u3") == "u3"
    assert known_uid(REFUND, "") == ""


def test_the_order_an_event_is_about() -> None:
    assert order_id_of(event(order=order(order_id="o1"))) == "o1"
    assert order_id_of(REFUND) == "o9"
    assert order_id_of(CHARGEBACK) == "o8"
    assert order_id_of(event(event_type=ev.SUBSCRIPTION_RENEWED)) == ""


def test_an_orders_subscriptions_once_each_sorted() -> None:
    assert subscription_ids(PLANS) == ("s1", "s2")
    assert subscription_ids(order(line("l1"))) == ()


@pytest.mark.parametrize(
    ("the_event", "record", "parked", "expected"),
    [
        (REFUND, CREDITED, False, ("u7", ("s1",))),  # a reversal takes the order's cycles with it
        (CHARGEBACK, CREDITED, False, ("u7", ("s1",))),
        (REFUND, None, False, ("", ())),  # parked: nothing to reverse yet
        (REFUND, OrderRecord(uid="u7"), False, ("", ())),  # the order bought no plan
        (event(uid="u1", order=PLANS), None, True, ("u1", ("s1", "s2"))),  # parked ones applied now
        (event(uid="u1", order=PLANS), None, False, ("", ())),  # nothing parked: nothing reversed
        (event(order=PLANS), None, True, ("", ())),  # no uid known yet: the decision will say so
    ],
)
def test_which_cycles_the_state_reads(
    the_event: ev.PaymentEvent,
    record: OrderRecord | None,
    parked: bool,
    expected: tuple[str, tuple[str, ...]],
) -> None:
    assert cycles_to_read(the_event, record, "", parked) == expected


def test_each_event_records_its_own_entries() -> None:
    def entry(entry_id: str, event_id: str) -> EntryRequest:
        metadata = {"eventId": event_id}
        return EntryRequest(
            entry_id=entry_id, uid="u1", action="credit", amount=1, source="paynow", metadata=metadata
        )

    entries = (entry("a", "e-order"), entry("b", "e-refund"))
    alone = Decision(result="credited", entries=entries)
    assert alone.entry_ids_of("e-order") == ["a", "b"]
    with_parked = Decision(result="credited", entries=entries, applied_parked=("e-refund",))
    assert with_parked.entry_ids_of("e-order") == ["a"]
    assert with_parked.entry_ids_of("e-refund") == ["b"]


def test_only_a_duplicate_writes_nothing() -> None:
    assert not Decision(result="duplicate").writes
    assert all(Decision(result=r).writes for r in ("credited", "no_change", "ignored", "parked"))


def test_final_statuses_are_ours_after_processing() -> None:
    assert "queued" not in FINAL_STATUSES
    assert {"processed", "ignored", "parked"} <= FINAL_STATUSES
