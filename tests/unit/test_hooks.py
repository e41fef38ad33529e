"""Each plugin hook, through the real plugin manager (entry points + extra plugins) and `decide`.

No database: `decide` is pure, so each test hands it an `EventState` built by hand.
Events carry a fixed PayNow timestamp: promo lots expire a number of days after it.
Every test name carries the hook it covers (tests/unit/test_plugin_contract.py checks).
"""

from __future__ import annotations

import re
import types
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pluggy
import pytest

from paynow_service import hookimpl
from paynow_service.domain import events as ev
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.decisions import Decision, EventState
from paynow_service.domain.errors import InvalidEventError, UnknownProductError
from paynow_service.domain.ledger import Kind
from paynow_service.domain.orders import OrderRecord
from paynow_service.hookspecs import PROJECT, Credit, CreditedEntry, PayNowHookSpecs, PlannedCredit
from paynow_service.plugins import get_plugin_manager
from paynow_service.service.decide import decide

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"

PACK, PROMO_PACK, PLAN = "411486491630370816", "411486491630370818", "411486491630370817"
CATALOG = Catalog.from_toml(
    f"""
[products."{PACK}"]
points = 500

[products."{PROMO_PACK}"]
points = 50
kind = "promo"

[subscriptions."{PLAN}"]
points_per_cycle = 1000
"""
)
SENT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # PayNow's timestamp of every test delivery
SENT_MS = int(SENT.timestamp() * 1000)


def line(line_id: str = "l1", product_id: str = PACK, quantity: int = 1, **kw: str) -> ev.OrderLine:
    return ev.OrderLine(line_id=line_id, product_id=product_id, quantity=quantity, price=999, **kw)


def order_event(*lines: ev.OrderLine, order_id: str = "o1") -> ev.PaymentEvent:
    return ev.PaymentEvent(
        event_id="e-order",
        event_type=ev.ORDER_COMPLETED,
        uid="u1",
        customer_id="c1",
        sent_at_ms=SENT_MS,
        order=ev.Order(order_id=order_id, lines=lines or (line(),)),
    )


def sub_event(
    product_id: str = PLAN, cycle: int = 1, kind: str = ev.SUBSCRIPTION_ACTIVATED
) -> ev.PaymentEvent:
    return ev.PaymentEvent(
        event_id="e-sub",
        event_type=kind,
        uid="u1",
        customer_id="c1",
        sent_at_ms=SENT_MS,
        subscription=ev.Subscription(
            subscription_id="s1", product_id=product_id, billing_cycle_sequence=cycle
        ),
    )


def refund_event(status: str = "approved") -> ev.PaymentEvent:
    return ev.PaymentEvent(
        event_id="e-refund",
        event_type=ev.REFUND,
        sent_at_ms=SENT_MS,
        refund=ev.Refund(refund_id="r1", order_id="o1", status=status, amount=5000, store_refund_amount=2500),
    )


CREDITED = (
    CreditedEntry(entry_id="paynow:order:o1:line:l1", points=500, product_id=PACK),
    CreditedEntry(entry_id="paynow:order:o1:line:l2", points=300, product_id=PACK),
)
CREDITED_ORDER = EventState(order=OrderRecord(uid="u1", credits=CREDITED))


def run(event: ev.PaymentEvent, *plugins: object, state: EventState | None = None) -> Decision:
    manager = get_plugin_manager(extra_plugins=plugins)
    return decide(event, state or EventState(), manager.hook, CATALOG)


def amounts(decision: Decision) -> dict[str, int | None]:
    return {entry.entry_id: entry.amount for entry in decision.entries}


class FixedPoints:
    """An outside plugin (a class instance) that maps one product to a fixed number of points."""

    def __init__(self, product_id: str, points: int, kind: Kind = "paid", days: int | None = None) -> None:
        self.product_id, self.points, self.kind, self.days = product_id, points, kind, days

    @hookimpl
    def paynow_map_order_line(self, line: ev.OrderLine) -> Credit | None:
        if line.product_id != self.product_id:
            return None
        return Credit(points=self.points * line.quantity, kind=self.kind, expires_in_days=self.days)


