"""`migrate orders` decisions without a database: which app entries credited which order, when an order
is ambiguous or already there, `--since`, and the document the refund and chargeback machines read."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from contextlib import redirect_stderr
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paynow_service.adapters.app_ledger_scan import user_entry_path
from paynow_service.adapters.processing_documents import order_record as _order_record
from paynow_service.domain import events as ev
from paynow_service.domain.app_orders import (
    AppCredit,
    AppReversal,
    OrderCandidate,
    read_order_entry,
    user_orders,
)
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.ledger import Points, Wallet
from paynow_service.domain.ledger_reader import read_entry
from paynow_service.domain.ledger_rules import LedgerState, plan, read_set
from paynow_service.domain.migrated_orders import Verdict, classify, order_document
from paynow_service.entrypoints.progress import Progress
from paynow_service.plugins import get_plugin_manager
from paynow_service.service.migrate_orders import Migration
from paynow_service.service.order_disputes import refund_step
from paynow_service.service.order_migration import (
    SeenOrders,
    Tally,
    UserEntries,
    parse_since,
    passes_since,
)
from tests.support.ledger_shapes import reference_entries

T0 = datetime(2026, 2, 10, 12, 0, tzinfo=UTC)
ORDER = "411000000000000001"
UID = "u-alice"


def wallet_ledger(
    kind: str = "purchase",
    *,
    amount: object = 500,
    status: str | None = "posted",
    order_id: str | None = ORDER,
    pretty_id: str | None = "ABC-1001",
    product_id: str = "app-product-300",
    reversal_of: str | None = None,
    at: datetime | None = T0,
) -> dict[str, Any]:
    """An entry of the app's wallet-ledger service (the app's sync webhook credited orders through it)."""
    entry: dict[str, Any] = {
        "amount": amount,
        "balanceAfter": 500,
        "currency": "POINTS",
        "kind": kind,
        "source": {
            "eventId": order_id,
            "orderId": pretty_id or order_id,
            "paynowCustomerId": "422000000000000001",
            "productId": product_id,
            "productVersion": 3,
            "reversalOf": reversal_of,
            "reason": None,
        },
        "createdBy": "system:webhook",
    }
    if status is not None:
        entry["status"] = status
    if at is not None:
        entry["createdAt"] = at
    return entry


def queue_worker(order_id: str = ORDER, *, amount: int = 250, at: datetime = T0) -> dict[str, Any]:
    """An entry of the app's old queue worker (its id is the PayNow event id)."""
    return {
        "action": "credit",
        "kind": "paid",
        "amount": amount,
        "source": "paynow",
        "pre": {"paid": 0, "promo": 0},
        "post": {"paid": amount, "promo": 0},
        "metadata": {"orderId": order_id, "productId": "pack", "quantity": 1},
        "createdAt": at,
    }


def credits(*entries: tuple[str, dict[str, Any]], uid: str = UID) -> list[AppCredit]:
    found = [read_order_entry(uid, entry_id, data) for entry_id, data in entries]
    assert all(isinstance(item, AppCredit) for item in found), found
    return [item for item in found if isinstance(item, AppCredit)]


def one_order(*entries: tuple[str, dict[str, Any]], uid: str = UID) -> OrderCandidate:
    user = UserEntries(uid)
    for entry_id, data in entries:
        item = read_order_entry(uid, entry_id, data)
        if item is not None:
            user.add(item)
    (candidate,) = user.orders()
    return candidate


# ---- which entries credit an order ----


def test_a_wallet_ledger_purchase_is_a_credit_of_the_paynow_order_named_in_source_event_id() -> None:
    (credit,) = credits(("wlA1", wallet_ledger()))
    assert credit == AppCredit(
        uid=UID,
        entry_id="wlA1",
        order_id=ORDER,
        points=500,
        shape="app_wallet_ledger",
        status="posted",
        product_id="app-product-300",
        customer_id="422000000000000001",
        pretty_id="ABC-1001",
        created_at=T0,
    )


