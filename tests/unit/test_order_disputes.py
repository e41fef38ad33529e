"""`order_disputes`: the refunds and disputes of one order as state machines, step by step.

`refund_step` and `chargeback_step` are pure: each test hands them an `OrderRecord` built
by hand (or left by the step before) and reads the `Step` back. Where points must really
come back, the entries are also applied to the ledger's pure rules (`ledger_rules.plan`),
which check the reversal/re-credit chain of every entry id and generation.

The order: two lines (L1 300 paid, L2 250 paid) and, where a test says so, two credited
cycles of a plan its line bought (S1, S2: 1000 promo each).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pluggy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paynow_service import hookimpl
from paynow_service.domain import events as ev
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.ledger import EntryRequest, LedgerEntry, Wallet
from paynow_service.domain.ledger_rules import KeyRecord, LedgerState, plan, read_set
from paynow_service.domain.orders import Dispute, OrderRecord, order_fields
from paynow_service.hookspecs import CreditedEntry
from paynow_service.plugins import get_plugin_manager
from paynow_service.service.order_disputes import (
    Step,
    apply_in_order,
    chargeback_step,
    refund_step,
)

PACK, PLAN = "p-pack", "plan-gold"
CATALOG = Catalog.from_toml(
    f'[products."{PACK}"]\npoints = 100\n[subscriptions."{PLAN}"]\npoints_per_cycle = 1000\n'
)
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SENT_MS = int(datetime(2025, 12, 31, 22, 0, tzinfo=UTC).timestamp() * 1000)

L1, L2 = "paynow:order:o1:line:l1", "paynow:order:o1:line:l2"
S1, S2 = "paynow:sub:s1:cycle:1", "paynow:sub:s1:cycle:2"
CREDITS = (CreditedEntry(L1, 300, PACK), CreditedEntry(L2, 250, PACK))
CYCLES = (CreditedEntry(S1, 1000, PLAN), CreditedEntry(S2, 1000, PLAN))
ORDER = OrderRecord(uid="u1", order_id="o1", credits=CREDITS)
WITH_CYCLES = replace(ORDER, cycles=CYCLES, subscription_ids=("s1",))
PLAN_ONLY = OrderRecord(
    uid="u1", order_id="o1", cycles=CYCLES, subscription_ids=("s1",)
)  # its line bought the plan
ONCE = {L1: 1, L2: 1}  # entry_reversals: each line reversed once
TWICE = {L1: 2, L2: 2}
REFUND_STATUSES = ("created", "processing", "approved", "completed", "canceled", "failed")


# ---- events, hooks, and playing a sequence ----


def refund(status: str, refund_id: str = "r1", *, amount: int = 0, at: int = 0) -> ev.PaymentEvent:
    return ev.PaymentEvent(
        event_id=f"e-{refund_id}-{status}-{at}",
        event_type=ev.REFUND,
        sent_at_ms=SENT_MS + at,
        refund=ev.Refund(refund_id=refund_id, order_id="o1", status=status, amount=amount),
    )


def dispute(dispute_id: str = "d1", status: str = "open", *, at: int = 0) -> ev.PaymentEvent:
    """ON_CHARGEBACK: a dispute opened (or another of its open statuses)."""
    return ev.PaymentEvent(
        event_id=f"e-{dispute_id}-{status}-{at}",
        event_type=ev.CHARGEBACK,
        sent_at_ms=SENT_MS + at,
        chargeback=ev.Chargeback(chargeback_id=dispute_id, order_id="o1", status=status),
    )


def closed(dispute_id: str = "d1", outcome: str = "won", *, at: int = 0) -> ev.PaymentEvent:
    """ON_CHARGEBACK_CLOSED with its outcome."""
    return ev.PaymentEvent(
        event_id=f"e-{dispute_id}-closed-{outcome}-{at}",
        event_type=ev.CHARGEBACK_CLOSED,
        sent_at_ms=SENT_MS + at,
        chargeback=ev.Chargeback(
            chargeback_id=dispute_id, order_id="o1", status="closed", chargeback_status=outcome
        ),
    )


class RefundByAmount:
    """Takes back one point per refunded cent; a refund naming no amount, everything (None)."""

    @hookimpl
    def paynow_refund_points(self, refund: ev.Refund) -> int | None:
        return refund.amount or None


class FixedRefund:
    """Takes back a fixed number of points whatever the refund, and records what it was shown."""

    def __init__(self, points: int) -> None:
        self.points = points
        self.shown: list[tuple[CreditedEntry, ...]] = []

    @hookimpl
    def paynow_refund_points(self, credited: Sequence[CreditedEntry]) -> int:
        self.shown.append(tuple(credited))
        return self.points


HOOKS = get_plugin_manager().hook
BY_AMOUNT = get_plugin_manager(extra_plugins=[RefundByAmount()]).hook


def hooks_with(plugin: object) -> pluggy.HookRelay:
    return get_plugin_manager(extra_plugins=[plugin]).hook


def step(event: ev.PaymentEvent, order: OrderRecord, hooks: pluggy.HookRelay = HOOKS) -> Step:
    """One event, as `decide` applies it (a dispute's step gets the hooks, for a refund taking over)."""
    if event.refund is not None:
        return refund_step(event, event.refund, order, hooks, CATALOG)
    assert event.chargeback is not None
    return chargeback_step(event, event.chargeback, order, hooks, CATALOG)


@dataclass
class Played:
    order: OrderRecord
    steps: list[Step] = field(default_factory=list)

    @property
    def results(self) -> list[str]:
        return [s.result for s in self.steps]

    @property
    def points(self) -> int:
        return sum(s.points for s in self.steps)

    @property
    def entry_ids(self) -> list[list[str]]:
        return [[e.entry_id for e in s.entries] for s in self.steps]

    @property
    def entries(self) -> list[EntryRequest]:
        return [e for s in self.steps for e in s.entries]


def play(order: OrderRecord, events: Iterable[ev.PaymentEvent], hooks: pluggy.HookRelay = HOOKS) -> Played:
    played = Played(order)
    for event in events:
        done = step(event, played.order, hooks)
        played.steps.append(done)
        played.order = done.order
    return played


def rev(entry_id: str, generation: int = 1) -> str:
    return f"rev:{entry_id}" if generation == 1 else f"rev{generation}:{entry_id}"


def recredit(entry_id: str, generation: int = 1) -> str:
    return f"recredit:{entry_id}" if generation == 1 else f"recredit{generation}:{entry_id}"


def without_metadata(entries: Iterable[EntryRequest]) -> list[EntryRequest]:
    return [replace(e, metadata={}) for e in entries]


class Ledger:
    """Wallets, ledgerKeys and entries in memory, changed only through `ledger_rules.plan`."""

    def __init__(self, order: OrderRecord) -> None:
        self.wallets: dict[str, Wallet] = {}
        self.keys: dict[str, KeyRecord] = {}
        self.entries: dict[tuple[str, str], LedgerEntry] = {}
        self.apply(
            EntryRequest(c.entry_id, "u1", "credit", c.points, "paynow", kind="paid") for c in order.credits
        )
        self.apply(
            EntryRequest(
                c.entry_id,
                "u1",
                "credit",
                c.points,
                "paynow",
                kind="promo",
                expires_at=NOW + timedelta(days=365),
            )
            for c in order.cycles
        )

    def apply(self, requests: Iterable[EntryRequest]) -> None:
        requests = list(requests)
        if not requests:
            return
        needed = read_set(requests)
        state = LedgerState(
            wallets={uid: self.wallets.get(uid) for uid in needed.uids},
            keys={key: self.keys.get(key) for key in needed.key_ids},
            entries={ref: self.entries.get(ref) for ref in needed.entries},
        )
        result = plan(requests, state, now=NOW, allow_negative_balance=True)
        self.entries.update({(e.uid, e.entry_id): e for e in result.new_entries})
        self.keys.update({key.entry_id: key for key, _ in result.new_keys})
        self.wallets.update({uid: result.wallets[uid] for uid in result.changed_wallets})

    @property
    def total(self) -> int:
        wallet = self.wallets["u1"]
        return wallet.paid + wallet.lots_sum


# ---- refunds ----


@pytest.mark.parametrize("status", ["approved", "completed", "APPROVED"])
def test_refund_approved_or_completed_reverses_every_credit(status: str) -> None:
    done = step(refund(status), ORDER)
    assert done.result == "reversed"
    assert done.points == -550
    assert without_metadata(done.entries) == [
        EntryRequest(
            entry_id=rev(entry),
            uid="u1",
            action="reversal",
            amount=None,  # the original's amount
            source="paynow",
            reversal_of=entry,
            generation=1,
        )
        for entry in (L1, L2)
    ]
    assert [e.metadata for e in done.entries] == [
        {"eventId": f"e-r1-{status}-0", "orderId": "o1", "by": "refund:r1", "reversalOf": entry}
        for entry in (L1, L2)
    ]
    assert done.order == replace(
        ORDER,
        generation=1,
        entry_reversals=ONCE,
        reversed={L1: 300, L2: 250},
        reversed_by="refund:r1",
        refunds={"r1": status.lower()},
        refund_amounts={"r1": 0},
    )
    assert done.order.is_reversed
    assert done.order.status == "reversed"


@pytest.mark.parametrize("status", ["canceled", "cancelled", "failed"])
def test_the_same_refund_canceled_or_failed_recredits_what_it_took(status: str) -> None:
    played = play(ORDER, [refund("approved"), refund(status)])
    assert played.results == ["reversed", "recredited"]
    done = played.steps[1]
    assert done.points == 550
    assert without_metadata(done.entries) == [
        EntryRequest(
            entry_id=recredit(entry),
            uid="u1",
            action="credit",
            amount=None,  # the ledger gives back what the reversal really took
            source="paynow",
            reversal_of=entry,
            generation=1,
        )
        for entry in (L1, L2)
    ]
    assert [e.metadata for e in done.entries] == [
        {"eventId": f"e-r1-{status}-0", "orderId": "o1", "by": "refund:r1", "recreditOf": entry}
        for entry in (L1, L2)
    ]
    assert done.order == replace(
        ORDER,
        generation=1,
        entry_reversals=ONCE,
        reversed={L1: 300, L2: 250},
        reversed_by="",
        refunds={"r1": status},
        refund_amounts={"r1": 0},
    )
    assert not done.order.is_reversed
    assert done.order.status == "recredited"
    assert played.points == 0


@pytest.mark.parametrize("status", ["created", "processing", "canceled", "failed", "something-new"])
def test_refund_that_does_not_reverse_only_records_its_status(status: str) -> None:
    done = step(refund(status), ORDER)
    assert (done.result, done.entries, done.points) == ("status_updated", (), 0)
    assert done.order == replace(ORDER, refunds={"r1": status}, refund_amounts={"r1": 0})
    assert done.order.status == "credited"


# Forward only: the result of `then` after `first` for one refund id, on a credited order.
FIRST = {
    "created": "status_updated",
    "processing": "status_updated",
    "approved": "reversed",
    "completed": "reversed",
    "canceled": "status_updated",
    "failed": "status_updated",
}
THEN = {  # columns: created, processing, approved, completed, canceled, failed
    "created": ("no_change", "status_updated", "reversed", "reversed", "status_updated", "status_updated"),
    "processing": ("no_change", "no_change", "reversed", "reversed", "status_updated", "status_updated"),
    "approved": ("no_change", "no_change", "no_change", "status_updated", "recredited", "recredited"),
    "completed": ("no_change", "no_change", "no_change", "no_change", "recredited", "recredited"),
    "canceled": ("no_change",) * 6,
    "failed": ("no_change",) * 6,
}
MOVES = {"reversed": -550, "recredited": 550, "status_updated": 0, "no_change": 0}


@pytest.mark.parametrize(
    ("first", "then"),
    list(itertools.product(REFUND_STATUSES, REFUND_STATUSES)),
    ids=[f"{a}-then-{b}" for a, b in itertools.product(REFUND_STATUSES, REFUND_STATUSES)],
)
def test_refund_statuses_only_go_forward(first: str, then: str) -> None:
    expected = [FIRST[first], THEN[first][REFUND_STATUSES.index(then)]]
    played = play(ORDER, [refund(first), refund(then, at=1)])
    assert played.results == expected
    assert [s.points for s in played.steps] == [MOVES[r] for r in expected]
    moved = [e for s in played.steps for e in s.entries]
    assert len(moved) == 2 * sum(r in ("reversed", "recredited") for r in expected)
    # The furthest status is what stays recorded; a stale one leaves the order as it was.
    assert played.order.refunds == {"r1": then if expected[1] != "no_change" else first}
    if expected[1] == "no_change":
        assert played.steps[1].order is played.steps[0].order
    assert played.order.is_reversed == (played.points == -550)
    assert played.order.generation == expected.count("reversed")
    assert played.order.reversed_by == ("refund:r1" if played.order.is_reversed else "")


def test_a_failed_refund_overtaken_by_its_approved_never_reverses() -> None:
    played = play(ORDER, [refund("failed"), refund("approved"), refund("completed")])
    assert played.results == ["status_updated", "no_change", "no_change"]
    assert played.entries == []
    assert played.order == replace(ORDER, refunds={"r1": "failed"}, refund_amounts={"r1": 0})


def test_refund_in_an_unknown_status_is_overtaken_by_any_known_one() -> None:
    played = play(ORDER, [refund("something-new"), refund("approved"), refund("something-new", at=1)])
    assert played.results == ["status_updated", "reversed", "no_change"]
    assert played.order.refunds == {"r1": "approved"}


@pytest.mark.parametrize(
    "event",
    [refund("completed"), refund("approved", "r2"), refund("completed", "r2"), refund("failed", "r2")],
    ids=["its-completion", "another-approved", "another-completed", "another-failed"],
)
def test_while_a_refund_holds_the_order_other_events_only_record_their_status(event: ev.PaymentEvent) -> None:
    held = step(refund("approved"), ORDER).order
    done = step(event, held)
    assert (done.result, done.entries, done.points) == ("status_updated", (), 0)
    assert event.refund is not None
    assert done.order == replace(
        held,
        refunds={**held.refunds, event.refund.refund_id: event.refund.status},
        refund_amounts={**held.refund_amounts, event.refund.refund_id: 0},
    )
    assert done.order.reversed_by == "refund:r1"


def test_a_refund_recredits_only_the_reversal_it_holds() -> None:
    held = step(dispute(), ORDER).order  # the dispute holds the reversal
    played = play(held, [refund("approved"), refund("failed")])
    assert played.results == ["status_updated", "status_updated"]
    assert played.entries == []
    assert played.order.reversed_by == "chargeback:d1"
    assert played.order.refunds == {"r1": "failed"}


# ---- disputes (chargebacks) ----


def test_a_new_dispute_reverses_every_credit() -> None:
    done = step(dispute(), ORDER)
    assert done.result == "reversed"
    assert done.points == -550
    assert [(e.entry_id, e.amount, e.generation) for e in done.entries] == [
        (rev(L1), None, 1),
        (rev(L2), None, 1),
    ]
    assert [e.metadata for e in done.entries] == [
        {"eventId": "e-d1-open-0", "orderId": "o1", "by": "chargeback:d1", "reversalOf": entry}
        for entry in (L1, L2)
    ]
    assert done.order == replace(
        ORDER,
        generation=1,
        entry_reversals=ONCE,
        reversed={L1: 300, L2: 250},
        reversed_by="chargeback:d1",
        chargebacks={"d1": Dispute("open")},
    )


def test_a_dispute_does_not_ask_the_refund_hook() -> None:
    plugin = FixedRefund(1)
    assert play(ORDER, [dispute()], hooks_with(plugin)).points == -550
    assert plugin.shown == []


def test_a_dispute_redelivered_changes_nothing_a_new_open_status_is_recorded() -> None:
    played = play(
        ORDER, [dispute(), dispute(), dispute(status="under_review"), dispute(status="UNDER_REVIEW")]
    )
    assert played.results == ["reversed", "no_change", "status_updated", "no_change"]
    assert played.points == -550
    assert played.order.chargebacks == {"d1": Dispute("under_review")}
    assert played.order.reversed_by == "chargeback:d1"


def test_a_dispute_won_by_its_holder_recredits() -> None:
    played = play(ORDER, [dispute(), closed(outcome="won")])
    assert played.results == ["reversed", "recredited"]
    assert played.entry_ids == [[rev(L1), rev(L2)], [recredit(L1), recredit(L2)]]
    assert [e.generation for e in played.steps[1].entries] == [1, 1]
    assert [e.metadata for e in played.steps[1].entries] == [
        {"eventId": "e-d1-closed-won-0", "orderId": "o1", "by": "chargeback:d1", "recreditOf": entry}
        for entry in (L1, L2)
    ]
    assert played.points == 0
    assert played.order == replace(
        ORDER,
        generation=1,
        entry_reversals=ONCE,
        reversed={L1: 300, L2: 250},
        chargebacks={"d1": Dispute("won", closed=True)},
    )


def test_a_dispute_lost_stays_reversed() -> None:
    played = play(ORDER, [dispute(), closed(outcome="lost")])
    assert played.results == ["reversed", "status_updated"]
    assert played.points == -550
    assert played.order.reversed_by == "chargeback:d1"
    assert played.order.chargebacks == {"d1": Dispute("lost", closed=True)}


@pytest.mark.parametrize("outcome", ["won", "lost"])
@pytest.mark.parametrize(
    "later",
    [
        dispute(at=9),
        dispute(status="under_review", at=9),
        closed(outcome="won", at=9),
        closed(outcome="lost", at=9),
    ],
    ids=["open", "under-review", "closed-won", "closed-lost"],
)
def test_a_closed_dispute_is_final(outcome: str, later: ev.PaymentEvent) -> None:
    before = play(ORDER, [dispute(), closed(outcome=outcome)]).order
    done = step(later, before)
    assert (done.result, done.entries, done.points) == ("no_change", (), 0)
    assert done.order is before


def test_a_dispute_lost_whose_opening_was_missed_reverses() -> None:
    done = step(closed(outcome="lost"), ORDER)
    assert done.result == "reversed"
    assert [e.entry_id for e in done.entries] == [rev(L1), rev(L2)]
    assert done.points == -550
    assert done.order.reversed_by == "chargeback:d1"
    assert done.order.chargebacks == {"d1": Dispute("lost", closed=True)}


def test_a_dispute_won_whose_opening_was_missed_changes_no_points_even_when_it_opens_later() -> None:
    played = play(ORDER, [closed(outcome="won"), dispute(at=1)])
    assert played.results == ["status_updated", "no_change"]
    assert played.entries == []
    assert played.order == replace(ORDER, chargebacks={"d1": Dispute("won", closed=True)})


@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_while_a_refund_holds_the_order_a_dispute_only_records_its_status(outcome: str) -> None:
    held = step(refund("approved"), ORDER).order
    played = play(held, [dispute(), closed(outcome=outcome)])
    assert played.results == ["status_updated", "status_updated"]
    assert played.entries == []
    assert played.order == replace(held, chargebacks={"d1": Dispute(outcome, closed=True)})


@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_a_closed_dispute_never_seen_while_a_refund_holds_the_order_only_records_its_status(
    outcome: str,
) -> None:
    held = step(refund("approved"), ORDER).order
    done = step(closed(outcome=outcome), held)
    assert (done.result, done.entries) == ("status_updated", ())
    assert done.order.reversed_by == "refund:r1"


def test_another_disputes_win_does_not_recredit() -> None:
    held = step(dispute("d1"), ORDER).order
    played = play(held, [dispute("d2"), closed("d2", "won")])
    assert played.results == ["status_updated", "status_updated"]
    assert played.order.reversed_by == "chargeback:d1"


# ---- generations: every reversal after a re-credit is the next one ----


@pytest.mark.parametrize(
    "events",
    [
        [
            dispute("d1"),
            closed("d1", "won"),
            refund("approved"),
            refund("failed"),
            dispute("d2"),
            closed("d2"),
        ],
        [
            refund("approved"),
            refund("canceled"),
            dispute("d1"),
            closed("d1"),
            refund("completed", "r2"),
            refund("failed", "r2"),
        ],
        [dispute("d1"), closed("d1"), dispute("d2"), closed("d2"), dispute("d3"), closed("d3")],
    ],
    ids=["dispute-refund-dispute", "refund-dispute-refund", "three-disputes"],
)
def test_generations_one_to_three_have_their_own_entry_ids(events: list[ev.PaymentEvent]) -> None:
    ledger = Ledger(WITH_CYCLES)
    order = WITH_CYCLES
    originals = [L1, L2, S1, S2]
    for n, event in enumerate(events):
        generation = n // 2 + 1
        done = step(event, order)
        ledger.apply(done.entries)  # the ledger accepts each chain: rev{n} after recredit{n-1}
        if n % 2 == 0:
            assert done.result == "reversed"
            assert [e.entry_id for e in done.entries] == [rev(e, generation) for e in originals]
            assert [e.action for e in done.entries] == ["reversal"] * 4
            assert done.points == -2550
            assert ledger.total == 0
        else:
            assert done.result == "recredited"
            assert [e.entry_id for e in done.entries] == [recredit(e, generation) for e in originals]
            assert [e.action for e in done.entries] == ["credit"] * 4
            assert done.points == 2550
            assert ledger.total == 2550
        assert [e.generation for e in done.entries] == [generation] * 4
        assert [e.reversal_of for e in done.entries] == originals
        assert done.order.generation == generation
        order = done.order
    assert ledger.total == 2550
    # The ids the ledger stores, spelt out.
    assert {"rev:" + L1, "recredit2:" + S2, "rev3:" + L1, "recredit3:paynow:sub:s1:cycle:2"} <= {
        entry_id for _, entry_id in ledger.entries
    }


def test_a_chargeback_after_a_failed_refund_reverses_again() -> None:
    # docs/refunds-and-disputes.md row 6.
    played = play(ORDER, [refund("approved"), refund("failed"), dispute()])
    assert played.results == ["reversed", "recredited", "reversed"]
    assert played.entry_ids == [[rev(L1), rev(L2)], [recredit(L1), recredit(L2)], [rev(L1, 2), rev(L2, 2)]]
    assert played.order.generation == 2
    assert played.order.reversed_by == "chargeback:d1"
    assert played.order.status == "reversed"


# ---- partial refunds: the plugins' call ----


@pytest.mark.parametrize(
    ("amount", "order", "taken", "entries"),
    [
        (200, ORDER, {L1: 200}, [(rev(L1), 200)]),
        (300, ORDER, {L1: 300}, [(rev(L1), None)]),
        (301, ORDER, {L1: 300, L2: 1}, [(rev(L1), None), (rev(L2), 1)]),
        (550, ORDER, {L1: 300, L2: 250}, [(rev(L1), None), (rev(L2), None)]),
        (10_000, ORDER, {L1: 300, L2: 250}, [(rev(L1), None), (rev(L2), None)]),  # at most everything
        (600, WITH_CYCLES, {L1: 300, L2: 250, S1: 50}, [(rev(L1), None), (rev(L2), None), (rev(S1), 50)]),
        (1500, PLAN_ONLY, {S1: 1000, S2: 500}, [(rev(S1), None), (rev(S2), 500)]),
    ],
    ids=["part-of-L1", "all-of-L1", "into-L2", "all", "more-than-all", "into-cycles", "cycles-only"],
)
def test_partial_refund_takes_what_the_hook_says_and_its_failure_gives_exactly_that_back(
    amount: int, order: OrderRecord, taken: dict[str, int], entries: list[tuple[str, int | None]]
) -> None:
    ledger = Ledger(order)
    before = ledger.total
    reversed_ = step(refund("approved", amount=amount), order, BY_AMOUNT)
    assert reversed_.result == "reversed"
    assert [(e.entry_id, e.amount) for e in reversed_.entries] == entries
    assert reversed_.points == -sum(taken.values())
    assert reversed_.order.reversed == taken
    ledger.apply(reversed_.entries)
    assert ledger.total == before - sum(taken.values())
    recredited = step(refund("failed"), reversed_.order, BY_AMOUNT)
    assert recredited.result == "recredited"
    assert [(e.entry_id, e.reversal_of, e.amount) for e in recredited.entries] == [
        (recredit(entry), entry, None) for entry in taken
    ]
    assert recredited.points == sum(taken.values())
    ledger.apply(recredited.entries)
    assert ledger.total == before


def test_the_refund_hook_is_shown_the_lines_then_the_cycles() -> None:
    plugin = FixedRefund(1)
    step(refund("approved"), WITH_CYCLES, hooks_with(plugin))
    assert plugin.shown == [(*CREDITS, *CYCLES)]


def test_a_full_reversal_takes_the_cycles_after_the_lines() -> None:
    done = step(dispute(), WITH_CYCLES)
    assert [(e.entry_id, e.reversal_of, e.amount) for e in done.entries] == [
        (rev(L1), L1, None),
        (rev(L2), L2, None),
        (rev(S1), S1, None),
        (rev(S2), S2, None),
    ]
    assert done.points == -2550
    assert done.order.reversed == {L1: 300, L2: 250, S1: 1000, S2: 1000}


def test_an_order_of_a_plan_alone_reverses_its_cycles() -> None:
    played = play(PLAN_ONLY, [refund("approved"), refund("canceled")])
    assert played.entry_ids == [[rev(S1), rev(S2)], [recredit(S1), recredit(S2)]]
    assert played.points == 0


@pytest.mark.parametrize("points", [0, -5])
def test_a_refund_hook_taking_nothing_leaves_the_order_credited_and_records_the_status(points: int) -> None:
    hooks = hooks_with(FixedRefund(points))
    played = play(ORDER, [refund("approved"), refund("completed"), refund("failed")], hooks)
    assert played.results == ["status_updated", "status_updated", "status_updated"]
    assert played.entries == []
    assert played.order == replace(ORDER, refunds={"r1": "failed"}, refund_amounts={"r1": 0})
    assert played.order.status == "credited"
    # Nothing was reversed, so the next reversal is still the first.
    after = step(dispute(), played.order, hooks)
    assert [e.entry_id for e in after.entries] == [rev(L1), rev(L2)]


# ---- parked events: applied in status order once the order is credited ----


def parked_cases() -> list[tuple[str, list[ev.PaymentEvent], list[list[str]], OrderRecord]]:
    return [
        (
            "one-refund",
            [
                refund(s, at=i)
                for i, s in enumerate(("created", "processing", "approved", "completed", "failed"))
            ],
            [[rev(L1), rev(L2)], [recredit(L1), recredit(L2)]],
            replace(
                ORDER,
                generation=1,
                entry_reversals=ONCE,
                reversed={L1: 300, L2: 250},
                refunds={"r1": "failed"},
                refund_amounts={"r1": 0},
            ),
        ),
        (
            "dispute-won",
            [dispute(at=0), closed(outcome="won", at=1)],
            [[rev(L1), rev(L2)], [recredit(L1), recredit(L2)]],
            replace(
                ORDER,
                generation=1,
                entry_reversals=ONCE,
                reversed={L1: 300, L2: 250},
                chargebacks={"d1": Dispute("won", True)},
            ),
        ),
        (
            "dispute-lost",
            [dispute(at=0), closed(outcome="lost", at=1)],
            [[rev(L1), rev(L2)]],
            replace(
                ORDER,
                generation=1,
                entry_reversals=ONCE,
                reversed={L1: 300, L2: 250},
                reversed_by="chargeback:d1",
                chargebacks={"d1": Dispute("lost", True)},
            ),
        ),
        (
            "refund-then-dispute",
            [refund("approved", at=0), refund("failed", at=1), dispute(at=2), closed(outcome="won", at=3)],
            [
                [rev(L1), rev(L2)],
                [recredit(L1), recredit(L2)],
                [rev(L1, 2), rev(L2, 2)],
                [recredit(L1, 2), recredit(L2, 2)],
            ],
            replace(
                ORDER,
                generation=2,
                entry_reversals=TWICE,
                reversed={L1: 300, L2: 250},
                refunds={"r1": "failed"},
                refund_amounts={"r1": 0},
                chargebacks={"d1": Dispute("won", True)},
            ),
        ),
    ]


@pytest.mark.parametrize(
    ("events", "moves", "final"),
    [case[1:] for case in parked_cases()],
    ids=[case[0] for case in parked_cases()],
)
def test_parked_events_apply_in_status_order_whatever_their_arrival(
    events: list[ev.PaymentEvent], moves: list[list[str]], final: OrderRecord
) -> None:
    expected = [entry for group in moves for entry in group]
    seen = 0
    for arrival in itertools.permutations(events):
        order, entries, points = apply_in_order(arrival, ORDER, HOOKS, CATALOG)
        assert [e.entry_id for e in entries] == expected
        assert order == final
        assert points == (0 if not order.is_reversed else -550)
        seen += 1
    assert seen == len(list(itertools.permutations(events)))


def test_parked_partial_refund_is_applied_through_the_hook() -> None:
    order, entries, points = apply_in_order([refund("approved", amount=200)], ORDER, BY_AMOUNT, CATALOG)
    assert [(e.entry_id, e.amount) for e in entries] == [(rev(L1), 200)]
    assert points == -200
    assert order.reversed == {L1: 200}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("canceled", "failed"),
        ("failed", "canceled"),
    ],
)
def test_parked_refunds_of_one_status_apply_in_the_order_payNow_sent_them(first: str, second: str) -> None:
    # canceled and failed rank alike: the earlier one re-credits, the later one is stale.
    events = [refund(second, at=2), refund("approved", at=0), refund(first, at=1)]
    order, entries, _ = apply_in_order(events, ORDER, HOOKS, CATALOG)
    assert [e.entry_id for e in entries] == [rev(L1), rev(L2), recredit(L1), recredit(L2)]
    assert order.refunds == {"r1": first}
    assert order == play(ORDER, sorted(events, key=lambda e: e.sent_at_ms)).order