class Abstains:
    """An outside plugin that implements every firstresult hook and never decides."""

    calls: list[str]

    def __init__(self) -> None:
        self.calls = []

    @hookimpl
    def paynow_map_order_line(self, line: ev.OrderLine) -> Credit | None:
        self.calls.append(f"line:{line.line_id}")
        return None

    @hookimpl
    def paynow_map_subscription(self, subscription: ev.Subscription) -> Credit | None:
        self.calls.append(f"sub:{subscription.subscription_id}")
        return None

    @hookimpl
    def paynow_refund_points(self, refund: ev.Refund) -> int | None:
        self.calls.append(f"refund:{refund.refund_id}")
        return None


class Bonus:
    """An outside plugin that adds one extra credit per event under its own key."""

    def __init__(self, key: str, points: int, kind: Kind = "promo") -> None:
        self.key, self.points, self.kind = key, points, kind
        self.seen: list[tuple[PlannedCredit, ...]] = []

    @hookimpl
    def paynow_adjust_credits(self, credits: Sequence[PlannedCredit]) -> list[PlannedCredit]:
        self.seen.append(tuple(credits))
        return [PlannedCredit(key=self.key, points=self.points, kind=self.kind, product_id="bonus")]


class RefundsPart:
    def __init__(self, points: int) -> None:
        self.points = points
        self.credited: list[tuple[CreditedEntry, ...]] = []

    @hookimpl
    def paynow_refund_points(self, refund: ev.Refund, credited: Sequence[CreditedEntry]) -> int:
        self.credited.append(tuple(credited))
        return self.points


# ---- paynow_map_order_line ----


def test_paynow_map_order_line_builtin_grants_quantity_times_points() -> None:
    decision = run(order_event(line("l1", PACK, quantity=3)))
    assert decision.result == "credited"
    assert amounts(decision) == {"paynow:order:o1:line:l1": 1500}
    assert decision.entries[0].kind == "paid"
    assert decision.points == 1500


def test_paynow_map_order_line_builtin_called_directly_returns_a_credit() -> None:
    hook = get_plugin_manager().hook
    credit = hook.paynow_map_order_line(event=order_event(), line=line(quantity=2), catalog=CATALOG)
    assert credit == Credit(points=1000, kind="paid", expires_in_days=365)


def test_paynow_map_order_line_builtin_keeps_promo_kind() -> None:
    decision = run(order_event(line("l1", PROMO_PACK, quantity=2)))
    assert amounts(decision) == {"paynow:order:o1:line:l1": 100}
    assert decision.entries[0].kind == "promo"
    assert decision.entries[0].expires_at == SENT + timedelta(days=365)


def test_paynow_map_order_line_builtin_passes_the_catalog_expires_in_days() -> None:
    catalog = Catalog.from_toml(
        f'[products."{PROMO_PACK}"]\npoints = 50\nkind = "promo"\nexpires_in_days = 30\n'
        f'[products."{PACK}"]\npoints = 500\nexpires_in_days = 30\n'
    )
    hook = get_plugin_manager().hook
    promo = hook.paynow_map_order_line(event=order_event(), line=line(product_id=PROMO_PACK), catalog=catalog)
    paid = hook.paynow_map_order_line(event=order_event(), line=line(), catalog=catalog)
    assert promo == Credit(points=50, kind="promo", expires_in_days=30)
    assert paid == Credit(points=500, kind="paid", expires_in_days=30)  # carried, unused for paid
    decision = decide(order_event(line("l1", PROMO_PACK), line("l2", PACK)), EventState(), hook, catalog)
    assert [e.expires_at for e in decision.entries] == [SENT + timedelta(days=30), None]


def test_paynow_map_order_line_outside_plugin_sets_the_lot_life() -> None:
    decision = run(order_event(line("l1", "outside-only")), FixedPoints("outside-only", 42, "promo", days=7))
    assert decision.entries[0].expires_at == SENT + timedelta(days=7)
    # No expires_in_days: the app's default of 365 days.
    default = run(order_event(line("l1", "outside-only")), FixedPoints("outside-only", 42, "promo"))
    assert default.entries[0].expires_at == SENT + timedelta(days=365)


def test_paynow_map_order_line_unknown_product_is_unknown_product_error_naming_it() -> None:
    event = order_event(line("l1", PACK), line("l2", "999000111"))
    with pytest.raises(UnknownProductError, match="999000111") as caught:
        run(event)
    assert caught.value.reason == "unknown_product"
    assert "l2" in str(caught.value)


def test_paynow_map_order_line_outside_plugin_wins_over_builtin() -> None:
    decision = run(order_event(line("l1", PACK, quantity=2), line("l2", PROMO_PACK)), FixedPoints(PACK, 7))
    assert amounts(decision) == {"paynow:order:o1:line:l1": 14, "paynow:order:o1:line:l2": 50}


