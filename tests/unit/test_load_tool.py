"""The load tool's own bookkeeping (`paynow_loadtest`): which deliveries go out, how the service's
and the floor's turns are cut and put back together, the app's spends among them and how their
outcomes are recorded; the traffic model the chaos tests share; the report and its plot; the one
webhook sender; and how `paynow-service loadtest` hands over to the tool (or says how to install it).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc

from paynow_loadtest.app_double import INCONSISTENT_PROMO_BALANCE, INSUFFICIENT_POINTS, AppError
from paynow_loadtest.cli import main as cli_main
from paynow_loadtest.cli import parse_args
from paynow_loadtest.cpu import FLOOR, SENDER, CpuMeter, Placement, Turn, commit, cpu_table, ms_per_event
from paynow_loadtest.driver import open_loop
from paynow_loadtest.events import EventFactory
from paynow_loadtest.expectation import Expectation
from paynow_loadtest.invariants import check
from paynow_loadtest.markdown import print_table
from paynow_loadtest.phases import Verification, slices
from paynow_loadtest.processes import CLK_TCK, LogCount, cpu_ticks, listening_pid, process_tree, threads
from paynow_loadtest.report import Measured, build_result, write_reports
from paynow_loadtest.results import PhaseResult, Sample, SpendSample, SpendStats
from paynow_loadtest.spends import SpendBook, spend_outcome
from paynow_loadtest.stack import CATALOG, Stack, emulator_pids
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


# ---- the benchmark protocol: CPU per process from /proc, the pinned mode, the report's CPU table ------

BURNER = """
import os, sys, threading, time
print("ready", flush=True)
for line in sys.stdin:
    if line.startswith("thread"):  # a thread started now: where may it run?
        seen = []
        worker = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))
        worker.start()
        worker.join()
        print(",".join(map(str, seen[0])), flush=True)
        continue
    target = time.process_time() + float(line) / 1000  # burn this many ms of CPU, then tell the total
    while time.process_time() < target:
        pass
    print(f"{time.process_time():.4f}", flush=True)
