"""The load tool's own bookkeeping: which deliveries go out, and how the service's and the
floor's turns are cut and put back together (bench/load.py, tests/support/invariants.py)."""

from __future__ import annotations

import random

import pytest

from bench.load import CATALOG, Delivery, Mix, PhaseResult, Sample, _absorb, _slices, plan_traffic
from paynow_service.domain.catalog import Catalog
from tests.support.invariants import EventFactory, Expectation


@pytest.fixture
def factory() -> EventFactory:
    return EventFactory(Catalog.from_toml(CATALOG), rng=random.Random(3))


def test_admit_holds_a_refund_until_its_order_was_accepted(factory: EventFactory) -> None:
    expectation = Expectation()
    order = factory.order("u1")
    refund = factory.refund(order)
    assert expectation.admit(order)
    assert not expectation.admit(refund, needs=order.event_id)
    assert refund.event_id not in expectation.events
    expectation.accept(order.event_id)
    assert expectation.admit(refund, needs=order.event_id)
    assert refund.event_id in expectation.events


def test_admit_sends_a_duplicate_only_of_an_event_already_sent(factory: EventFactory) -> None:
    expectation = Expectation()
    order = factory.order("u2")
    assert not expectation.admit(order, duplicate=True)
    assert expectation.events == {}
    assert expectation.admit(order)
    assert expectation.admit(order, duplicate=True)
    assert list(expectation.events) == [order.event_id]


def test_slices_keep_every_delivery_once_retimed_within_its_turn(factory: EventFactory) -> None:
    plan = plan_traffic(factory, rate=20, duration=6, users=["a", "b", "c"], rng=random.Random(1), mix=Mix())
    slices = _slices(plan, 6, 4)
    assert len(slices) == 4
    assert sum(len(s) for s in slices) == len(plan) == 120
    for k, part in enumerate(slices):
        assert all(0 <= d.due < 1.5 for d in part), k
    flattened = [d.planned.event_id for part in slices for d in part]
    assert flattened == [d.planned.event_id for d in plan]  # order kept: refunds after their orders


def test_absorb_moves_samples_onto_the_run_clock_and_adds_up(factory: EventFactory) -> None:
    total = PhaseResult("service", 10, 2)
    first, second = PhaseResult("service", 10, 1), PhaseResult("service", 10, 1)
    first.samples = [Sample(0.2, 3.0, 200, "queued", "order", 0, "e1")]
    second.samples = [Sample(0.1, 4.0, 503, "unavailable", "order", 0, "e2")]
    first.wall_s, second.wall_s, first.skipped, second.lag_s = 0.9, 0.9, 1, 0.05
    _absorb(total, first, 0.0)
    _absorb(total, second, 2.5)
    assert [round(s.t, 2) for s in total.samples] == [0.2, 2.6]
    assert (total.skipped, round(total.wall_s, 2), total.lag_s, total.errors) == (1, 1.8, 0.05, 1)


def test_a_delivery_is_retimed_not_changed() -> None:
    planned = EventFactory(Catalog.from_toml(CATALOG), rng=random.Random(5)).order("u9")
    [[only]] = _slices([Delivery(4.5, planned, label="order")], 6, 2)[1:]
    assert (round(only.due, 2), only.planned, only.label) == (1.5, planned, "order")