def test_paynow_map_order_line_outside_plugin_maps_a_product_the_catalog_lacks() -> None:
    decision = run(order_event(line("l1", "outside-only")), FixedPoints("outside-only", 42, "promo"))
    assert amounts(decision) == {"paynow:order:o1:line:l1": 42}
    assert decision.entries[0].kind == "promo"


def test_paynow_map_order_line_outside_plugin_returning_none_falls_through_to_builtin() -> None:
    abstains = Abstains()
    decision = run(order_event(line("l1", PACK, quantity=2)), abstains)
    assert amounts(decision) == {"paynow:order:o1:line:l1": 1000}
    assert abstains.calls == ["line:l1"]  # it was asked first, and declined


def test_paynow_map_order_line_builtin_is_trylast_whatever_the_load_order() -> None:
    from paynow_catalog import orders

    # The outside plugin registered *before* the built-in still runs first.
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(PayNowHookSpecs)
    manager.register(FixedPoints(PACK, 7))
    manager.register(orders)
    credit = manager.hook.paynow_map_order_line(event=order_event(), line=line(), catalog=CATALOG)
    assert credit == Credit(points=7)


def test_paynow_map_order_line_zero_points_writes_no_entry() -> None:
    decision = run(order_event(line("l1", PACK)), FixedPoints(PACK, 0))
    assert decision.result == "no_change"
    assert decision.entries == ()


def test_paynow_map_order_line_not_called_for_subscription_or_trial_lines() -> None:
    abstains = Abstains()
    event = order_event(
        line("l1", PACK), line("l2", PLAN, subscription_id="s1"), line("l3", PLAN, trial_id="t1")
    )
    decision = run(event, abstains)
    assert abstains.calls == ["line:l1"]
    assert list(amounts(decision)) == ["paynow:order:o1:line:l1"]


# ---- paynow_map_subscription ----


def test_paynow_map_subscription_builtin_grants_points_per_cycle() -> None:
    decision = run(sub_event(cycle=4, kind=ev.SUBSCRIPTION_RENEWED))
    assert amounts(decision) == {"paynow:sub:s1:cycle:4": 1000}
    assert decision.subscription_update is not None
    assert decision.subscription_update["pointsPerCycle"] == 1000
    # A plan without `kind` grants promo points (the app's default), in a lot of 365 days.
    assert decision.entries[0].kind == "promo"
    assert decision.entries[0].expires_at == SENT + timedelta(days=365)


def test_paynow_map_subscription_builtin_called_directly_returns_a_promo_credit() -> None:
    hook = get_plugin_manager().hook
    credit = hook.paynow_map_subscription(
        event=sub_event(), subscription=sub_event().subscription, catalog=CATALOG
    )
    assert credit == Credit(points=1000, kind="promo", expires_in_days=365)


def test_paynow_map_subscription_builtin_passes_the_catalog_kind_and_expires_in_days() -> None:
    hook = get_plugin_manager().hook
    subscription = sub_event().subscription
    short = Catalog.from_toml(f'[subscriptions."{PLAN}"]\npoints_per_cycle = 1000\nexpires_in_days = 90\n')
    paid = Catalog.from_toml(f'[subscriptions."{PLAN}"]\npoints_per_cycle = 1000\nkind = "paid"\n')
    assert hook.paynow_map_subscription(
        event=sub_event(), subscription=subscription, catalog=short
    ) == Credit(points=1000, kind="promo", expires_in_days=90)
    assert hook.paynow_map_subscription(event=sub_event(), subscription=subscription, catalog=paid) == Credit(
        points=1000, kind="paid", expires_in_days=365
    )
    short_cycle = decide(sub_event(), EventState(), hook, short)
    paid_cycle = decide(sub_event(), EventState(), hook, paid)
    assert short_cycle.entries[0].expires_at == SENT + timedelta(days=90)
    assert (paid_cycle.entries[0].kind, paid_cycle.entries[0].expires_at) == ("paid", None)


def test_paynow_map_subscription_unknown_plan_is_unknown_product_error_naming_it() -> None:
    with pytest.raises(UnknownProductError, match="777000111") as caught:
        run(sub_event(product_id="777000111"))
    assert caught.value.reason == "unknown_product"


