"""The pure checks of `reconcile`: each finding kind on in-memory documents, every ledger shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paynow_service.adapters.ledger_documents import entry_document
from paynow_service.domain import reconcile_findings as rf
from paynow_service.domain.reconcile_records import (
    audit_event,
    audit_order,
    entry_event_finding,
    event_entry_ids,
    order_entry_ids,
)
from paynow_service.domain.reconcile_wallets import audit_wallet, paid_fix_entry, paid_fix_entry_id
from tests.support.ledger_shapes import reference_entries

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
EXPIRY = NOW + timedelta(days=200)
NOTICES = {rf.UNKNOWN_ENTRY, rf.ENTRY_WITHOUT_BALANCES, rf.APP_RECONCILIATION_ENTRY}


def ours(entry_id: str, pre: tuple[int, int], post: tuple[int, int], **extra: Any) -> dict[str, Any]:
    delta = {"paid": post[0] - pre[0], "promo": post[1] - pre[1]}
    amount = delta["paid"] + delta["promo"]
    doc = {
        "amount": amount,
        "type": "credit" if amount > 0 else "debit",
        "channel": "promo" if delta["promo"] and not delta["paid"] else "paid",
        "action": "paynow.order",
        "actionId": entry_id,
        "pre": {"paid": pre[0], "promo": pre[1]},
        "post": {"paid": post[0], "promo": post[1]},
        "delta": delta,
        "metadata": {},
        "createdAt": NOW - timedelta(minutes=1),
    }
    doc.update(extra)
    return doc


def wallet(paid: int, lots: list[tuple[str, int]] | None = None, promo: int | None = None) -> dict[str, Any]:
    items: list[Any] = [{"id": i, "amountRemaining": a, "expiresAt": EXPIRY} for i, a in lots or []]
    return {
        "paidBalance": paid,
        "promoBalance": sum(a for _, a in lots or []) if promo is None else promo,
        "promoLots": items,
    }


def kinds(findings: list[rf.Finding]) -> list[str]:
    return sorted(f.kind for f in findings)


def test_every_reference_shape_together_is_consistent_and_listed() -> None:
    entries = reference_entries(NOW)
    audit = audit_wallet(
        "u1", wallet(250, [("3f1c9a2e-uuid", 25), ("paynow:order:o-old:line:l1", 250)]), entries.items()
    )
    assert audit.entries == len(entries)
    assert kinds(audit.findings) == [rf.APP_RECONCILIATION_ENTRY, rf.UNKNOWN_ENTRY, rf.UNKNOWN_ENTRY]
    assert {f.entry_id for f in audit.findings} == {"reconcile-1", "garbage-typed", "garbage-empty"}
    assert not any(f.is_drift for f in audit.findings)


@pytest.mark.parametrize("entry_id", list(reference_entries(NOW)))
def test_each_reference_shape_alone_is_read_without_failing(entry_id: str) -> None:
    data = reference_entries(NOW)[entry_id]
    for wallet_doc in (None, wallet(0), {"paidBalance": "x", "promoLots": "none"}):
        audit = audit_wallet("u1", wallet_doc, [(entry_id, data)])
        assert audit.entries == 1
        assert all(isinstance(f, rf.Finding) and f.uid == "u1" for f in audit.findings)


def test_paid_drift_and_the_entry_that_fixes_it() -> None:
    entries = [("c1", ours("c1", (0, 0), (100, 0)))]
    audit = audit_wallet("u1", wallet(150), entries)
    assert [(f.kind, f.amount) for f in audit.findings] == [(rf.PAID_DRIFT, 50)]
    fix = paid_fix_entry(audit, "r1", NOW)
    assert fix is not None
    assert fix.entry_id == paid_fix_entry_id("r1", "u1") == "reconcile:r1:u1:paid"
    assert (fix.type, fix.amount, fix.channel, fix.action) == ("credit", 50, "paid", "reconcile")
    assert (fix.pre, fix.post, fix.delta) == (
        type(fix.pre)(100, 0),
        type(fix.pre)(150, 0),
        type(fix.pre)(50, 0),
    )
    # Written in our shape, the chain holds afterwards: nothing is found again.
    again = audit_wallet("u1", wallet(150), [*entries, (fix.entry_id, entry_document(fix))])
    assert again.findings == []
    assert paid_fix_entry(again, "r2", NOW) is None
    assert fix.entry_id in again.has_fix


def test_negative_paid_drift_is_a_debit() -> None:
    audit = audit_wallet("u1", wallet(70), [("c1", ours("c1", (0, 0), (100, 0)))])
    fix = paid_fix_entry(audit, "r1", NOW)
    assert fix is not None
    assert (fix.type, fix.amount) == ("debit", -30)
    assert fix.pre is not None
    assert fix.pre.paid == 100
    assert fix.post is not None
    assert fix.post.paid == 70


def test_promo_balance_against_the_lots() -> None:
    credit = ours("p1", (0, 0), (0, 40), creditLot={"lotId": "p1", "amount": 40})
    audit = audit_wallet("u1", wallet(0, [("p1", 40)], promo=10), [("p1", credit)])
    assert [(f.kind, f.amount) for f in audit.findings] == [(rf.PROMO_DRIFT, 30)]
    assert paid_fix_entry(audit, "r1", NOW) is None


def test_a_missing_promo_balance_is_promo_drift() -> None:
    credit = ours("p1", (0, 0), (0, 40), creditLot={"lotId": "p1", "amount": 40})
    doc = wallet(0, [("p1", 40)])
    del doc["promoBalance"]
    audit = audit_wallet("u1", doc, [("p1", credit)])
    assert [(f.kind, f.amount) for f in audit.findings] == [(rf.PROMO_DRIFT, 40)]


def test_lots_against_the_ledger_negative_and_unreadable_lots() -> None:
    credit = ours("p1", (0, 0), (0, 40))
    doc = wallet(0, [("p1", 45), ("p2", -5)])
    doc["promoLots"].append({"id": "bad", "amountRemaining": 3})  # no expiry: unreadable, kept
    doc["promoBalance"] = 43  # every lot, the unreadable one included
    audit = audit_wallet("u1", doc, [("p1", credit)])
    assert kinds(audit.findings) == [rf.NEGATIVE_LOT, rf.PROMO_LEDGER_DRIFT, rf.UNREADABLE_LOT]


def test_a_ledger_without_its_wallet() -> None:
    audit = audit_wallet("u1", None, [("c1", ours("c1", (0, 0), (100, 0)))])
    assert kinds(audit.findings) == [rf.WALLET_MISSING]
    assert audit_wallet("u1", None, []).findings == []


def test_a_refund_applied_twice_by_hand_and_a_legitimate_history() -> None:
    c = "paynow:order:o1:line:l1"
    credit = ours(c, (0, 0), (500, 0), metadata={"eventId": "e1"})
    rev = ours(f"rev:{c}", (500, 0), (0, 0), metadata={"reversalOf": c, "eventId": "e2"}, action="reversal")
    recredit = ours(f"recredit:{c}", (0, 0), (500, 0), metadata={"recreditOf": c, "eventId": "e3"})
    rev2 = ours(f"rev2:{c}", (500, 0), (0, 0), metadata={"reversalOf": c, "eventId": "e4"}, action="reversal")
    fine = audit_wallet(
        "u1", wallet(0), [(c, credit), (f"rev:{c}", rev), (f"recredit:{c}", recredit), (f"rev2:{c}", rev2)]
    )
    assert fine.findings == []
    by_hand = ours("manual-refund-1", (0, 0), (-500, 0), metadata={"reversalOf": c})
    twice = audit_wallet("u1", wallet(-500), [(c, credit), (f"rev:{c}", rev), ("manual-refund-1", by_hand)])
    # The hand-written one also names no event, though it undoes a PayNow credit.
    assert kinds(twice.findings) == [rf.ENTRY_WITHOUT_EVENT, rf.OVER_REVERSED, rf.REVERSAL_DUPLICATE]
    assert {f.entry_id for f in twice.findings} == {c, "manual-refund-1"}


def test_a_reversal_whose_credit_is_elsewhere() -> None:
    c = "paynow:order:o9:line:l1"
    rev = ours(f"rev:{c}", (500, 0), (0, 0), metadata={"reversalOf": c, "eventId": "e1"})
    audit = audit_wallet("u1", wallet(-500), [(f"rev:{c}", rev)])
    assert kinds(audit.findings) == [rf.REVERSAL_WITHOUT_ORIGINAL]


def test_entries_of_ours_name_their_events() -> None:
    data = ours("c1", (0, 0), (10, 0), metadata={"eventId": "e1"})
    audit = audit_wallet("u1", wallet(10), [("c1", data), ("x", reference_entries(NOW)["wl-purchase"])])
    assert [(r.entry_id, r.event_id) for r in audit.event_refs] == [("c1", "e1")]
    kept_since = NOW - timedelta(days=30)
    assert entry_event_finding("u1", "c1", "e1", NOW, None, kept_since=kept_since) is not None
    assert (
        entry_event_finding("u1", "c1", "e1", NOW - timedelta(days=40), None, kept_since=kept_since) is None
    )
    queued = entry_event_finding("u1", "c1", "e1", NOW, {"status": "queued"}, kept_since=kept_since)
    assert queued is not None
    assert queued.kind == rf.ENTRY_WITHOUT_EVENT
    assert entry_event_finding("u1", "c1", "e1", NOW, {"status": "processed"}, kept_since=kept_since) is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"rawEventType": "ON_ORDER_COMPLETED", "status": "received"}, [rf.APP_UNFINISHED]),
        ({"rawEventType": "ON_ORDER_COMPLETED", "status": "failed"}, [rf.APP_UNFINISHED]),
        ({"rawEventType": "X", "status": "processed", "flag": "app_unfinished"}, [rf.APP_UNFINISHED]),
        ({"rawEventType": "ON_ORDER_COMPLETED", "status": "queued"}, [rf.APP_QUEUED]),
        ({"rawEventType": "ON_ORDER_COMPLETED", "status": "processed"}, []),
        (
            {"eventType": "E", "status": "queued", "receivedAt": NOW - timedelta(minutes=5)},
            [rf.STRANDED_QUEUED],
        ),
        ({"eventType": "E", "status": "queued", "receivedAt": NOW - timedelta(seconds=5)}, []),
        (
            {"eventType": "E", "status": "queued", "publishedAt": NOW - timedelta(hours=3)},
            [rf.STRANDED_QUEUED],
        ),
        ({"eventType": "E", "status": "queued", "publishedAt": NOW - timedelta(minutes=3)}, []),
        ({"eventType": "E", "status": "ignored"}, []),
        ({"eventType": "E", "status": "processed", "result": "garbage"}, []),
    ],
)
def test_event_records(data: dict[str, Any], expected: list[str]) -> None:
    assert kinds(audit_event("e1", data, {}, now=NOW, lease_s=30)) == expected


def test_a_processed_event_without_its_entries() -> None:
    data = {"status": "processed", "eventType": "E", "result": {"uid": "u1", "entryIds": ["a", "b", 7]}}
    assert event_entry_ids(data) == ("u1", ["a", "b"])
    assert audit_event("e1", data, {"a": True, "b": True}, now=NOW, lease_s=30) == []
    [found] = audit_event("e1", data, {"a": True}, now=NOW, lease_s=30)
    assert (found.kind, found.uid, found.event_id, found.entry_id) == (
        rf.EVENT_WITHOUT_ENTRIES,
        "u1",
        "e1",
        "b",
    )


C = "paynow:order:o1:line:l1"


def order(**fields: Any) -> dict[str, Any]:
    return {"uid": "u1", "credits": [{"entryId": C, "points": 500}], **fields}


REVERSED = {
    "generation": 1,
    "reversals": {C: 1},
    "reversed": [{"entryId": C, "points": 500}],
    "reversedBy": "refund:r1",
    "refunds": {"r1": "approved"},
}
RECREDITED = {
    "generation": 1,
    "reversals": {C: 1},
    "reversed": [{"entryId": C, "points": 500}],
    "reversedBy": "",
}


@pytest.mark.parametrize(
    ("data", "present", "expected"),
    [
        (order(), {C}, []),
        (order(), set(), [rf.ORDER_CREDIT_MISSING]),
        (order(), {C, f"rev:{C}"}, [rf.REVERSAL_NOT_ON_ORDER]),
        (order(), {C, f"recredit:{C}"}, [rf.RECREDIT_NOT_ON_ORDER]),
        (order(**REVERSED), {C, f"rev:{C}"}, []),
        (order(**REVERSED), {C}, [rf.ORDER_REVERSAL_MISSING]),
        (order(**REVERSED), {C, f"rev:{C}", f"rev2:{C}"}, [rf.REVERSAL_NOT_ON_ORDER]),
        (order(**REVERSED), {C, f"rev:{C}", f"recredit:{C}"}, [rf.RECREDIT_NOT_ON_ORDER]),
        (order(**RECREDITED), {C, f"rev:{C}", f"recredit:{C}"}, []),
        # Written before per-entry counts: the reversed list says the first reversal.
        (
            order(
                reversed=[{"entryId": C, "points": 500}], reversedBy="refund:r1", refunds={"r1": "completed"}
            ),
            {C, f"rev:{C}"},
            [],
        ),
        ({"credits": "garbage", "uid": 7}, set(), []),
        # Written before generations: re-credited, `reversedBy` left as it was.
        (
            order(reversed=[{"entryId": C, "points": 500}], reversedBy="refund:r1", recredited=True),
            {C, f"rev:{C}", f"recredit:{C}"},
            [],
        ),
        (order(**{**REVERSED, "refunds": {"r1": "failed"}}), {C, f"rev:{C}"}, [rf.ORDER_STATE_MISMATCH]),
        (order(**{**REVERSED, "reversedBy": "chargeback:d1"}), {C, f"rev:{C}"}, [rf.ORDER_STATE_MISMATCH]),
        (
            order(**{**REVERSED, "reversedBy": "chargeback:d1", "chargebacks": {"d1": {"status": "open"}}}),
            {C, f"rev:{C}"},
            [],
        ),
        (
            order(
                **{
                    **REVERSED,
                    "reversedBy": "chargeback:d1",
                    "chargebacks": {"d1": {"status": "won", "closed": True}},
                }
            ),
            {C, f"rev:{C}"},
            [rf.ORDER_STATE_MISMATCH],
        ),
        (order(**{**REVERSED, "generation": 0}), {C, f"rev:{C}"}, [rf.ORDER_STATE_MISMATCH]),
    ],
)
def test_orders_against_their_entries(data: dict[str, Any], present: set[str], expected: list[str]) -> None:
    _uid, ids = order_entry_ids(data)
    seen = {i: i in present for i in ids}
    assert kinds(audit_order("o1", data, seen, now=NOW, park_max_hours=72)) == expected


def test_what_is_parked_on_an_order() -> None:
    stale = {"e1": {"parkedAt": NOW - timedelta(hours=73)}, "e2": {"parkedAt": NOW - timedelta(hours=1)}}
    waiting = audit_order("o1", {"parked": stale}, {}, now=NOW, park_max_hours=72)
    assert [(f.kind, f.event_id, f.order_id) for f in waiting] == [(rf.STALE_PARKED, "e1", "o1")]
    credited = audit_order(
        "o1", {**order(), "parked": {"e2": stale["e2"]}}, {C: True}, now=NOW, park_max_hours=72
    )
    assert kinds(credited) == [rf.PARKED_ON_CREDITED_ORDER]
    assert kinds(audit_order("o1", {"parked": {"e3": "garbage"}}, {}, now=NOW, park_max_hours=72)) == [
        rf.STALE_PARKED
    ]


def test_every_kind_has_an_operator_action() -> None:
    names = [v for k, v in vars(rf).items() if k.isupper() and isinstance(v, str)]
    assert set(names) <= set(rf.ACTIONS)
    assert {rf.PAID_DRIFT, rf.PROMO_DRIFT} == rf.FIXABLE
    assert NOTICES == rf.NOTICES