def test_parked_events_other_than_refunds_and_disputes_are_skipped() -> None:
    other = ev.PaymentEvent(event_id="e-x", event_type=ev.ORDER_COMPLETED)
    assert apply_in_order([other], ORDER, HOOKS, CATALOG) == (ORDER, [], 0)
    assert apply_in_order([], ORDER, HOOKS, CATALOG) == (ORDER, [], 0)


def test_parked_refunds_of_two_ids_end_as_if_the_order_had_come_first() -> None:
    # r1 approved, r1 failed, r2 approved (sent in that order): one refund at a time, in the order each
    # first arrived, so r2 reverses after r1's re-credit (generation 2), as it does live.
    events = [refund("approved", "r1", at=0), refund("failed", "r1", at=1), refund("approved", "r2", at=2)]
    live = play(ORDER, events)
    assert live.order.reversed_by == "refund:r2"
    assert live.entry_ids == [[rev(L1), rev(L2)], [recredit(L1), recredit(L2)], [rev(L1, 2), rev(L2, 2)]]
    for arrival in itertools.permutations(events):
        order, entries, points = apply_in_order(arrival, ORDER, HOOKS, CATALOG)
        assert (order, [e.entry_id for e in entries], points) == (
            live.order,
            [e.entry_id for e in live.entries],
            live.points,
        )