def test_paynow_map_subscription_outside_module_plugin_wins_over_builtin() -> None:
    plugin = types.ModuleType("loyalty_plugin")

    @hookimpl
    def paynow_map_subscription(subscription: ev.Subscription) -> Credit | None:
        if subscription.product_id != PLAN:
            return None
        return Credit(points=1000 + (200 if subscription.billing_cycle_sequence > 12 else 0))

    plugin.paynow_map_subscription = paynow_map_subscription  # type: ignore[attr-defined]
    assert amounts(run(sub_event(cycle=13), plugin)) == {"paynow:sub:s1:cycle:13": 1200}
    assert amounts(run(sub_event(cycle=2), plugin)) == {"paynow:sub:s1:cycle:2": 1000}


def test_paynow_map_subscription_outside_plugin_returning_none_falls_through_to_builtin() -> None:
    abstains = Abstains()
    assert amounts(run(sub_event(), abstains)) == {"paynow:sub:s1:cycle:1": 1000}
    assert abstains.calls == ["sub:s1"]


def test_paynow_map_subscription_not_called_for_cancellation() -> None:
    abstains = Abstains()
    decision = run(sub_event(product_id="not-in-catalog", cycle=0, kind=ev.SUBSCRIPTION_CANCELED), abstains)
    assert decision.result == "status_updated"
    assert abstains.calls == []


# ---- paynow_refund_points ----


def test_paynow_refund_points_none_reverses_everything() -> None:
    abstains = Abstains()
    decision = run(refund_event(), abstains, state=CREDITED_ORDER)
    assert abstains.calls == ["refund:r1"]
    assert amounts(decision) == {"rev:paynow:order:o1:line:l1": None, "rev:paynow:order:o1:line:l2": None}
    assert decision.points == -800


def test_paynow_refund_points_partial_amount_reverses_entry_by_entry() -> None:
    plugin = RefundsPart(600)
    decision = run(refund_event(), plugin, state=CREDITED_ORDER)
    # The first entry goes whole (amount None: the original's), the second in part.
    assert amounts(decision) == {"rev:paynow:order:o1:line:l1": None, "rev:paynow:order:o1:line:l2": 100}
    assert [e.reversal_of for e in decision.entries] == [c.entry_id for c in CREDITED]
    assert decision.points == -600
    assert decision.order_update is not None
    assert decision.order_update["reversed"] == [
        {"entryId": "paynow:order:o1:line:l1", "points": 500},
        {"entryId": "paynow:order:o1:line:l2", "points": 100},
    ]
    assert plugin.credited == [CREDITED]


def test_paynow_refund_points_partial_within_first_entry_touches_only_it() -> None:
    decision = run(refund_event(), RefundsPart(120), state=CREDITED_ORDER)
    assert amounts(decision) == {"rev:paynow:order:o1:line:l1": 120}


@pytest.mark.parametrize(("asked", "expected"), [(10_000, -800), (800, -800), (-5, 0), (0, 0)])
def test_paynow_refund_points_result_is_clamped_to_the_order(asked: int, expected: int) -> None:
    plugin = RefundsPart(asked)
    decision = run(refund_event(), plugin, state=CREDITED_ORDER)
    assert plugin.credited == [CREDITED]
    assert decision.points == expected
    assert -sum(e.amount or _credited_points(e.reversal_of) for e in decision.entries) == expected
    assert decision.order_update is not None
    assert decision.order_update["refunds"] == {"r1": "approved"}
    assert decision.order_update["refundAmounts"] == {"r1": 5000}
    if expected:
        assert decision.result == "reversed"
        assert (decision.order_update["status"], decision.order_update["reversedBy"]) == (
            "reversed",
            "refund:r1",
        )
    else:
        # Nothing to take back: the order stays credited, and the refund's status is recorded.
        assert decision.result == "status_updated"
        assert decision.entries == ()
        assert decision.order_update["status"] == "credited"
        assert decision.order_update["reversedBy"] == ""
        assert decision.order_update["reversed"] == []
        assert decision.order_update["generation"] == 0


def _credited_points(entry_id: str | None) -> int:
    return next(c.points for c in CREDITED if c.entry_id == entry_id)


def test_paynow_refund_points_first_answer_decides() -> None:
    # Both answer: pluggy asks the plugin registered last first, and its answer stops the call.
    decision = run(refund_event(), RefundsPart(100), RefundsPart(300), state=CREDITED_ORDER)
    assert decision.points == -300