def test_a_pretty_id_equal_to_the_order_id_is_no_pretty_id() -> None:
    (credit,) = credits(("wlA1", wallet_ledger(pretty_id=None)))
    assert credit.pretty_id == ""


def test_a_queue_worker_credit_names_its_order_in_metadata() -> None:
    (credit,) = credits(("412000000000000009", queue_worker(amount=250)))
    assert (credit.order_id, credit.points, credit.shape, credit.product_id) == (
        ORDER,
        250,
        "app_queue_worker",
        "pack",
    )
    assert (credit.customer_id, credit.pretty_id, credit.status) == ("", "", "posted")


def test_refunds_and_chargebacks_of_the_wallet_ledger_are_order_reversals() -> None:
    refund = read_order_entry(UID, "wlR", wallet_ledger("refund", amount=-500, reversal_of="wlA1"))
    chargeback = read_order_entry(UID, "wlC", wallet_ledger("chargeback", amount=-500, order_id=None))
    assert refund == AppReversal("wlR", "refund", ORDER, "wlA1")
    assert chargeback == AppReversal("wlC", "chargeback", "", "")


@pytest.mark.parametrize(
    "data",
    [
        # The app's points service, including a subscription top-up keyed by the order id: not migrated.
        {
            "type": "credit",
            "channel": "promo",
            "amount": 1000,
            "action": "credit.subscription",
            "actionId": f"{ORDER}_first_cycle_prod-1",
            "pre": {"paid": 0, "promo": 0},
            "post": {"paid": 0, "promo": 1000},
            "createdAt": T0,
        },
        wallet_ledger("subscription_renewal"),
        wallet_ledger("admin_adjustment"),
        wallet_ledger("promo_credit", order_id=None),  # a promo credit of no order
        {"amount": -30, "kind": "reconcile_adjustment", "source": {"reason": "drift"}, "createdAt": T0},
        {**queue_worker(), "metadata": {"productId": "pack"}},  # a queue-worker credit naming no order
        {},
        {"amount": "lots", "type": 7, "metadata": "not a map"},
    ],
    ids=[
        "app-points-topup",
        "renewal",
        "adjustment",
        "promo-no-order",
        "reconcile",
        "qw-no-order",
        "empty",
        "garbage",
    ],
)
def test_other_entries_are_not_order_entries(data: dict[str, Any]) -> None:
    assert read_order_entry(UID, "e1", data) is None


def test_the_reference_shapes_read_as_expected() -> None:
    read = {i: read_order_entry(UID, i, d) for i, d in reference_entries(T0).items()}
    kinds = {i: type(item).__name__ for i, item in read.items() if item is not None}
    assert kinds == {
        "wl-purchase": "AppCredit",
        "wl-refund": "AppReversal",
        "412345678901234567": "AppCredit",
    }


def test_only_users_ledger_documents_are_entries() -> None:
    assert user_entry_path("users/u1/ledger/e1") == ("u1", "e1")
    assert user_entry_path("ledger/u1") is None  # the app's legacy top-level ledger
    assert user_entry_path("ledger/u1/ledger/e1") is None
    assert user_entry_path("users/u1/ledger/e1/ledger/x") is None


# ---- grouping ----


def test_lines_of_one_order_and_its_promo_credit_are_one_candidate() -> None:
    candidate = one_order(
        ("wlA2", wallet_ledger(amount=200, at=T0 + timedelta(seconds=1))),
        ("wlA1", wallet_ledger(amount=300)),
        ("wlP", wallet_ledger("promo_credit", amount=50, at=T0 + timedelta(seconds=2))),
    )
    assert candidate.entry_ids == ["wlA1", "wlA2", "wlP"]  # in the order they were credited
    assert (candidate.points, candidate.latest_at, candidate.pretty_id) == (
        550,
        T0 + timedelta(seconds=2),
        "ABC-1001",
    )
    assert candidate.customer_id == "422000000000000001"
    assert classify(candidate, None) == Verdict("write")