@pytest.mark.parametrize(
    ("events", "holder", "moves"),
    [
        (
            # The dispute first arrived after the refund: the refund's whole story, then the dispute.
            [refund("approved", at=0), dispute(at=5), refund("failed", at=10)],
            "chargeback:d1",
            [rev(L1), rev(L2), recredit(L1), recredit(L2), rev(L1, 2), rev(L2, 2)],
        ),
        (
            # The dispute first: it holds the order, the refund is only recorded.
            [dispute(at=0), refund("approved", at=5), refund("failed", at=10)],
            "chargeback:d1",
            [rev(L1), rev(L2)],
        ),
        (
            # A refund approved while another held the order, re-credited: it takes over at once, as live.
            [refund("approved", "r1", at=0), refund("approved", "r2", at=1), refund("failed", "r1", at=2)],
            "refund:r2",
            [rev(L1), rev(L2), recredit(L1), recredit(L2), rev(L1, 2), rev(L2, 2)],
        ),
    ],
    ids=["refund-first", "dispute-first", "two-refunds"],
)
def test_parked_refunds_and_disputes_apply_one_at_a_time_in_the_order_each_first_arrived(
    events: list[ev.PaymentEvent], holder: str, moves: list[str]
) -> None:
    for arrival in itertools.permutations(events):
        order, entries, points = apply_in_order(arrival, ORDER, HOOKS, CATALOG)
        assert [e.entry_id for e in entries] == moves
        assert (order.reversed_by, points) == (holder, -550)
    # The same final order as when each arrived after the order, in the order PayNow sent them.
    live = play(ORDER, events)
    assert (live.order.reversed_by, live.points) == (holder, -550)
    assert apply_in_order(events, ORDER, HOOKS, CATALOG)[0] == live.order


