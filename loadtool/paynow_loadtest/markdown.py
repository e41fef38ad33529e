"""The run's report as Markdown (`load-<time>.md`) and as the table printed at the end of a run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from paynow_loadtest.cpu import cpu_table
from paynow_loadtest.results import TARGET_P95_MS, fmt

PHASE_COLUMNS = (
    "phase",
    "deliveries",
    "requests",
    "errors",
    "achieved_rate",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
)
SPEND_COLUMNS = (
    "turns", "attempted", "spent", "refused", "unknown", "inconsistent", "skipped", "retries",
    "p50_ms", "p95_ms", "p99_ms", "max_ms",
)  # fmt: skip
STEP_HEADER = (
    "rate/s", "service achieved/s", "service p95 ms", "errors", "drained after s",
    "floor achieved/s", "floor p95 ms", "floor errors",
)  # fmt: skip
METHOD = (
    "A warm-up (--warmup s of the same traffic through the service, then up to 5 s through the floor) "
    "runs first: its events count in the invariants, its latencies are reported apart. "
    "Open loop: every delivery starts on its own schedule, so a slow answer never slows the sender; "
    "latency is measured by the sender (a lean keep-alive HTTP/1.1 client on uvloop) from request start "
    "to full answer (client queueing included), on keep-alive connections opened before each turn. "
    "The pull worker runs at --worker-nice (default 10, its session too): the latency-critical webhook "
    "gets the CPU first, as on its own instances in production; the worker's lag is reported. Non-2xx "
    "answers are retried after 1, 2 and 4 s, as PayNow would, and counted as errors. "
    "The floor is a bare asyncio script on the same emulators doing what the webhook must do for traffic "
    "of the same mix at the same rate (Firestore create of the webhookEvents record, or a read when it "
    "already exists, then one ordered Pub/Sub publish of the PaymentEvent; an ignored type is marked "
    "instead), with no web framework. It writes the service's collection and topic, so the worker "
    "processes its events too, and the service and the floor take turns in --rounds segments, so both "
    "meet the same machine (find-max's floor publishes apart). Processing = the worker's processing_ms "
    "log field; lag = webhookEvents processedAt - receivedAt for events the worker processed (an upper "
    "bound of publish to processed). RSS from /proc/PID/status (peak of 0.5 s samples). Invariants are "
    "read from Firestore and the DLQ subscription after the queue drained (paynow_loadtest.invariants). "
    "The app's spends (--spend-share per delivery, in the service's and the floor's turns alike, from this "
    "process on an AsyncClient of their own) run the app's points code (paynow_loadtest.app_double, 10 "
    "attempts, 1 s initial backoff) on users whose order or subscription was accepted at least 1 s before; "
    "a spend's latency is its whole transaction, contention retries included; an outcome the app's code "
    "does not tell (retries exhausted, 30 s timeout) is settled by re-reading the spend's ledger entry after "
    "the drain; the invariants check every debit and every wallet in the app's model. "
    "CPU: each process's utime + stime (/proc/PID/stat, its workers included; this process is the sender "
    "in the service's turns and the floor in its own) sampled at the start and end of every measured turn, "
    "summed per phase and divided by the phase's answered requests (the floor's: its deliveries), beside "
    "the same turns' p50 and p95; the sender's and the floor's CPU include the app's spends of their turns. "
    "--pin puts serve and the worker on one CPU, the emulators and the sender on the other, the floor on "
    "the service's CPU in its turns; the report says which mode ran."
)


def _md_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def step_cells(step: dict[str, Any]) -> list[Any]:
    sv, fl = step.get("service") or {}, step.get("floor") or {}
    return [
        f"{step['rate']:g}", sv.get("achieved_rate", "-"), sv.get("p95_ms", "-"), sv.get("errors", "-"),
        step.get("drain_s", "-"), fl.get("achieved_rate", "-"), fl.get("p95_ms", "-"), fl.get("errors", "-"),
    ]  # fmt: skip


def _head(result: dict[str, Any], pngs: Sequence[str]) -> list[str]:
    s, f, config = result["service"], result.get("floor"), result["config"]
    if config["find_max"]:
        what = (
            f"find-max from {config['rate']:g}/s, x{config['step_factor']:g} per step "
            f"of {config['step_duration']:g} s"
        )
    else:
        what = f"{config['rate']:g}/s open loop for {config['duration']:g} s"
    cpu = result.get("cpu") or {}
    mode = f"{cpu.get('mode', 'unpinned')}, commit {result.get('commit', 'unknown')}"
    return [
        f"# Load test {result['started_at']}", "",
        what + f", worker: {config['worker']}, stack: {result['stack']}. {result['machine']}; {mode}.", "",
        "| measure | value | target |", "|---|---:|---|", *(_md_row(row) for row in result["table"]), "",
        "## Answer latency", "",
        _md_row(PHASE_COLUMNS), _md_row(["---"] + ["---:"] * (len(PHASE_COLUMNS) - 1)),
        *(_md_row([phase[c] for c in PHASE_COLUMNS]) for phase in [s, *([f] if f else [])]), "",
        *(["## CPU ms per event", "", *cpu_table(cpu), ""] if cpu.get("phases") else []),
        *(f"![answer latency over time]({png})" for png in pngs), "",
    ]  # fmt: skip


def _warm_up(warm: dict[str, Any]) -> list[str]:
    parts = ", ".join(
        f"{name} {w['deliveries']} deliveries, p95 {w['p95_ms']} ms" for name, w in warm.items()
    )
    return [f"Warm-up, not measured above: {parts}.", ""]


def _find_max(fm: dict[str, Any]) -> list[str]:
    capped = " (a lower bound: the last step still passed)" if fm.get("capped") else ""
    return [
        "## Find max", "",
        f"Highest sustained rate (answer p95 <= {TARGET_P95_MS:g} ms, no errors): service "
        f"**{fm['service_max']}/s**, floor **{fm['floor_max']}/s**, "
        f"ratio **{fmt(fm['ratio'], 2)}**{capped}.", "",
        _md_row(STEP_HEADER), _md_row(["---:"] * len(STEP_HEADER)),
        *(_md_row(step_cells(step)) for step in fm["steps"]), "",
    ]  # fmt: skip


def _spends(spends: dict[str, Any]) -> list[str]:
    run = spends["run"]
    examples = f" ({', '.join(run['inconsistent_examples'])})" if run["inconsistent_examples"] else ""
    text = (
        f"The app's points code spending from the users' wallets beside the traffic, "
        f"{spends['share']:g} per delivery in every turn. Whole run (warm-up included): "
        f"{run['attempted']} attempted, {run['spent']} spent, {run['refused']} refused (not enough "
        f"points), {run['unknown']} unknown and {run['inconsistent']} inconsistent (re-read after the "
        f"run: {run['unknown_reread_written']} written, {run['unknown_reread_unwritten']} not), "
        f"{run['skipped']} skipped (their order never accepted); {run['retries']} contention retries"
        + "".join(f", {n} {name}" for name, n in run["retried_by"].items())
        + f"; INCONSISTENT_PROMO_BALANCE **{spends['inconsistent']}**{examples}. Checked: "
        f"{spends['checked']['succeeded']} debits written, {spends['checked']['points_spent']} points spent, "
        f"{spends['checked']['points_expired']} expired."
    )
    turns = (("service turns", spends["service"]), ("floor turns", spends["floor"]))
    return [
        "## The app's spends", "", text, "",
        _md_row(SPEND_COLUMNS), _md_row(["---"] + ["---:"] * (len(SPEND_COLUMNS) - 1)),
        *(_md_row([name] + [phase[c] for c in SPEND_COLUMNS[1:]]) for name, phase in turns if phase), "",
    ]  # fmt: skip


def render_markdown(result: dict[str, Any], pngs: Sequence[str]) -> str:
    lines = _head(result, pngs)
    if result.get("warm_up"):
        lines += _warm_up(result["warm_up"])
    if result.get("find_max"):
        lines += _find_max(result["find_max"])
    if result.get("spends"):
        lines += _spends(result["spends"])
    lines += [
        "## Invariants", "", "```", result["invariants"]["summary"], "```", "",
        "## Traffic", "", "```", json.dumps(result["traffic"], indent=1), "```", "",
        "## Method", "", result["method"], "",
    ]  # fmt: skip
    return "\n".join(lines)


def print_table(result: dict[str, Any]) -> None:
    width = max(len(name) for name, _, _ in result["table"])
    vwidth = max(len(value) for _, value, _ in result["table"])
    config = result["config"]
    print()
    if config["find_max"]:
        print(f"Load test: find-max from {config['rate']:g}/s, {config['step_duration']:g} s steps, "
              f"worker {config['worker']} (table: the highest sustained step)")  # fmt: skip
    else:
        nice = f" (nice {config['worker_nice']})" if config.get("worker_nice") else ""
        print(
            f"Load test: {config['rate']:g}/s for {config['duration']:g} s, worker {config['worker']}{nice}"
        )
    cpu = result.get("cpu") or {}
    print(f"{cpu.get('mode', 'unpinned')}, commit {result.get('commit', 'unknown')}, {result['machine']}")
    print("-" * (width + vwidth + 30))
    for name, value, target in result["table"]:
        print(f"{name:<{width}}  {value:<{vwidth}}  {target}")
    print("-" * (width + vwidth + 30))
    if result.get("find_max"):
        fm = result["find_max"]
        print(
            f"find-max: service {fm['service_max']}/s, floor {fm['floor_max']}/s, ratio {fmt(fm['ratio'], 2)}"
        )
        header = ("rate", "svc/s", "svc p95", "errors", "drain s", "floor/s", "fl p95", "fl err")
        print("  ".join(f"{h:>10}" for h in header))
        for step in fm["steps"]:
            print("  ".join(f"{c!s:>10}" for c in step_cells(step)))
    if cpu.get("phases"):
        print("\n" + "\n".join(cpu_table(cpu)) + "\n")
    print(result["invariants"]["summary"])