def test_one_users_orders_come_apart_by_order_id() -> None:
    orders = user_orders(
        credits(
            ("a", wallet_ledger(order_id="2")), ("b", wallet_ledger(order_id="1")), ("c", queue_worker("3"))
        ),
        [AppReversal("r", "refund", "2", "")],
    )
    assert [(c.order_id, c.entry_ids, len(c.reversals)) for c in orders] == [
        ("1", ["b"], 0),
        ("2", ["a"], 1),
        ("3", ["c"], 0),
    ]


# ---- ambiguous ----


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ([("wlA1", wallet_ledger(status="hold"))], "entry wlA1 is hold, not posted"),
        (
            [("wlA1", wallet_ledger()), ("wlA2", wallet_ledger(status="reversed"))],
            "entry wlA2 is reversed, not posted",
        ),
        ([("wlA1", wallet_ledger(status=None))], "entry wlA1 is without status, not posted"),
        (
            [("wlA1", wallet_ledger()), ("wlR", wallet_ledger("refund", amount=-500, pretty_id=None))],
            "the app recorded a refund of it (entry wlR)",
        ),
        (
            [
                ("wlA1", wallet_ledger()),
                ("wlC", wallet_ledger("chargeback", order_id=None, reversal_of="wlA1")),
            ],
            "the app recorded a chargeback of it (entry wlC)",
        ),
        ([("wlA1", wallet_ledger(amount=0))], "amount of entry wlA1 is 0, not positive"),
        ([("wlA1", wallet_ledger(amount="500"))], "amount of entry wlA1 is not an integer"),
        ([("wlA1", wallet_ledger(amount=2.5))], "amount of entry wlA1 is not an integer"),
        (
            [("wlA1", wallet_ledger()), ("412000000000000009", queue_worker())],
            "the app credited it more than once (entries 412000000000000009, wlA1)",
        ),
        (
            [("412000000000000008", queue_worker()), ("412000000000000009", queue_worker())],
            "the app credited it more than once",
        ),
        ([("wlA1", wallet_ledger(order_id="a/b"))], "order id 'a/b' cannot be a Firestore document id"),
    ],
    ids=[
        "hold",
        "reversed",
        "no-status",
        "app-refund",
        "app-chargeback-by-reversal-of",
        "zero",
        "string",
        "fraction",
        "both-app-paths",
        "two-queue-events",
        "bad-id",
    ],
)
def test_ambiguous_orders_are_never_written(entries: list[tuple[str, dict[str, Any]]], reason: str) -> None:
    candidate = one_order(*entries)
    verdict = classify(candidate, None)
    assert verdict.action == "ambiguous"
    assert verdict.reason.startswith(f"uid={UID}: ")
    assert reason in verdict.reason


def test_a_negative_credit_is_ambiguous() -> None:
    # A purchase with a negative amount (the wallet-ledger is signed): not something to reverse.
    verdict = classify(one_order(("wlA1", wallet_ledger(amount=-5))), None)
    assert verdict == Verdict("ambiguous", f"uid={UID}: amount of entry wlA1 is -5, not positive")


def test_an_order_seen_under_another_user_is_ambiguous() -> None:
    candidate = one_order(("wlE1", wallet_ledger()), uid="u-erin")
    verdict = classify(candidate, None, other_uid="u-dave")
    assert verdict == Verdict("ambiguous", "uid=u-erin: the order is also credited under uid=u-dave")


def test_an_existing_document_of_another_user_is_ambiguous() -> None:
    verdict = classify(
        one_order(("wlA1", wallet_ledger())), {"uid": "u-bob", "entryIds": ["x"], "points": 500}
    )
    assert verdict == Verdict("ambiguous", f"uid={UID}: paynowOrders names uid=u-bob")