def test_parked_dispute_opened_before_it_closed_whatever_their_ids() -> None:
    # A dispute's opening applies before its close, even when the close was sent first.
    events = [closed("d1", "won", at=0), dispute("d1", at=1)]
    order, entries, points = apply_in_order(events, ORDER, HOOKS, CATALOG)
    assert [e.entry_id for e in entries] == [rev(L1), rev(L2), recredit(L1), recredit(L2)]
    assert (order.chargebacks, order.reversed_by, points) == ({"d1": Dispute("won", True)}, "", 0)


# ---- the reversal chain on the ledger: each entry counts its own reversals ----


def test_a_full_reversal_after_a_recredited_partial_one_is_accepted_by_the_ledger() -> None:
    ledger = Ledger(ORDER)
    played = play(ORDER, [refund("approved", amount=200), refund("failed")], BY_AMOUNT)
    assert played.entry_ids == [[rev(L1)], [recredit(L1)]]
    ledger.apply(played.entries)
    assert ledger.total == 550
    assert played.order.entry_reversals == {L1: 1}
    done = step(dispute(), played.order, BY_AMOUNT)
    # L1's second reversal, L2's first.
    assert [(e.entry_id, e.reversal_of, e.generation) for e in done.entries] == [
        (rev(L1, 2), L1, 2),
        (rev(L2), L2, 1),
    ]
    assert (done.order.generation, done.order.entry_reversals) == (2, {L1: 2, L2: 1})
    ledger.apply(done.entries)
    assert ledger.total == 0
    won = step(closed(outcome="won"), done.order, BY_AMOUNT)
    assert [(e.entry_id, e.generation) for e in won.entries] == [(recredit(L1, 2), 2), (recredit(L2), 1)]
    ledger.apply(won.entries)
    assert ledger.total == 550