"""
TICK_MS = 1000 / CLK_TCK


def _start(code: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


def _ask(child: subprocess.Popen[str], line: str) -> str:
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.write(line + "\n")
    child.stdin.flush()
    return child.stdout.readline().strip()


def _end(child: subprocess.Popen[str]) -> None:
    """Killed (its workers too), waited for, its pipes closed."""
    for pid in [*process_tree().get(child.pid, []), child.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    child.wait(10)
    for pipe in (child.stdin, child.stdout):
        if pipe is not None:
            pipe.close()


@pytest.fixture
def burner() -> Iterator[subprocess.Popen[str]]:
    child = _start(BURNER)
    yield child
    _end(child)


def test_the_cpu_sampler_reads_the_cpu_a_child_burned(burner: subprocess.Popen[str]) -> None:
    before = cpu_ticks(burner.pid)
    assert before is not None
    total_s = float(_ask(burner, "300"))  # 300 ms of CPU, on a busy machine however long it takes
    after = cpu_ticks(burner.pid)
    assert after is not None
    assert (after - before) * TICK_MS == pytest.approx(300, abs=2 * TICK_MS + 10)
    assert after * TICK_MS == pytest.approx(total_s * 1000, abs=2 * TICK_MS + 10)  # the child's own clock
    _end(burner)
    assert cpu_ticks(burner.pid) is None  # gone


def test_a_process_with_workers_counts_them_and_this_process_does_not_count_its_children() -> None:
    # A parent whose worker (its child) burns: the parent's CPU includes it; without children, not.
    parent = _start(
        f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {BURNER!r}], check=False)"
    )
    try:
        with_children, alone = cpu_ticks(parent.pid), cpu_ticks(parent.pid, children=False)
        _ask(parent, "200")  # burnt by the worker, through the parent's own stdin and stdout
        with_children_after = cpu_ticks(parent.pid)
        alone_after = cpu_ticks(parent.pid, children=False)
        assert None not in (with_children, alone, with_children_after, alone_after)
        assert (with_children_after - with_children) * TICK_MS == pytest.approx(200, abs=2 * TICK_MS + 10)  # type: ignore[operator]
        assert (alone_after - alone) * TICK_MS <= 2 * TICK_MS  # type: ignore[operator]
    finally:
        _end(parent)


def test_the_meter_gives_each_process_its_cpu_per_event_beside_the_turns_latencies(
    burner: subprocess.Popen[str],
) -> None:
    meter = CpuMeter({"serve": burner.pid}, {})
    for _ in range(2):
        with meter.turn("service", SENDER) as turn:
            _ask(burner, "100")
            turn.record([1.0, 2.0, 3.0, 4.0])
    with meter.turn("warm-up", SENDER, measured=False):
        _ask(burner, "50")  # not measured: no phase
    result = meter.result()
    assert result["mode"] == "unpinned"
    assert result["processes"] == ["serve", SENDER]
    phase = result["phases"]["service"]
    assert list(result["phases"]) == ["service"]
    assert (phase["turns"], phase["events"], phase["p50_ms"], phase["p95_ms"]) == (2, 8, 2.0, 4.0)
    assert phase["ms_per_event"]["serve"] == pytest.approx(200 / 8, abs=(4 * TICK_MS + 20) / 8)
    assert phase["ms_per_event"][SENDER] >= 0  # this process, as the sender, without its children
    assert phase["cpu_ms"]["serve"] < 200 + 4 * TICK_MS + 20  # the burner's own 300 ms before are not in it
    assert set(phase["cpus"]) == {"serve", SENDER}
    assert ms_per_event(result, "service", "serve") == phase["ms_per_event"]["serve"]
    assert math.isnan(ms_per_event(result, "floor", "serve"))


def test_a_process_that_lags_gets_its_cpu_per_message_it_handled_too(
    burner: subprocess.Popen[str], tmp_path: Path
) -> None:
    line = '{"message": "Worker received message"}\n'
    log = tmp_path / "worker.log"
    log.write_text(line * 3)
    count = LogCount(log, "Worker received message")
    assert count() == 3
    meter = CpuMeter({"worker": burner.pid}, {}, counters={"worker": count})
    with meter.turn("service") as turn:
        _ask(burner, "100")
        with log.open("a") as handle:
            handle.write(line * 4 + '{"message": "Worker rec')  # a line being written is not counted yet
        turn.record([1.0] * 10)  # 10 webhooks in the turn, 4 messages handled by the worker
    phase = meter.result()["phases"]["service"]
    assert phase["processed"] == {"worker": 4}
    assert phase["ms_per_event"]["worker"] == pytest.approx(100 / 10, abs=(2 * TICK_MS + 10) / 10)
    assert phase["ms_per_processed"]["worker"] == pytest.approx(100 / 4, abs=(2 * TICK_MS + 10) / 4)
    assert "service: worker 4 events" in "\n".join(cpu_table(meter.result()))
    with log.open("a") as handle:
        handle.write('eived message"}\n')
    assert count() == 8


def _affinity(pid: int) -> set[int]:
    """Where any thread of `pid` (not of its children) may run."""
    return {cpu for tid in threads(pid, children=False) for cpu in os.sched_getaffinity(tid)}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the pinned mode needs 2 CPUs")
def test_the_pinned_mode_puts_every_thread_on_its_cpu_and_gives_them_back(
    burner: subprocess.Popen[str],
) -> None:
    emulator = _start(
        "import threading, time\n"
        + "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n" * 3
        + "print('ready', flush=True)\ntime.sleep(60)"
    )
    mine = os.sched_getaffinity(0)
    placement = Placement.choose(True, "test")
    assert placement is not None
    service_cpu, other_cpu = sorted(mine)[:2]
    try:
        meter = CpuMeter({"serve": burner.pid}, {"firestore": emulator.pid}, placement)
        meter.pin()
        assert _affinity(burner.pid) == {service_cpu}
        assert len(threads(emulator.pid)) >= 4
        assert _affinity(emulator.pid) == {other_cpu}  # every thread of it
        assert _ask(burner, "thread") == str(service_cpu)  # a thread started later inherits it
        with meter.turn("floor", FLOOR) as turn:  # the floor: on the service's CPU, all its threads
            assert _affinity(os.getpid()) == {service_cpu}
            turn.record([1.0])
        with meter.turn("service", SENDER) as turn:  # the sender: beside the emulators
            assert _affinity(os.getpid()) == {other_cpu}
            turn.record([1.0])
        result = meter.result()
        assert result["mode"] == "pinned"
        assert f"CPU {service_cpu}" in result["placement"]
        assert result["phases"]["floor"]["cpus"] == {"serve": str(service_cpu), FLOOR: str(service_cpu),
                                                     "firestore": str(other_cpu)}  # fmt: skip
        assert result["phases"]["service"]["cpus"][SENDER] == str(other_cpu)
    finally:
        placement.restore()
        _end(emulator)
    assert os.sched_getaffinity(0) == mine
    assert _affinity(burner.pid) == mine


def test_the_pinned_mode_without_two_cpus_says_it_cannot_pin_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert Placement.choose(False, "load") is None
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    with pytest.raises(SystemExit) as exit_:
        Placement.choose(True, "load")
    assert exit_.value.code == 2
    assert "cannot pin" in capsys.readouterr().err
    # The load tool checks before it starts anything (no emulator, no serve).
    monkeypatch.setattr("paynow_loadtest.cli.open_stack", lambda args: pytest.fail("started"))
    assert cli_main(["--pin", "--duration", "1"]) == 2
    assert "cannot pin" in capsys.readouterr().err
    assert parse_args([]).pin is False


def test_the_report_has_a_cpu_table_per_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(["--rate", "10", "--duration", "4", "--out", str(tmp_path)])
    service, floor = PhaseResult("service", 10, 4), PhaseResult("floor", 10, 4)
    for k in range(20):
        service.samples.append(Sample(k / 10, 5.0, 200, "queued", "order", 0, f"s{k}"))
        floor.samples.append(Sample(k / 10, 3.0, 200, "queued", "order", 0, f"f{k}"))
    service.wall_s = floor.wall_s = 2.0
    meter = CpuMeter({"serve": 1, "worker": 2}, {"firestore": 3, "pubsub": 4})
    unit = {"serve": "0-1", "worker": "0-1", "firestore": "0-1", "pubsub": "0-1"}
    meter.add("service", {"serve": 1500, "worker": 800, SENDER: 300, "firestore": 900, "pubsub": 400},
              Turn(1000, [5.0] * 1000), 10.0, {**unit, SENDER: "0-1"}, {"worker": 400})  # fmt: skip
    meter.add("floor", {"serve": 10, "worker": 780, FLOOR: 500, "firestore": 850, "pubsub": 390},
              Turn(1000, [3.0] * 1000), 10.0, {**unit, FLOOR: "0-1"}, {"worker": 390})  # fmt: skip
    expectation = Expectation()
    verification = Verification(True, 1.0, {}, check(expectation, State({}, {}, {}), []), {})
    stack = Stack("http://127.0.0.1:1/api/paynow/webhook", Settings.from_env({}), "p", "s",
                  Catalog.from_toml(CATALOG), "pull")  # fmt: skip
    measured = Measured(service, floor, [], [])
    result = build_result(args, stack, "now", measured, verification, expectation, {},
                          SpendBook(expectation, "p"), cpu=meter.result())  # fmt: skip
    assert result["commit"] == commit(ROOT) != ""
    rows = {name: (value, target) for name, value, target in result["table"]}
    assert rows["serve CPU ms / webhook vs floor CPU ms / event"] == (
        "1.50 vs 0.50 (3.00x)",
        "unpinned, /proc",
    )
    worker = "0.80 vs 0.78; per message it handled 2.00 vs 2.00"  # it lagged: 400 of 1000 in the turns
    assert rows["worker CPU ms / event: service vs floor turns"][0] == worker
    text = write_reports(result, measured, tmp_path).read_text()
    assert "## CPU ms per event" in text
    assert "CPU ms per event, unpinned" in text
    assert f"commit {result['commit']}" in text
    header = (
        "| phase | turns | events | p50 ms | p95 ms | serve | worker | sender | floor | firestore | pubsub "
        "| all |"
    )
    assert header in text
    assert "| service | 1 | 1000 | 5.00 | 5.00 | 1.50 | 0.80 | 0.30 | - | 0.90 | 0.40 | 3.90 |" in text
    assert "| floor | 1 | 1000 | 3.00 | 3.00 | 0.010 | 0.78 | - | 0.50 | 0.85 | 0.39 | 2.53 |" in text
    assert text.index("## Answer latency") < text.index("## CPU ms per event") < text.index("## Invariants")
    print_table(result)
    assert header in capsys.readouterr().out


def test_the_commit_is_what_git_rev_parse_short_head_prints(tmp_path: Path) -> None:
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    sha = "4ec84eb10f32206a5af1375ef2c3542989a435b6"
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{sha} refs/heads/main\n")
    inside = tmp_path / "repo" / "a" / "b"
    inside.mkdir(parents=True)
    assert commit(inside) == "4ec84eb"
    (git / "refs" / "heads" / "main").write_text("0123456789abcdef0123456789abcdef01234567\n")
    assert commit(inside) == "0123456"  # a loose ref wins over the packed one
    (git / "HEAD").write_text(sha + "\n")
    assert commit(inside) == "4ec84eb"  # detached
    (tmp_path / "elsewhere").mkdir()
    assert commit(tmp_path / "elsewhere") in ("unknown", commit(Path("/")))


def test_an_emulator_the_tool_did_not_start_is_found_by_its_port() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert listening_pid(port) == os.getpid()
        assert emulator_pids({"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{port}"}) == {"pubsub": os.getpid()}
    assert emulator_pids({"PUBSUB_EMULATOR_HOST": "10.0.0.1:8085"}) == {}  # not on this machine