@pytest.mark.parametrize(
    "existing",
    [
        {"uid": UID, "entryIds": ["wlA1", "other"], "points": 500},
        {"uid": UID, "entryIds": ["wlA1"], "points": 400},
    ],
    ids=["entries", "points"],
)
def test_an_existing_document_that_says_otherwise_is_ambiguous(existing: dict[str, Any]) -> None:
    verdict = classify(one_order(("wlA1", wallet_ledger())), existing)
    assert verdict.action == "ambiguous"
    assert "paynowOrders holds" in verdict.reason


# ---- skipped and written ----


def test_an_order_already_migrated_is_skipped() -> None:
    candidate = one_order(("wlA1", wallet_ledger(amount=300)), ("wlA2", wallet_ledger(amount=200)))
    existing = {**order_document(candidate), "entryIds": ["wlA2", "wlA1"]}  # any order of ids
    assert classify(candidate, existing) == Verdict("skip", "already migrated")


def test_an_order_this_service_credited_is_never_overwritten() -> None:
    existing = {"uid": "u-other", "entryIds": [f"paynow:order:{ORDER}:line:1"], "points": 500}
    assert classify(one_order(("wlA1", wallet_ledger())), existing) == Verdict(
        "skip", "credited by this service"
    )


def test_a_document_holding_only_parked_events_is_merged() -> None:
    parked = {"parked": {"e1": {"event": b"...", "type": "ON_REFUND"}, "e2": {}}, "parkedAt": T0}
    candidate = one_order(("wlA1", wallet_ledger()))
    assert classify(candidate, parked) == Verdict("write", merge=True, parked=2)
    assert classify(candidate, {"updatedAt": T0}) == Verdict("write", merge=True, parked=0)


def test_the_document_is_what_the_refund_and_chargeback_machines_read() -> None:
    candidate = one_order(
        ("wlA1", wallet_ledger(amount=300, product_id="p300")),
        ("wlA2", wallet_ledger(amount=200, product_id="p200", at=T0 + timedelta(seconds=1))),
    )
    document = order_document(candidate)
    assert document == {
        "uid": UID,
        "customerId": "422000000000000001",
        "entryIds": ["wlA1", "wlA2"],
        "credits": [
            {"entryId": "wlA1", "points": 300, "productId": "p300"},
            {"entryId": "wlA2", "points": 200, "productId": "p200"},
        ],
        "points": 500,
        "generation": 0,
        "reversals": {},
        "reversed": [],
        "reversedBy": "",
        "status": "credited",
        "refunds": {},
        "refundAmounts": {},
        "chargebacks": {},
        "migratedFrom": "app",
        "prettyId": "ABC-1001",
    }
    record = _order_record(ORDER, document)
    assert record is not None
    assert (record.uid, record.status, [c.entry_id for c in record.credits]) == (
        UID,
        "credited",
        ["wlA1", "wlA2"],
    )
    assert "prettyId" not in order_document(one_order(("q", queue_worker())))


def test_a_refund_of_a_migrated_order_reverses_the_apps_entries_under_the_ledger_rules() -> None:
    """The reversal of a migrated order names the app's entries; the ledger's rules read them through
    read_entry and accept them as credits (wallet-ledger purchase and promo credit, queue-worker credit)."""
    entries = {
        "wlA1": wallet_ledger(amount=300),
        "wlP": wallet_ledger("promo_credit", amount=50, at=T0 + timedelta(seconds=1)),
    }
    record = _order_record(ORDER, order_document(one_order(*entries.items())))
    assert record is not None
    refund = ev.Refund(refund_id="r1", order_id=ORDER, status="approved", amount=0)
    event = ev.PaymentEvent(event_id="e1", event_type=ev.REFUND, refund=refund)
    step = refund_step(event, refund, record, get_plugin_manager().hook, Catalog())
    assert [r.entry_id for r in step.entries] == ["rev:wlA1", "rev:wlP"]
    needed = read_set(step.entries)
    state = LedgerState(
        wallets={UID: Wallet(paid=350)},
        keys=dict.fromkeys(needed.key_ids),
        entries={
            (uid, entry_id): read_entry(uid, entry_id, entries[entry_id]) if entry_id in entries else None
            for uid, entry_id in needed.entries
        },
    )
    planned = plan(step.entries, state, now=T0 + timedelta(days=1), allow_negative_balance=True)
    assert [(e.entry_id, e.amount) for e in planned.new_entries] == [("rev:wlA1", -300), ("rev:wlP", -50)]
    assert planned.wallets[UID].paid == 0
    qw = {"412000000000000009": queue_worker(amount=250)}
    qw_record = _order_record(ORDER, order_document(one_order(*qw.items())))
    assert qw_record is not None
    (request,) = refund_step(event, refund, qw_record, get_plugin_manager().hook, Catalog()).entries
    qw_state = LedgerState(
        wallets={UID: Wallet(paid=250)},
        keys={request.entry_id: None},
        entries={
            (UID, request.entry_id): None,
            (UID, "412000000000000009"): read_entry(UID, "412000000000000009", qw["412000000000000009"]),
        },
    )
    (reversal,) = plan([request], qw_state, now=T0, allow_negative_balance=True).new_entries
    assert (reversal.entry_id, reversal.amount, reversal.post) == (
        "rev:412000000000000009",
        -250,
        Points(0, 0),
    )


