"""The invariant checker catches what it claims to: a lost event, a doubled credit, a wallet
off its ledger, a broken chain, an orphan entry, a DLQ miss, an extra or a duplicate."""

from __future__ import annotations

import copy
import datetime as dt
import random
from typing import Any

from paynow_service.domain.catalog import Catalog
from tests.support.invariants import DeadLetter, EventFactory, Expectation, State, check
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
            ledger[entry_id] = {
                "amount": amount, "kind": "paid", "pre": balance, "post": balance + amount,
                "createdAt": T0 + dt.timedelta(seconds=n), "metadata": {"eventId": planned.event_id},
            }  # fmt: skip
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
    doubled.ledgers["u1"]["paynow:order:other:line:x"] = {**entry, "pre": 500, "post": 1500}
    doubled.wallets["u1"]["paidBalance"] = 1500
    failed = _failed(expectation, doubled, letters)
    assert {"ledger_per_event", "wallet_equals_expected"} <= failed
    assert check(expectation, doubled, letters).doubled == [first]

    off = copy.deepcopy(state)
    off.wallets["u1"]["paidBalance"] = 499
    assert {"wallet_equals_ledger", "wallet_equals_expected", "ledger_chain"} <= _failed(
        expectation, off, letters
    )

    lost_update = copy.deepcopy(state)
    for e in lost_update.ledgers["u1"].values():
        if e["metadata"]["eventId"] == refund:
            e["pre"], e["post"] = 1000, 0  # applied on a stale balance
    lost_update.wallets["u1"]["paidBalance"] = 0
    assert "ledger_chain" in _failed(expectation, lost_update, letters)

    orphan = copy.deepcopy(state)
    orphan.ledgers["u2"]["api:x:y"] = {
        "amount": 0,
        "kind": "paid",
        "pre": 0,
        "post": 0,
        "metadata": {"eventId": "999"},
    }
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
    for e in missing.ledgers["u1"].values():  # rebuild the chain without it: 1000, then -1000
        e["pre"], e["post"] = (0, 1000) if e["amount"] > 0 else (1000, 0)
    assert check(expectation, missing, letters).ok, check(expectation, missing, letters).summary()
