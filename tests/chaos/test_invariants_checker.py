"""The invariant checker catches what it claims to: a lost event, a doubled credit, a wallet
off its ledger, a broken chain, an orphan entry, a DLQ miss, an extra or a duplicate, and, in
the app's model, a promo balance off its lots, a spend that lost points, expiry counted."""

from __future__ import annotations

import copy
import datetime as dt
import random
from typing import Any

from paynow_loadtest.events import EventFactory
from paynow_loadtest.expectation import Expectation, Expected
from paynow_loadtest.invariants import check
from paynow_loadtest.state import DeadLetter, State
from paynow_service.domain.catalog import Catalog
from tests.support.stack import CATALOG

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _world() -> tuple[Expectation, State, list[DeadLetter]]:
    """Two orders and a refund of the first for one user, an ignored event, an unknown product:
    the state a correct service leaves."""
    factory = EventFactory(Catalog.from_toml(CATALOG), rng=random.Random(1))
    first = factory.order("u1", quantity=2, product_id="411486491630370816")
    second = factory.order("u1", quantity=1, product_id="411486491630370816")
    refund = factory.refund(first)
    ignored = factory.ignored("u2")
    bad = factory.unknown_product("u2")
    expectation = Expectation()
    for planned in (first, second, refund, ignored, bad):
        expectation.add(planned)
        expectation.accept(planned.event_id)
    ledger: dict[str, dict[str, Any]] = {}
    balance = 0
    for n, planned in enumerate((first, second, refund)):
        for entry_id, amount in planned.expected.entries.items():
            ledger[entry_id] = ours(amount, balance, n, planned.event_id)
            balance += amount
    records = {
        p.event_id: {"status": p.expected.status, "result": {"entryIds": sorted(p.expected.entries)}}
        for p in (first, second, refund, ignored)
    }
    records[bad.event_id] = {"status": "failed_terminal", "failureReason": "unknown_product"}
    state = State(
        records=records,
        wallets={"u1": {"paidBalance": balance, "promoBalance": 0}},
        ledgers={"u1": ledger, "u2": {}},
    )
    letters = [DeadLetter(bad.event_id, "unknown_product", "terminal", "m1")]
    return expectation, state, letters


def ours(amount: int, paid_before: int, n: int, event_id: str) -> dict[str, Any]:
    """A paid entry of this service, in its stored shape."""
    return {
        "amount": amount, "type": "credit" if amount > 0 else "debit", "channel": "paid",
        "pre": {"paid": paid_before, "promo": 0}, "post": {"paid": paid_before + amount, "promo": 0},
        "delta": {"paid": amount, "promo": 0}, "createdAt": T0 + dt.timedelta(seconds=n),
        "metadata": {"eventId": event_id},
    }  # fmt: skip


def _failed(expectation: Expectation, state: State, letters: list[DeadLetter], **kw: Any) -> set[str]:
    report = check(expectation, state, letters, **kw)
    return {name for name, c in report.checks.items() if not c.ok}


def test_a_correct_world_passes() -> None:
    expectation, state, letters = _world()
    report = check(expectation, state, letters)
    assert report.ok, report.summary()
    assert report.processed_once == 5
    assert report.dlq_expected == 1
    assert state.wallets["u1"]["paidBalance"] == 500


def test_each_violation_is_caught() -> None:
    expectation, state, letters = _world()
    ids = list(expectation.events)
    first, second, refund = ids[0], ids[1], ids[2]

    lost = copy.deepcopy(state)
    lost.records[second]["status"] = "queued"
    assert "event_status" in _failed(expectation, lost, letters)
    assert check(expectation, lost, letters).lost == [second]

    doubled = copy.deepcopy(state)
    entry = next(iter(doubled.ledgers["u1"].values()))
    doubled.ledgers["u1"]["paynow:order:other:line:x"] = {
        **entry,
        "pre": {"paid": 500, "promo": 0},
        "post": {"paid": 1500, "promo": 0},
    }
    doubled.wallets["u1"]["paidBalance"] = 1500
    failed = _failed(expectation, doubled, letters)
    assert {"ledger_per_event", "wallet_equals_expected"} <= failed
    assert check(expectation, doubled, letters).doubled == [first]

    off = copy.deepcopy(state)
    off.wallets["u1"]["paidBalance"] = 499
    assert {"wallet_in_app_model", "wallet_equals_expected"} <= _failed(expectation, off, letters)

    lost_update = copy.deepcopy(state)
    for e in lost_update.ledgers["u1"].values():
        if e["metadata"]["eventId"] == refund:
            e["pre"], e["post"] = {"paid": 1000, "promo": 0}, {"paid": 0, "promo": 0}  # a stale balance
    lost_update.wallets["u1"]["paidBalance"] = 0
    report = check(expectation, lost_update, letters)
    assert "wallet_in_app_model" in _failed(expectation, lost_update, letters)
    assert any("no entry continues" in f for f in report.checks["wallet_in_app_model"].failures)

    orphan = copy.deepcopy(state)
    orphan.ledgers["u2"]["api:x:y"] = ours(0, 0, 9, "999")
    assert "no_orphan_entries" in _failed(expectation, orphan, letters)

    assert "dlq_exact" in _failed(expectation, state, [])
    assert "dlq_exact" in _failed(expectation, state, [*letters, DeadLetter(first, "x", "terminal", "m2")])
    assert "dlq_exact" in _failed(expectation, state, [*letters, *letters])
    assert not _failed(expectation, state, [*letters, *letters], dlq_duplicates_ok=True)