def test_a_cycle_credited_after_a_recredit_is_reversed_by_the_next_dispute() -> None:
    first = replace(PLAN_ONLY, cycles=CYCLES[:1])
    ledger = Ledger(first)
    played = play(first, [dispute("d1"), closed("d1", "won")])
    ledger.apply(played.entries)
    renewed = replace(played.order, cycles=CYCLES)  # cycle 2 credited since: read with the order
    ledger.apply(
        [EntryRequest(S2, "u1", "credit", 1000, "paynow", kind="promo", expires_at=NOW + timedelta(days=365))]
    )
    assert ledger.total == 2000
    done = step(dispute("d2"), renewed)
    assert [(e.entry_id, e.generation) for e in done.entries] == [(rev(S1, 2), 2), (rev(S2), 1)]
    assert done.order.entry_reversals == {S1: 2, S2: 1}
    ledger.apply(done.entries)
    assert ledger.total == 0


def test_per_entry_generations_through_partial_refunds_and_disputes_on_the_ledger() -> None:
    # Each step takes a different part of the order; every entry id follows its own entry's chain.
    hooks = BY_AMOUNT
    ledger = Ledger(WITH_CYCLES)
    order = WITH_CYCLES
    expected = [
        (refund("approved", "r1", amount=100), [rev(L1)], 2450),
        (refund("failed", "r1"), [recredit(L1)], 2550),
        (refund("approved", "r2", amount=400), [rev(L1, 2), rev(L2)], 2150),
        (refund("canceled", "r2"), [recredit(L1, 2), recredit(L2)], 2550),
        (refund("approved", "r3", amount=600), [rev(L1, 3), rev(L2, 2), rev(S1)], 1950),
        (refund("failed", "r3"), [recredit(L1, 3), recredit(L2, 2), recredit(S1)], 2550),
        (dispute("d1"), [rev(L1, 4), rev(L2, 3), rev(S1, 2), rev(S2)], 0),
        (closed("d1", "won"), [recredit(L1, 4), recredit(L2, 3), recredit(S1, 2), recredit(S2)], 2550),
    ]
    for event, ids, total in expected:
        done = step(event, order, hooks)
        assert [e.entry_id for e in done.entries] == ids
        ledger.apply(done.entries)  # rev{n}:X only after recredit{n-1}:X, for each X
        assert ledger.total == total
        order = done.order
    assert order.entry_reversals == {L1: 4, L2: 3, S1: 2, S2: 1}
    assert order.generation == 4
    assert order.status == "recredited"


# ---- hand-over: a re-credit lets a refund still approved or a dispute still open take the order ----