# ---- --since ----


def test_since_counts_an_order_by_its_latest_credit() -> None:
    candidate = one_order(("old", wallet_ledger(at=T0 - timedelta(days=30))), ("new", wallet_ledger(at=T0)))
    assert passes_since(candidate, None)
    assert passes_since(candidate, T0)  # at DATE counts
    assert not passes_since(candidate, T0 + timedelta(microseconds=1))
    assert passes_since(candidate, T0 - timedelta(days=1))


def test_entries_without_a_timestamp_are_older_than_any_date() -> None:
    candidate = one_order(("wlA1", wallet_ledger(at=None)))
    assert candidate.latest_at is None
    assert passes_since(candidate, None)
    assert not passes_since(candidate, datetime(1900, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31T10:00:00+02:00", datetime(2026, 1, 31, 8, 0, tzinfo=UTC)),
        ("2026-01-31T10:00:00Z", datetime(2026, 1, 31, 10, 0, tzinfo=UTC)),
    ],
)
def test_since_takes_a_date_or_a_time_with_its_offset(text: str, expected: datetime) -> None:
    assert parse_since(text) == expected


@pytest.mark.parametrize("text", ["2026-13-01", "31/01/2026", "2026-01-31T10:00:00", "yesterday", ""])
def test_a_bad_since_names_the_flag_and_the_formats(text: str) -> None:
    with pytest.raises(ValueError, match="--since") as raised:
        parse_since(text)
    assert "YYYY-MM-DD or ISO 8601 with an offset" in str(raised.value)


# ---- one run: users one after the other ----


def test_seen_orders_remember_the_first_uid_up_to_the_cap() -> None:
    seen = SeenOrders(cap=2)
    assert seen.other_uid("o1", "a") == ""
    assert seen.other_uid("o1", "a") == ""  # the same user again
    assert seen.other_uid("o1", "b") == "a"
    assert seen.other_uid("o2", "a") == ""
    assert seen.other_uid("o3", "a") == ""  # past the cap: not remembered
    assert seen.other_uid("o3", "b") == ""


class FakeScan:
    def __init__(self, entries: list[tuple[str, str, dict[str, Any]]]) -> None:
        self._entries = entries

    async def entries(self) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        for item in self._entries:
            yield item