def test_a_never_accepted_event_may_be_processed_once_or_not_at_all() -> None:
    expectation, state, letters = _world()
    second = list(expectation.events)[1]
    expectation.events[second].accepted = False
    assert check(expectation, state, letters).ok  # processed although its answers failed: counted
    missing = copy.deepcopy(state)
    missing.records[second]["status"] = "queued"
    for entry_id in [k for k, e in missing.ledgers["u1"].items() if e["metadata"]["eventId"] == second]:
        del missing.ledgers["u1"][entry_id]
    missing.wallets["u1"]["paidBalance"] = 0
    for n, (entry_id, e) in enumerate(list(missing.ledgers["u1"].items())):  # the chain without it
        missing.ledgers["u1"][entry_id] = ours(
            e["amount"], 0 if e["amount"] > 0 else 1000, n, e["metadata"]["eventId"]
        )
    assert check(expectation, missing, letters).ok, check(expectation, missing, letters).summary()


def _with_promo_and_spends() -> tuple[Expectation, State, list[DeadLetter]]:
    """The correct world, then: a promo credit of ours (40) expired, and the app spent 300 (its spend
    dropped the expired lot without an entry of its own) and was refused another spend."""
    expectation, state, letters = _world()
    promo = Expected("evt-promo", "promo", "u1", "processed", {"promo-1": 40}, accepted=True)
    expectation.add(promo)
    state.records["evt-promo"] = {"status": "processed", "result": {"entryIds": ["promo-1"]}}
    ledger = state.ledgers["u1"]
    ledger["promo-1"] = {
        "type": "credit", "channel": "promo", "amount": 40, "delta": {"paid": 0, "promo": 40},
        "pre": {"paid": 500, "promo": 0}, "post": {"paid": 500, "promo": 40},
        "creditLot": {"lotId": "promo-1", "amount": 40}, "createdAt": T0 + dt.timedelta(seconds=5),
        "metadata": {"eventId": "evt-promo"},
    }  # fmt: skip
    ledger["spend-1"] = {
        "type": "debit", "channel": "paid", "amount": 300, "action": "shop", "actionId": "spend-1",
        "pre": {"paid": 500, "promo": 40}, "post": {"paid": 200, "promo": 0}, "consumedLots": [],
        "createdAt": T0 + dt.timedelta(seconds=6),
    }  # fmt: skip
    state.wallets["u1"] = {"paidBalance": 200, "promoBalance": 0, "promoLots": []}
    expectation.spend("spend-1", "u1", 300, spent=True)
    expectation.spend("spend-2", "u1", 10_000, spent=False)
    return expectation, state, letters


def test_the_apps_spends_and_expiry_are_counted_not_lost() -> None:
    expectation, state, letters = _with_promo_and_spends()
    report = check(expectation, state, letters)
    assert report.ok, report.summary()
    assert (report.spends, report.spends_refused, report.points_spent, report.points_expired) == (
        1,
        1,
        300,
        40,
    )
    # The same spend dropping 40 more than it says (points gone, no lot expired) is caught.
    lost = copy.deepcopy(state)
    lost.ledgers["u1"]["spend-1"]["consumedLots"] = [{"lotId": "promo-1", "amount": 40}]
    problems = check(expectation, lost, letters).checks["wallet_in_app_model"].failures
    assert any("a spend of 300 moved 340" in p for p in problems), problems


def test_promo_points_lost_by_a_spend_are_caught() -> None:
    # The bug this model exists for: promoBalance raised without a lot; the app's spend erases it.
    expectation, state, letters = _world()
    state.ledgers["u1"]["promo-no-lot"] = {
        "type": "credit", "channel": "promo", "amount": 250, "delta": {"paid": 0, "promo": 250},
        "pre": {"paid": 500, "promo": 0}, "post": {"paid": 500, "promo": 250},
        "createdAt": T0 + dt.timedelta(seconds=5), "metadata": {"eventId": next(iter(expectation.events))},
    }  # fmt: skip
    state.wallets["u1"] = {"paidBalance": 500, "promoBalance": 250, "promoLots": []}
    report = check(expectation, state, letters)
    problems = report.checks["wallet_in_app_model"].failures
    assert any("promoBalance 250 != lots' sum 0" in p for p in problems)
    assert any("without a lot" in p for p in problems)


def test_a_spend_the_app_reports_but_the_ledger_lacks_is_caught() -> None:
    expectation, state, letters = _world()
    expectation.spend("spend-9", "u1", 100, spent=True)
    assert "spends_exact" in _failed(expectation, state, letters)
    refused_but_written = copy.deepcopy(state)
    expectation2, _, _ = _world()
    expectation2.spend("spend-9", "u1", 100, spent=False)
    refused_but_written.ledgers["u1"]["spend-9"] = {"type": "debit", "amount": 100, "pre": {}, "post": {}}
    assert "spends_exact" in _failed(expectation2, refused_but_written, letters)