def test_a_refund_approved_while_another_held_takes_over_when_that_one_fails() -> None:
    ledger = Ledger(ORDER)
    played = play(ORDER, [refund("approved", "r1"), refund("approved", "r2", at=1), refund("failed", "r1")])
    assert played.results == ["reversed", "status_updated", "recredited"]
    done = played.steps[2]
    assert [(e.entry_id, e.action, e.amount, e.generation) for e in done.entries] == [
        (recredit(L1), "credit", None, 1),
        (recredit(L2), "credit", None, 1),
        (rev(L1, 2), "reversal", None, 2),
        (rev(L2, 2), "reversal", None, 2),
    ]
    assert [e.metadata for e in done.entries] == [
        {"eventId": "e-r1-failed-0", "orderId": "o1", "by": "refund:r1", "recreditOf": L1},
        {"eventId": "e-r1-failed-0", "orderId": "o1", "by": "refund:r1", "recreditOf": L2},
        {"eventId": "e-r1-failed-0", "orderId": "o1", "by": "refund:r2", "reversalOf": L1},
        {"eventId": "e-r1-failed-0", "orderId": "o1", "by": "refund:r2", "reversalOf": L2},
    ]
    assert done.points == 0  # 550 given back, 550 taken again
    assert done.order == replace(
        ORDER,
        generation=2,
        entry_reversals=TWICE,
        reversed={L1: 300, L2: 250},
        reversed_by="refund:r2",
        refunds={"r1": "failed", "r2": "approved"},
        refund_amounts={"r1": 0, "r2": 0},
    )
    assert done.order.status == "reversed"
    for s in played.steps:
        ledger.apply(s.entries)
    assert ledger.total == 0
    # r2 fails in turn: its own reversal comes back, and nothing else is pending.
    after = step(refund("failed", "r2", at=2), done.order)
    assert (after.result, [e.entry_id for e in after.entries]) == (
        "recredited",
        [recredit(L1, 2), recredit(L2, 2)],
    )
    assert [e.metadata["by"] for e in after.entries] == ["refund:r2"] * 2
    assert (after.order.reversed_by, after.order.status, after.points) == ("", "recredited", 550)
    ledger.apply(after.entries)
    assert ledger.total == 550


def test_a_refund_taking_over_takes_what_the_hook_says_for_its_recorded_amount() -> None:
    hooks = BY_AMOUNT
    ledger = Ledger(ORDER)
    played = play(
        ORDER,
        [refund("approved", "r1"), refund("approved", "r2", amount=200, at=1), refund("failed", "r1")],
        hooks,
    )
    assert played.results == ["reversed", "status_updated", "recredited"]
    done = played.steps[2]
    assert [(e.entry_id, e.amount, e.metadata["by"]) for e in done.entries] == [
        (recredit(L1), None, "refund:r1"),
        (recredit(L2), None, "refund:r1"),
        (rev(L1, 2), 200, "refund:r2"),  # r2 refunded 200: 200 of L1 only
    ]
    assert done.points == 550 - 200
    assert done.order.reversed == {L1: 200}
    assert done.order.reversed_by == "refund:r2"
    assert done.order.refund_amounts == {"r1": 0, "r2": 200}
    assert done.order.entry_reversals == {L1: 2, L2: 1}
    for s in played.steps:
        ledger.apply(s.entries)
    assert ledger.total == 350
    # Its failure gives back what it took; a dispute then reverses L1 a third time and L2 a second.
    played = play(done.order, [refund("failed", "r2", at=2), dispute()], hooks)
    assert played.entry_ids == [[recredit(L1, 2)], [rev(L1, 3), rev(L2, 2)]]
    for s in played.steps:
        ledger.apply(s.entries)
    assert ledger.total == 0


def test_a_refund_taking_over_asks_the_hook_with_its_recorded_refund() -> None:
    asked: list[ev.Refund] = []

    class Records:
        @hookimpl
        def paynow_refund_points(self, refund: ev.Refund) -> int:
            asked.append(refund)
            return 50

    hooks = hooks_with(Records())
    held = play(ORDER, [dispute(), refund("completed", "r2", amount=120)], hooks).order
    assert asked == []  # recorded only while the dispute holds the order
    done = step(closed(outcome="won"), held, hooks)
    assert asked == [ev.Refund(refund_id="r2", order_id="o1", status="completed", amount=120)]
    assert [(e.entry_id, e.amount) for e in done.entries] == [
        (recredit(L1), None),
        (recredit(L2), None),
        (rev(L1, 2), 50),
    ]
    assert (done.result, done.points, done.order.reversed_by) == ("recredited", 500, "refund:r2")


def test_an_open_dispute_takes_over_when_the_refund_holding_the_order_is_canceled() -> None:
    ledger = Ledger(ORDER)
    played = play(ORDER, [refund("approved"), dispute(), refund("canceled"), closed(outcome="won")])
    assert played.results == ["reversed", "status_updated", "recredited", "recredited"]
    assert played.entry_ids == [
        [rev(L1), rev(L2)],
        [],
        [recredit(L1), recredit(L2), rev(L1, 2), rev(L2, 2)],
        [recredit(L1, 2), recredit(L2, 2)],
    ]
    assert [e.metadata["by"] for e in played.steps[2].entries] == ["refund:r1"] * 2 + ["chargeback:d1"] * 2
    assert played.steps[2].order.reversed_by == "chargeback:d1"
    assert played.steps[2].order.generation == 2
    assert [s.points for s in played.steps] == [-550, 0, 0, 550]
    assert played.order == replace(
        ORDER,
        generation=2,
        entry_reversals=TWICE,
        reversed={L1: 300, L2: 250},
        refunds={"r1": "canceled"},
        refund_amounts={"r1": 0},
        chargebacks={"d1": Dispute("won", True)},
    )
    for s in played.steps:
        ledger.apply(s.entries)
        assert ledger.total == (0 if s.order.is_reversed else 550)


def test_an_open_dispute_takes_over_when_the_dispute_holding_the_order_is_won() -> None:
    played = play(ORDER, [dispute("d1"), dispute("d2"), closed("d1", "won")])
    assert played.results == ["reversed", "status_updated", "recredited"]
    assert played.entry_ids[2] == [recredit(L1), recredit(L2), rev(L1, 2), rev(L2, 2)]
    assert played.order.reversed_by == "chargeback:d2"
    # d2 lost: it keeps the order.
    lost = step(closed("d2", "lost"), played.order)
    assert (lost.result, lost.entries, lost.order.reversed_by) == ("status_updated", (), "chargeback:d2")


def test_a_dispute_opened_while_a_refund_held_is_reversed_by_then_and_its_loss_keeps_it() -> None:
    # (Was: its "closed lost" only recorded, the order left credited.) The dispute takes the order
    # over when the refund fails, so by its close it holds it, and losing keeps it reversed.
    played = play(ORDER, [refund("approved"), dispute(), refund("failed"), closed(outcome="lost")])
    assert played.results == ["reversed", "status_updated", "recredited", "status_updated"]
    assert played.entry_ids[2] == [recredit(L1), recredit(L2), rev(L1, 2), rev(L2, 2)]
    assert played.entry_ids[3] == []
    assert played.order.reversed_by == "chargeback:d1"
    assert played.order.chargebacks == {"d1": Dispute("lost", True)}
    assert played.points == -550