@pytest.mark.parametrize("holder", ["refund:r1", "chargeback:cb1"])
def test_paynow_refund_points_not_called_once_the_order_was_reversed(holder: str) -> None:
    # Reversed by this refund's approval (its completion follows), or by a dispute: the status is recorded.
    plugin = RefundsPart(100)
    held = OrderRecord(
        uid="u1",
        order_id="o1",
        credits=CREDITED,
        generation=1,
        entry_reversals={CREDITED[0].entry_id: 1},
        reversed={CREDITED[0].entry_id: 500},
        reversed_by=holder,
        refunds={"r1": "approved"} if holder == "refund:r1" else {},
    )
    decision = run(refund_event("completed"), plugin, state=EventState(order=held))
    assert decision.result == "status_updated"
    assert decision.entries == ()
    assert decision.points == 0
    assert plugin.credited == []
    assert decision.order_update is not None
    assert decision.order_update["refunds"] == {"r1": "completed"}
    assert (decision.order_update["status"], decision.order_update["reversedBy"]) == ("reversed", holder)


# ---- paynow_adjust_credits ----


def test_paynow_adjust_credits_contributions_from_two_plugins_are_both_applied_to_an_order() -> None:
    spring, loyalty = Bonus("spring", 25), Bonus("loyalty", 10, kind="paid")
    decision = run(order_event(line("l1", PACK, quantity=2)), spring, loyalty)
    assert amounts(decision) == {
        "paynow:order:o1:line:l1": 1000,
        "paynow:order:o1:extra:loyalty": 10,
        "paynow:order:o1:extra:spring": 25,
    }
    kinds = {e.entry_id: e.kind for e in decision.entries}
    assert kinds["paynow:order:o1:extra:spring"] == "promo"
    assert kinds["paynow:order:o1:extra:loyalty"] == "paid"
    assert decision.points == 1035
    # Extras are recorded with the order's credits, so a refund reverses them too.
    assert decision.order_update is not None
    assert sorted(decision.order_update["entryIds"]) == sorted(amounts(decision))


def test_paynow_adjust_credits_contributions_from_two_plugins_apply_to_a_subscription_cycle() -> None:
    decision = run(sub_event(cycle=2), Bonus("spring", 25), Bonus("loyalty", 10))
    assert amounts(decision) == {
        "paynow:sub:s1:cycle:2": 1000,
        "paynow:sub:s1:cycle:2:extra:loyalty": 10,
        "paynow:sub:s1:cycle:2:extra:spring": 25,
    }


def test_paynow_adjust_credits_sees_the_planned_credits() -> None:
    bonus = Bonus("b", 1)
    run(order_event(line("l1", PACK, quantity=2), line("l2", PROMO_PACK)), bonus)
    run(sub_event(cycle=3), bonus)
    assert bonus.seen == [
        (
            PlannedCredit(key="l1", points=1000, kind="paid", product_id=PACK, expires_in_days=365),
            PlannedCredit(key="l2", points=50, kind="promo", product_id=PROMO_PACK, expires_in_days=365),
        ),
        (PlannedCredit(key="cycle:3", points=1000, kind="promo", product_id=PLAN, expires_in_days=365),),
    ]


def test_paynow_adjust_credits_extra_sets_its_own_lot_life() -> None:
    class Week:
        @hookimpl
        def paynow_adjust_credits(self) -> list[PlannedCredit]:
            return [PlannedCredit(key="week", points=5, kind="promo", expires_in_days=7)]

    decision = run(order_event(), Week(), Bonus("spring", 25))
    expiries = {e.entry_id: e.expires_at for e in decision.entries}
    assert expiries == {
        "paynow:order:o1:line:l1": None,  # the catalog's paid pack
        "paynow:order:o1:extra:week": SENT + timedelta(days=7),
        "paynow:order:o1:extra:spring": SENT + timedelta(days=365),  # no expires_in_days: the default
    }


@pytest.mark.parametrize("days", [0, 40_000])
def test_paynow_adjust_credits_expires_in_days_outside_1_to_36500_is_invalid_event(days: int) -> None:
    class Bad:
        @hookimpl
        def paynow_adjust_credits(self) -> list[PlannedCredit]:
            return [PlannedCredit(key="bad", points=5, kind="promo", expires_in_days=days)]

    with pytest.raises(InvalidEventError, match="expires_in_days"):
        run(order_event(), Bad())


