"""The load tool's own bookkeeping (`paynow_loadtest`): which deliveries go out, how the service's
and the floor's turns are cut and put back together, the app's spends among them and how their
outcomes are recorded; the traffic model the chaos tests share; the report and its plot; the one
webhook sender; and how `paynow-service loadtest` hands over to the tool (or says how to install it).
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import sys
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc

from paynow_loadtest.app_double import INCONSISTENT_PROMO_BALANCE, INSUFFICIENT_POINTS, AppError
from paynow_loadtest.cli import parse_args
from paynow_loadtest.driver import open_loop
from paynow_loadtest.events import EventFactory
from paynow_loadtest.expectation import Expectation
from paynow_loadtest.invariants import check
from paynow_loadtest.phases import Verification, slices
from paynow_loadtest.report import Measured, build_result, write_reports
from paynow_loadtest.results import PhaseResult, Sample, SpendSample, SpendStats
from paynow_loadtest.spends import SpendBook, spend_outcome
from paynow_loadtest.stack import CATALOG, Stack
from paynow_loadtest.state import State
from paynow_loadtest.traffic import (
    CREDITING,
    LARGE_COSTS,
    SMALL_COSTS,
    Delivery,
    Mix,
    Spend,
    plan_spends,
    plan_traffic,
)
from paynow_loadtest.webhook import encode, signed_headers
from paynow_service.config import Settings
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.signature import verify_signature
from paynow_service.entrypoints import loadtest_cli
from tests.chaos.harness import CHAOS_MIX, CHAOS_MIX_NO_REFUNDS

ROOT = Path(__file__).resolve().parents[2]


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
    parts = slices(plan, 6, 4)
    assert len(parts) == 4
    assert sum(len(s) for s in parts) == len(plan) == 120
    for k, part in enumerate(parts):
        assert all(0 <= d.due < 1.5 for d in part), k
    flattened = [d.planned.event_id for part in parts for d in part]
    assert flattened == [d.planned.event_id for d in plan]  # order kept: refunds after their orders


def test_absorb_moves_samples_onto_the_run_clock_and_adds_up(factory: EventFactory) -> None:
    total = PhaseResult("service", 10, 2)
    first, second = PhaseResult("service", 10, 1), PhaseResult("service", 10, 1)
    first.samples = [Sample(0.2, 3.0, 200, "queued", "order", 0, "e1")]
    second.samples = [Sample(0.1, 4.0, 503, "unavailable", "order", 0, "e2")]
    first.wall_s, second.wall_s, first.skipped, second.lag_s = 0.9, 0.9, 1, 0.05
    total.absorb(first, 0.0)
    total.absorb(second, 2.5)
    assert [round(s.t, 2) for s in total.samples] == [0.2, 2.6]
    assert (total.skipped, round(total.wall_s, 2), total.lag_s, total.errors) == (1, 1.8, 0.05, 1)


def test_a_delivery_is_retimed_not_changed() -> None:
    planned = EventFactory(Catalog.from_toml(CATALOG), rng=random.Random(5)).order("u9")
    [[only]] = slices([Delivery(4.5, planned, label="order")], 6, 2)[1:]
    assert (round(only.due, 2), only.planned, only.label) == (1.5, planned, "order")


def test_the_load_mix_has_every_kind_of_delivery(factory: EventFactory) -> None:
    users = [f"u{i}" for i in range(30)]
    plan = plan_traffic(factory, rate=20, duration=30, users=users, rng=random.Random(2), mix=Mix())
    labels = {d.label for d in plan}
    assert labels >= {"order", "burst", "refund", "subscription", "renewal", "ignored", "duplicate"}
    assert sum(d.label == "unknown_product" for d in plan) == 3  # at least min_unknown


def test_the_chaos_mix_is_the_same_planner_with_two_unknowns_and_no_bursts(factory: EventFactory) -> None:
    users = [f"c{i}" for i in range(12)]
    plan = plan_traffic(factory, rate=25, duration=8, users=users, rng=random.Random(4), mix=CHAOS_MIX)
    labels = [d.label for d in plan]
    assert len(plan) == 200
    assert labels.count("unknown_product") == 2
    assert not {"burst", "subscription", "renewal"} & set(labels)
    assert {"order", "duplicate", "refund", "ignored"} <= set(labels)
    by_id = {d.planned.event_id: d for d in plan if not d.duplicate}
    for refund in (d for d in plan if d.label == "refund"):
        assert refund.due - by_id[refund.needs].due >= 1.5
    calm = plan_traffic(
        factory, rate=15, duration=11, users=users, rng=random.Random(4), mix=CHAOS_MIX_NO_REFUNDS
    )
    assert "refund" not in {d.label for d in calm}
    assert plan_spends(plan, share=CHAOS_MIX.spend_share, rng=random.Random(1)) == []


# ---- the app's spends ---------------------------------------------------------------------------


def spend_plan(
    factory: EventFactory, seed: int, *, share: float = 0.15
) -> tuple[list[Delivery], list[Spend]]:
    users = [f"u{i}" for i in range(30)]
    deliveries = plan_traffic(factory, rate=20, duration=30, users=users, rng=random.Random(1), mix=Mix())
    return deliveries, plan_spends(deliveries, share=share, rng=random.Random(seed), delay_s=1.0)


def test_the_spend_plan_of_a_seed_is_deterministic(factory: EventFactory) -> None:
    deliveries, first = spend_plan(factory, 11)
    again = plan_spends(deliveries, share=0.15, rng=random.Random(11), delay_s=1.0)
    other = plan_spends(deliveries, share=0.15, rng=random.Random(12), delay_s=1.0)
    assert first == again
    assert first != other


def test_the_spend_share_is_respected_and_zero_turns_spends_off(factory: EventFactory) -> None:
    deliveries, spends = spend_plan(factory, 5)
    assert len(deliveries) == 600
    assert len(spends) == 90  # floor(0.15 * 600): the first second's spends only wait for a buyer
    assert len(spend_plan(factory, 5, share=0.5)[1]) == 300
    assert spend_plan(factory, 5, share=0)[1] == []
    assert plan_spends([], share=0.15, rng=random.Random(1)) == []


def test_each_spend_is_on_a_user_who_bought_before_on_the_open_loop_schedule(factory: EventFactory) -> None:
    deliveries, spends = spend_plan(factory, 9)
    by_id = {d.planned.event_id: d for d in deliveries if not d.duplicate}
    dues = [s.due for s in spends]
    assert dues == sorted(dues)
    assert all(0 < due < 30 for due in dues)
    assert len({s.action_id for s in spends}) == len(spends)
    for spend in spends:
        origin = by_id[spend.needs]
        assert origin.label in CREDITING
        assert origin.planned.expected.uid == spend.uid
        assert sum(origin.planned.expected.entries.values()) > 0
        assert origin.due <= spend.due - 1.0
        assert spend.due not in {d.due for d in deliveries}  # between two deliveries, not on one
    costs = [s.cost for s in spends]
    assert all(c in SMALL_COSTS or c in LARGE_COSTS for c in costs)
    assert 0 < sum(c in LARGE_COSTS for c in costs) < len(costs) / 4  # most affordable, some not


def test_spends_are_cut_into_turns_like_deliveries(factory: EventFactory) -> None:
    _, spends = spend_plan(factory, 3)
    parts = slices(spends, 30, 4)
    assert [s.action_id for part in parts for s in part] == [s.action_id for s in spends]
    assert all(0 <= s.due < 7.5 for part in parts for s in part)


async def test_open_loop_starts_deliveries_and_spends_each_on_its_own_schedule(factory: EventFactory) -> None:
    planned = factory.order("u1")
    deliveries = [Delivery(0.0, planned, label="order"), Delivery(0.02, planned, duplicate=True)]
    spends = [Spend(0.01, "u1", 10, "a1", planned.event_id)]
    started: list[str] = []

    async def one(delivery: Delivery, start: float) -> None:
        started.append("duplicate" if delivery.duplicate else "order")

    async def spend(item: Spend, start: float) -> None:
        started.append(item.action_id)

    await open_loop(deliveries, one, PhaseResult("p", 100, 1), spends, spend)
    assert started == ["order", "a1", "duplicate"]


def test_spend_outcomes_are_told_only_by_success_and_insufficient_points() -> None:
    assert spend_outcome(None) == "spent"
    assert spend_outcome(AppError(INSUFFICIENT_POINTS)) == "refused"
    assert spend_outcome(AppError(INCONSISTENT_PROMO_BALANCE)) == "inconsistent"
    assert spend_outcome(TimeoutError()) == "unknown"
    assert spend_outcome(gexc.Aborted("contention")) == "unknown"


def test_the_book_records_what_is_known_and_rereads_the_rest() -> None:
    expectation = Expectation()
    book = SpendBook(expectation, "p")
    spends = [Spend(0.1 * i, f"u{i}", 10 * (i + 1), f"a{i}", "e") for i in range(4)]
    for spend, outcome in zip(spends, ("spent", "refused", "unknown", "inconsistent"), strict=True):
        book.record(spend, outcome)
    assert {a: (s.uid, s.cost, s.spent) for a, s in expectation.spends.items()} == {
        "a0": ("u0", 10, True),
        "a1": ("u1", 20, False),
    }
    assert book.inconsistent == ["u3/a3"]
    book.resolve_with(["a2"])
    assert (expectation.spends["a2"].spent, expectation.spends["a3"].spent) == (True, False)
    assert (book.reread_written, book.reread_unwritten, book.unresolved) == (1, 1, [])
    summary = book.summary()
    assert (summary["attempted"], summary["spent"], summary["inconsistent"]) == (4, 1, 1)
    with pytest.raises(AssertionError, match="twice"):
        book.record(spends[0], "spent")


def test_spend_stats_move_onto_the_run_clock_and_add_up() -> None:
    total, part = SpendStats(), SpendStats()
    part.samples = [SpendSample(0.5, 12.0, "spent"), SpendSample(0.7, 40.0, "unknown", "TimeoutError")]
    part.skipped, part.retries = 1, 3
    total.absorb(part, 2.0)
    summary = total.summary()
    assert [s.t for s in total.samples] == [2.5, 2.7]
    assert (summary["attempted"], summary["spent"], summary["unknown"], summary["skipped"]) == (2, 1, 1, 1)
    assert (summary["retries"], summary["p50_ms"], summary["p95_ms"]) == (3, 12.0, 40.0)
    assert summary["errors"] == {"TimeoutError": 1}


def test_the_spend_share_option() -> None:
    assert parse_args([]).spend_share == 0.15
    assert parse_args(["--spend-share", "0"]).spend_share == 0
    with pytest.raises(SystemExit):
        parse_args(["--spend-share", "1.5"])


# ---- the report, the sender, the hand-over ------------------------------------------------------


def test_the_report_writes_json_markdown_and_a_real_png(factory: EventFactory, tmp_path: Path) -> None:
    args = parse_args(["--rate", "10", "--duration", "4", "--out", str(tmp_path)])
    service, floor = PhaseResult("service", 10, 4), PhaseResult("floor", 10, 4)
    for k in range(40):  # two turns of each, a gap between them
        t = k / 10 + (2.0 if k >= 20 else 0.0)
        service.samples.append(Sample(t, 5 + k % 7, 200, "queued", "order", 0, f"s{k}"))
        floor.samples.append(Sample(t + 2, 3 + k % 5, 200, "queued", "order", 0, f"f{k}"))
    service.wall_s = floor.wall_s = 4.0
    expectation = Expectation()
    verification = Verification(True, 1.0, {}, check(expectation, State({}, {}, {}), []), {})
    stack = Stack("http://127.0.0.1:1/api/paynow/webhook", Settings.from_env({}), "p", "s",
                  Catalog.from_toml(CATALOG), "pull")  # fmt: skip
    measured = Measured(service, floor, [], [])
    result = build_result(
        args, stack, "now", measured, verification, expectation, {}, SpendBook(expectation, "p")
    )
    report = write_reports(result, measured, tmp_path)
    png = report.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000  # a drawn chart, not an empty canvas
    text = report.read_text()
    assert f"![answer latency over time]({report.with_suffix('.png').name})" in text
    assert "| answer p50 / p95 / p99 ms |" in text
    assert json.loads(report.with_suffix(".json").read_text())["service"]["deliveries"] == 40


def test_the_sender_signs_as_paynow_and_keeps_the_bytes() -> None:
    body = encode({"event_type": "ON_ORDER_COMPLETED", "event_id": "1", "body": {}})
    assert body == b'{"event_type":"ON_ORDER_COMPLETED","event_id":"1","body":{}}'
    assert encode(body) is body
    headers = signed_headers("pn-secret", body, ts_ms=1_717_000_000_000)
    assert verify_signature(headers, body, ("pn-secret",), now_ms=1_717_000_000_000, tolerance_s=300)


def test_loadtest_hands_over_to_the_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[list[str], str | None]] = []

    def fake_main(argv: list[str], prog: str | None = None) -> int:
        seen.append((argv, prog))
        return 7

    monkeypatch.setattr("paynow_loadtest.cli.main", fake_main)
    code = loadtest_cli.run(Settings.from_env({}), argparse.Namespace(rest=["--", "--rate", "5"]))
    assert (code, seen) == (7, [(["--rate", "5"], "paynow-service loadtest --")])


def test_loadtest_without_the_tool_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "paynow_loadtest.cli", None)  # as if not installed
    assert loadtest_cli.run(Settings.from_env({}), argparse.Namespace(rest=[])) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "pip install -e loadtool" in lines[0]
    assert "make install" in lines[0]


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_the_service_imports_neither_bench_nor_tests_nor_the_load_tool() -> None:
    offenders = []
    for path in [*(ROOT / "paynow_service").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]:
        for module in _imports(path):
            top = module.split(".")[0]
            allowed = path.name == "loadtest_cli.py" and module == "paynow_loadtest.cli"
            if top in ("bench", "tests") or (top == "paynow_loadtest" and not allowed):
                offenders.append(f"{path.relative_to(ROOT)}: {module}")
    assert not offenders


def test_the_load_tool_imports_neither_bench_nor_tests() -> None:
    for path in (ROOT / "loadtool" / "paynow_loadtest").rglob("*.py"):
        assert not {m for m in _imports(path) if m.split(".")[0] in ("bench", "tests")}, path