@pytest.mark.parametrize(
    "dispute_events",
    [[dispute(), closed(outcome="lost")], [closed(outcome="lost")]],
    ids=["opened-then-lost", "lost-its-opening-missed"],
)
def test_a_dispute_lost_while_a_refund_held_takes_over_when_the_refund_fails(
    dispute_events: list[ev.PaymentEvent],
) -> None:
    # docs/refunds-and-disputes.md row 26: the loss is recorded only, then the dispute takes the order.
    ledger = Ledger(ORDER)
    held = step(refund("approved"), ORDER)
    recorded = play(held.order, dispute_events)
    assert set(recorded.results) == {"status_updated"}
    assert recorded.order.reversed_by == "refund:r1"
    done = step(refund("failed"), recorded.order)
    assert done.result == "recredited"
    assert [(e.entry_id, e.metadata["by"]) for e in done.entries] == [
        (recredit(L1), "refund:r1"),
        (recredit(L2), "refund:r1"),
        (rev(L1, 2), "chargeback:d1"),
        (rev(L2, 2), "chargeback:d1"),
    ]
    assert done.points == 0
    assert (done.order.reversed_by, done.order.generation, done.order.status) == (
        "chargeback:d1",
        2,
        "reversed",
    )
    assert done.order.chargebacks == {"d1": Dispute("lost", closed=True)}
    for s in (held, done):
        ledger.apply(s.entries)
    assert ledger.total == 0
    # Lost is final: nothing gives that reversal back.
    for later in (closed(outcome="won", at=9), dispute(at=9), refund("canceled", at=9)):
        assert step(later, done.order).entries == ()


def test_a_dispute_that_took_over_and_is_lost_keeps_the_order_reversed() -> None:
    # Opened while a refund held the order; that refund failed, so the dispute took the order over.
    before = play(ORDER, [refund("approved"), dispute(), refund("failed")])
    assert before.order.reversed_by == "chargeback:d1"
    done = step(closed(outcome="lost"), before.order)
    assert (done.result, done.entries) == ("status_updated", ())
    assert (done.order.reversed_by, done.order.generation) == ("chargeback:d1", 2)


def test_an_open_dispute_takes_over_when_the_pending_refund_takes_nothing() -> None:
    class NothingForR2:
        @hookimpl
        def paynow_refund_points(self, refund: ev.Refund) -> int | None:
            return 0 if refund.refund_id == "r2" else None

    hooks = hooks_with(NothingForR2())
    played = play(ORDER, [refund("approved"), refund("approved", "r2"), dispute(), refund("failed")], hooks)
    assert played.entry_ids[3] == [recredit(L1), recredit(L2), rev(L1, 2), rev(L2, 2)]
    assert played.order.reversed_by == "chargeback:d1"
    # The same events, the dispute opened after r1's failure: d1 holds the order too.
    other = play(ORDER, [refund("approved"), refund("approved", "r2"), refund("failed"), dispute()], hooks)
    assert other.order.reversed_by == played.order.reversed_by


@pytest.mark.parametrize(
    "pending",
    [
        [refund("failed", "r2")],
        [refund("created", "r2"), refund("processing", "r3")],
        [refund("approved", "r2"), refund("failed", "r2")],
        [dispute("d1"), closed("d1", "won")],
        [closed("d1", "won")],
    ],
    ids=[
        "refund-failed",
        "refunds-not-yet-approved",
        "refund-approved-then-failed",
        "dispute-won",
        "closed-won",
    ],
)
def test_with_nothing_pending_a_recredit_leaves_the_order_credited(pending: list[ev.PaymentEvent]) -> None:
    held = step(refund("approved"), ORDER).order
    before = play(held, pending)
    assert set(before.results) == {"status_updated"}
    done = step(refund("failed"), before.order)
    assert done.result == "recredited"
    assert [e.entry_id for e in done.entries] == [recredit(L1), recredit(L2)]
    assert done.points == 550
    assert (done.order.reversed_by, done.order.status, done.order.generation) == ("", "recredited", 1)
    assert done.order.entry_reversals == ONCE
    assert done.order.refunds["r1"] == "failed"


def test_a_pending_refund_the_hook_takes_nothing_of_leaves_the_order_credited() -> None:
    class NothingForR2:
        @hookimpl
        def paynow_refund_points(self, refund: ev.Refund) -> int | None:
            return 0 if refund.refund_id == "r2" else None

    hooks = hooks_with(NothingForR2())
    played = play(ORDER, [refund("approved"), refund("approved", "r2"), refund("failed")], hooks)
    done = played.steps[2]
    assert (done.result, [e.entry_id for e in done.entries]) == ("recredited", [recredit(L1), recredit(L2)])
    assert done.points == 550
    assert (done.order.reversed_by, done.order.generation, done.order.status) == ("", 1, "recredited")
    assert done.order.refunds == {"r1": "failed", "r2": "approved"}


def test_a_refund_and_a_dispute_both_pending_take_the_order_one_after_the_other() -> None:
    held = play(ORDER, [refund("approved", "r1"), refund("approved", "r2"), dispute("d1")]).order
    first = step(refund("failed", "r1"), held)
    taker = first.order.reversed_by
    assert taker in ("refund:r2", "chargeback:d1")
    assert [e.entry_id for e in first.entries] == [recredit(L1), recredit(L2), rev(L1, 2), rev(L2, 2)]
    undo = refund("failed", "r2") if taker == "refund:r2" else closed("d1", "won")
    second = step(undo, first.order)
    assert second.order.reversed_by == ({"refund:r2", "chargeback:d1"} - {taker}).pop()
    assert [e.entry_id for e in second.entries] == [
        recredit(L1, 2),
        recredit(L2, 2),
        rev(L1, 3),
        rev(L2, 3),
    ]
    assert (second.result, second.points, second.order.generation) == ("recredited", 0, 3)


# ---- the stored fields ----


def test_order_fields_of_a_credited_order() -> None:
    assert order_fields(ORDER) == {
        "generation": 0,
        "reversals": {},
        "reversed": [],
        "reversedBy": "",
        "status": "credited",
        "refunds": {},
        "refundAmounts": {},
        "chargebacks": {},
    }


def test_order_fields_of_a_reversed_then_recredited_order() -> None:
    reversed_ = play(ORDER, [refund("approved", amount=400), dispute(status="Open")], BY_AMOUNT).order
    assert order_fields(reversed_) == {
        "generation": 1,
        "reversals": {L1: 1, L2: 1},
        "reversed": [{"entryId": L1, "points": 300}, {"entryId": L2, "points": 100}],
        "reversedBy": "refund:r1",
        "status": "reversed",
        "refunds": {"r1": "approved"},
        "refundAmounts": {"r1": 400},
        "chargebacks": {"d1": {"status": "open", "closed": False}},
    }
    recredited = play(reversed_, [closed(outcome="won"), refund("canceled", amount=400)]).order
    assert order_fields(recredited) == {
        "generation": 1,
        "reversals": {L1: 1, L2: 1},
        "reversed": [{"entryId": L1, "points": 300}, {"entryId": L2, "points": 100}],
        "reversedBy": "",
        "status": "recredited",
        "refunds": {"r1": "canceled"},
        "refundAmounts": {"r1": 400},
        "chargebacks": {"d1": {"status": "won", "closed": True}},
    }


def test_order_fields_after_a_hand_over() -> None:
    reversed_ = play(ORDER, [refund("approved", amount=400), dispute(status="Open")], BY_AMOUNT).order
    handed = play(reversed_, [refund("canceled", amount=400), closed(outcome="lost")], BY_AMOUNT).order
    assert order_fields(handed) == {
        "generation": 2,
        "reversals": {L1: 2, L2: 2},
        "reversed": [{"entryId": L1, "points": 300}, {"entryId": L2, "points": 250}],
        "reversedBy": "chargeback:d1",
        "status": "reversed",
        "refunds": {"r1": "canceled"},
        "refundAmounts": {"r1": 400},
        "chargebacks": {"d1": {"status": "lost", "closed": True}},
    }