def test_paynow_adjust_credits_duplicate_key_between_plugins_is_invalid_event() -> None:
    with pytest.raises(InvalidEventError, match="'spring'"):
        run(order_event(), Bonus("spring", 25), Bonus("spring", 10))


@pytest.mark.parametrize(
    ("event", "key"),
    [(order_event(line("l1")), "l1"), (sub_event(cycle=5), "cycle:5")],
    ids=["line", "cycle"],
)
def test_paynow_adjust_credits_key_clashing_with_a_planned_credit_is_invalid_event(
    event: ev.PaymentEvent, key: str
) -> None:
    with pytest.raises(InvalidEventError):
        run(event, Bonus(key, 25))


def test_paynow_adjust_credits_zero_or_negative_extra_writes_nothing() -> None:
    decision = run(order_event(), Bonus("nothing", 0), Bonus("negative", -5))
    assert amounts(decision) == {"paynow:order:o1:line:l1": 500}


def test_paynow_adjust_credits_returning_none_adds_nothing() -> None:
    plugin = types.ModuleType("quiet_plugin")

    @hookimpl
    def paynow_adjust_credits() -> None:
        return None

    plugin.paynow_adjust_credits = paynow_adjust_credits  # type: ignore[attr-defined]
    assert amounts(run(order_event(), plugin)) == {"paynow:order:o1:line:l1": 500}


def test_paynow_adjust_credits_guide_example_plugin_works_as_documented() -> None:
    """The complete example in docs/plugins.md runs, with the catalog shown there."""
    guide = GUIDE.read_text(encoding="utf-8")
    source = re.search(r"`acme_paynow_bonus/plugin.py`:\n\n```python\n(.*?)```", guide, re.S)
    toml = re.search(r"The catalog file gets the plugin's section.*?```toml\n(.*?)```", guide, re.S)
    assert source is not None
    assert toml is not None
    plugin = types.ModuleType("acme_paynow_bonus.plugin")
    exec(compile(source.group(1), "docs/plugins.md", "exec"), plugin.__dict__)
    catalog = Catalog.from_toml(toml.group(1))
    manager = get_plugin_manager(extra_plugins=[plugin])
    bundle = order_event(line("l1", "411486491630370900", quantity=2))
    decision = decide(bundle, EventState(), manager.hook, catalog)
    assert amounts(decision) == {
        "paynow:order:o1:line:l1": 2000,
        "paynow:order:o1:extra:acme-bundle:l1": 500,
    }
    assert {e.kind for e in decision.entries if ":extra:" in e.entry_id} == {"promo"}
    assert {e.expires_at for e in decision.entries if ":extra:" in e.entry_id} == {SENT + timedelta(days=365)}
    with_plan = Catalog.from_toml(toml.group(1) + f'[subscriptions."{PLAN}"]\npoints_per_cycle = 1000\n')
    cycle = decide(sub_event(), EventState(), manager.hook, with_plan)  # subscriptions: no extra
    assert amounts(cycle) == {"paynow:sub:s1:cycle:1": 1000}


# ---- purity: the same input gives the same decision, every time ----

PURITY_CASES = {
    "paynow_map_order_line": (order_event(line("l1", PACK, 2), line("l2", PROMO_PACK)), EventState()),
    "paynow_map_subscription": (sub_event(cycle=3, kind=ev.SUBSCRIPTION_RENEWED), EventState()),
    "paynow_refund_points": (refund_event(), CREDITED_ORDER),
    "paynow_adjust_credits": (order_event(line("l1", PACK)), EventState()),
}


@pytest.mark.parametrize("hook", list(PURITY_CASES))
def test_paynow_hooks_decide_twice_on_the_same_input_gives_equal_decisions(hook: str) -> None:
    event, state = PURITY_CASES[hook]
    plugins = [Bonus("spring", 25), FixedPoints(PACK, 9), RefundsPart(650)]
    manager = get_plugin_manager(extra_plugins=plugins)
    first = decide(event, state, manager.hook, CATALOG)
    again = decide(event, state, manager.hook, CATALOG)
    assert first == again
    assert first.entries  # the case does decide something
    # A fresh manager (a new process, or a retry elsewhere) decides the same.
    other = get_plugin_manager(extra_plugins=[Bonus("spring", 25), FixedPoints(PACK, 9), RefundsPart(650)])
    assert decide(event, state, other.hook, CATALOG) == first