class FakeOrders:
    """paynowOrders in memory, written the way the Firestore adapter does."""

    def __init__(self, documents: dict[str, dict[str, Any]] | None = None) -> None:
        self.documents = documents or {}

    async def existing(self, order_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        return {order_id: self.documents.get(order_id) for order_id in order_ids}

    async def migrate(self, candidate: OrderCandidate, *, other_uid: str = "") -> Verdict:
        verdict = classify(candidate, self.documents.get(candidate.order_id), other_uid=other_uid)
        if verdict.action == "write":
            base = self.documents.get(candidate.order_id, {}) if verdict.merge else {}
            self.documents[candidate.order_id] = {**base, **order_document(candidate)}
        return verdict


async def run_migration(
    orders: FakeOrders,
    entries: list[tuple[str, str, dict[str, Any]]],
    *,
    apply: bool,
    since: datetime | None = None,
) -> tuple[Tally, list[str]]:
    tally = Tally(apply=apply)
    lines: list[str] = []
    progress = Progress("paynow-service migrate orders")
    await Migration(orders, apply, since, tally, say=lines.append).run(FakeScan(entries), progress.tick)
    return tally, lines


HISTORY = [
    ("u-alice", "412000000000000005", queue_worker("O5", amount=250, at=T0 - timedelta(days=200))),
    ("u-alice", "wlA1", wallet_ledger(amount=300, order_id="O1")),
    ("u-alice", "wlA2", wallet_ledger(amount=200, order_id="O1")),
    ("u-dave", "wlD1", wallet_ledger(amount=200, order_id="O8", pretty_id=None)),
    ("u-dave", "spend", {"type": "debit", "channel": "paid", "amount": 5, "createdAt": T0}),
    ("u-erin", "wlE1", wallet_ledger(amount=200, order_id="O8", pretty_id=None, at=T0 - timedelta(days=200))),
]


async def test_a_dry_run_then_an_apply_then_another_apply() -> None:
    orders = FakeOrders({"O1": {"parked": {"ev-1": {}}, "parkedAt": T0}})
    tally, lines = await run_migration(orders, HISTORY, apply=False)
    assert lines == [
        "would write O1 uid=u-alice entries=2 points=500 parked=1",
        "would write O5 uid=u-alice entries=1 points=250",
        "would write O8 uid=u-dave entries=1 points=200",
        "ambiguous O8: uid=u-erin: the order is also credited under uid=u-dave",
    ]
    assert orders.documents.keys() == {"O1"}
    assert tally.summary(None) == (
        "orders found 4, would write 3, skipped 0, ambiguous 1; 1 order has parked refunds or disputes: "
        "`paynow-service sweep` publishes them once the order is credited; "
        "entries scanned 6 (3 users), not order entries 1"
    )
    tally, lines = await run_migration(orders, HISTORY, apply=True)
    assert lines[0] == "wrote O1 uid=u-alice entries=2 points=500 parked=1"
    assert (tally.written, tally.skipped, tally.ambiguous, tally.parked) == (3, 0, 1, 1)
    assert orders.documents["O1"]["parked"] == {"ev-1": {}}  # merged: the parked refund stays
    tally, lines = await run_migration(orders, HISTORY, apply=True)
    assert lines == ["ambiguous O8: uid=u-erin: the order is also credited under uid=u-dave"]
    assert tally.summary(None).startswith("orders found 4, written 0, skipped 3, ambiguous 1; entries")


async def test_since_leaves_older_orders_out_but_remembers_their_user() -> None:
    tally, lines = await run_migration(FakeOrders(), HISTORY, apply=False, since=T0 - timedelta(days=1))
    assert lines == [
        "would write O1 uid=u-alice entries=2 points=500",
        "would write O8 uid=u-dave entries=1 points=200",
    ]
    assert (tally.found, tally.older) == (2, 2)
    assert "orders before 2026-02-09T12:00:00+00:00 2" in tally.summary(T0 - timedelta(days=1))


def test_progress_is_printed_at_most_every_two_seconds() -> None:
    now = [0.0]
    progress = Progress("paynow-service migrate orders", clock=lambda: now[0])
    err = io.StringIO()
    with redirect_stderr(err):
        for step in (0.5, 1.9, 2.1, 3.0, 4.2):
            now[0] = step
            progress.tick(Tally(apply=False, entries=int(step * 10)))
    assert err.getvalue().splitlines() == [
        "paynow-service migrate orders: scanned 21 entries, 0 users, 0 orders found",
        "paynow-service migrate orders: scanned 42 entries, 0 users, 0 orders found",
    ]