# ---- properties: any sequence of refund and dispute events on one credited order ----

# Weighted towards what reverses; `next_event` also undoes the current reversal as often as
# anything else, so that later generations come up often.
refund_events = st.builds(
    refund,
    status=st.sampled_from(
        [
            *("approved", "approved", "completed", "failed", "failed", "canceled", "cancelled"),
            *("created", "processing", "APPROVED", "something-new"),
        ]
    ),
    refund_id=st.sampled_from(["r1", "r2", "r3", "r4"]),
    amount=st.sampled_from([0, 0, 1, 200, 300, 549, 550, 1200, 10_000]),
)
dispute_events = st.builds(
    dispute,
    dispute_id=st.sampled_from(["d1", "d2", "d3", "d4"]),
    status=st.sampled_from(["open", "under_review"]),
)
closed_events = st.builds(
    closed,
    dispute_id=st.sampled_from(["d1", "d2", "d3", "d4"]),
    outcome=st.sampled_from(["won", "won", "lost"]),
)
ANY_EVENT = st.one_of(refund_events, dispute_events, closed_events)


def next_event(order: OrderRecord) -> st.SearchStrategy[ev.PaymentEvent]:
    """Any refund or dispute event, or one that undoes the reversal holding the order."""
    kind, _, holder = order.reversed_by.partition(":")
    if kind == "refund":
        statuses = st.sampled_from(["failed", "canceled", "cancelled"])
        return st.one_of(ANY_EVENT, st.builds(refund, status=statuses, refund_id=st.just(holder)))
    if kind == "chargeback":
        return st.one_of(ANY_EVENT, st.builds(closed, dispute_id=st.just(holder), outcome=st.just("won")))
    return ANY_EVENT


def events_of(data: st.DataObject, start: OrderRecord, hooks: pluggy.HookRelay) -> Iterator[ev.PaymentEvent]:
    """Up to 20 events, each drawn knowing the order as the steps before it left it."""
    order = start
    for _ in range(data.draw(st.integers(0, 20), label="length")):
        event = data.draw(next_event(order))
        yield event
        order = step(event, order, hooks).order


ORDERS = st.sampled_from([ORDER, WITH_CYCLES, PLAN_ONLY])
TAKES_NOTHING = hooks_with(FixedRefund(0))
REFUND_HOOKS = st.sampled_from([HOOKS, BY_AMOUNT, TAKES_NOTHING])


def _rank(status: str) -> int:
    return {"created": 0, "processing": 1, "approved": 2, "completed": 3}.get(
        status, 4 if status in ("canceled", "cancelled", "failed") else -1
    )


def _pending(order: OrderRecord) -> set[str]:
    """Who could take the order over: refunds still approved, disputes still open or lost."""
    refunds = {f"refund:{r}" for r, status in order.refunds.items() if status in ("approved", "completed")}
    disputes = {
        f"chargeback:{d}"
        for d, seen in order.chargebacks.items()
        if not (seen.closed and seen.status == "won")
    }
    return refunds | disputes


@settings(max_examples=400, deadline=None)
@given(start=ORDERS, hooks=REFUND_HOOKS, data=st.data())
def test_net_points_are_zero_or_the_current_reversal_and_generations_count_per_entry(
    start: OrderRecord, hooks: pluggy.HookRelay, data: st.DataObject
) -> None:
    originals = [c.entry_id for c in (*start.credits, *start.cycles)]
    total = sum(c.points for c in (*start.credits, *start.cycles))
    order, net, reversals = start, 0, 0
    counts: dict[str, int] = {}  # the model: per entry, how many times it was reversed
    for event in events_of(data, start, hooks):
        done = step(event, order, hooks)
        net += done.points
        assert done.result in ("reversed", "recredited", "status_updated", "no_change")
        assert bool(done.entries) == (done.result in ("reversed", "recredited"))
        if done.result == "no_change":
            assert done.order is order
        taking: Sequence[EntryRequest] = ()  # the reversal this step applied, if any
        if done.result == "reversed":
            assert not order.is_reversed
            taking = done.entries
            assert done.points == -sum(done.order.reversed.values())
        if done.result == "recredited":
            assert order.is_reversed
            given_back, taking = done.entries[: len(order.reversed)], done.entries[len(order.reversed) :]
            # Exactly what the holder's reversal took, each entry under its own count.
            assert [e.reversal_of for e in given_back] == list(order.reversed)
            assert [e.entry_id for e in given_back] == [recredit(x, counts[x]) for x in order.reversed]
            assert [e.generation for e in given_back] == [counts[x] for x in order.reversed]
            assert {(e.action, e.amount, e.metadata["by"]) for e in given_back} == {
                ("credit", None, order.reversed_by)
            }
            if taking:  # handed over: someone still pending, who never held the order, takes it at once
                assert done.order.reversed_by != order.reversed_by
                assert done.order.reversed_by in _pending(done.order)
            else:
                assert not done.order.is_reversed
                if hooks is not TAKES_NOTHING:  # with it, see the xfail on a pending refund taking nothing
                    assert _pending(done.order) == set()
            assert done.points == sum(order.reversed.values()) - sum(
                done.order.reversed.values() if taking else ()
            )
        if taking:
            assert done.order.is_reversed
            reversals += 1
            assert [e.reversal_of for e in taking] == originals[: len(taking)]  # lines first, then cycles
            assert list(done.order.reversed) == [e.reversal_of for e in taking]
            for entry in taking:
                assert entry.reversal_of is not None
                counts[entry.reversal_of] = counts.get(entry.reversal_of, 0) + 1
                assert entry.entry_id == rev(entry.reversal_of, counts[entry.reversal_of])
                assert entry.generation == counts[entry.reversal_of]
                assert entry.action == "reversal"
                assert entry.metadata["by"] == done.order.reversed_by
            assert 0 < sum(done.order.reversed.values()) <= total
        if done.result == "status_updated":
            assert (done.order.reversed_by, done.order.reversed) == (order.reversed_by, order.reversed)
        assert done.order.entry_reversals == counts
        assert done.order.generation == reversals
        # Net points: nothing while credited, minus what the current reversal took while reversed.
        assert net == (-sum(done.order.reversed.values()) if done.order.is_reversed else 0)
        assert done.order.status == (
            "reversed" if done.order.is_reversed else ("recredited" if done.order.generation else "credited")
        )
        # Statuses only go forward; a closed dispute stays closed.
        for refund_id, status in order.refunds.items():
            assert _rank(done.order.refunds[refund_id]) >= _rank(status)
        for dispute_id, seen in order.chargebacks.items():
            assert not seen.closed or done.order.chargebacks[dispute_id] == seen
        order = done.order


@settings(max_examples=150, deadline=None)
@given(start=ORDERS, data=st.data())
def test_full_reversals_and_recredits_are_accepted_by_the_ledger_entry_by_entry(
    start: OrderRecord, data: st.DataObject
) -> None:
    ledger = Ledger(start)
    total = ledger.total
    order, net = start, 0
    last: dict[str, int] = {}  # per original: the generation of its last re-credit
    for event in events_of(data, start, HOOKS):
        done = step(event, order)  # no refund plugin: every reversal takes everything
        for entry in done.entries:
            assert entry.reversal_of is not None
            if entry.action == "reversal":
                assert entry.generation == last.get(entry.reversal_of, 0) + 1
            else:
                last[entry.reversal_of] = entry.generation
        ledger.apply(done.entries)
        net += done.points
        assert ledger.total == total + net
        assert ledger.total == (0 if done.order.is_reversed else total)
        order = done.order
