"""The run's result: one dict (written as JSON), its measures table (printed and in the Markdown),
the pipeline's timing read back from Firestore and the worker's log, each process's CPU ms per event
(`cpu`), and the files of the report (`load-<time>.json`, `.md` and `.png`, see `markdown` and
`plots`)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paynow_loadtest.cpu import FLOOR, commit, ms_per_event
from paynow_loadtest.expectation import Expectation
from paynow_loadtest.invariants import InvariantReport
from paynow_loadtest.markdown import METHOD, render_markdown
from paynow_loadtest.phases import Verification
from paynow_loadtest.plots import write_plots
from paynow_loadtest.results import TARGET_P95_MS, PhaseResult, fmt, percentile, ratio
from paynow_loadtest.spends import SpendBook
from paynow_loadtest.stack import Stack
from paynow_loadtest.traffic import Delivery, Spend

FLOOR_RATIO_TARGET = 1.5
Row = tuple[str, str, str]


@dataclass
class Measured:
    """What the measured phases sent and saw (find-max: its highest sustained step)."""

    service: PhaseResult
    floor: PhaseResult | None
    deliveries: list[Delivery]
    spends: list[Spend]
    find_max: dict[str, Any] | None = None


def worker_processing_ms(logs: Sequence[Path], event_ids: set[str]) -> list[float]:
    """processing_ms of "Worker processed event successfully" lines for this run's events."""
    values: list[float] = []
    for path in logs:
        with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if "Worker processed event successfully" not in line:
                    continue
                with contextlib.suppress(ValueError, TypeError):
                    record = json.loads(line)
                    if record.get("event_id") in event_ids and record.get("processing_ms") is not None:
                        values.append(float(record["processing_ms"]))
    return values


def pipeline_timing(records: dict[str, dict[str, Any]], measured: set[str]) -> dict[str, Any]:
    """Lag (receivedAt -> processedAt) of the measured events the worker processed, and its throughput."""
    lags: list[float] = []
    by: Counter[str] = Counter()
    received: list[dt.datetime] = []
    processed: list[dt.datetime] = []
    for event_id, record in records.items():
        if record.get("status") != "processed" or event_id not in measured:
            continue
        component = str((record.get("result") or {}).get("by", ""))
        by[component] += 1
        got, done = record.get("receivedAt"), record.get("processedAt")
        if isinstance(got, dt.datetime) and isinstance(done, dt.datetime) and component == "paynow_worker":
            lags.append((done - got).total_seconds() * 1000)
            received.append(got)
            processed.append(done)
    span = (max(processed) - min(received)).total_seconds() if processed else 0.0
    return {
        "lag_ms": lags,
        "processed_by": dict(by),
        "worker_processed": len(lags),
        "worker_throughput": round(len(lags) / span, 1) if span > 0 else float("nan"),
    }


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _below(value: float, limit: float) -> str:
    return _verdict(None if math.isnan(value) else value < limit)


def _spend_rows(args: argparse.Namespace, inv: InvariantReport, run: dict[str, Any],
                s_sp: dict[str, Any], f_sp: dict[str, Any] | None) -> list[Row]:  # fmt: skip
    inconsistent = run.get("inconsistent", 0)

    def spend_ms(phase: dict[str, Any] | None) -> str:
        return f"{phase['p50_ms']} / {phase['p95_ms']}" if phase and phase["attempted"] else "n/a"

    return [
        ("app spends attempted / succeeded / refused",
         f"{inv.spends + inv.spends_refused} / {inv.spends} / {inv.spends_refused}",
         f"share {args.spend_share:g}; warm-up incl.; {run.get('unknown', 0) + inconsistent} unknown, "
         f"re-read: {run.get('unknown_reread_written', 0)} written"),
        ("app points spent / expired", f"{inv.points_spent} / {inv.points_expired}", "checked per wallet"),
        ("spend p50 / p95 ms: service vs floor turns", f"{spend_ms(s_sp)} vs {spend_ms(f_sp)}",
         f"{s_sp['attempted']} vs {f_sp['attempted'] if f_sp else 0} spends, same share"),
        ("spend contention retries", f"{run.get('retries', 0)}",
         f"service turns {s_sp['retries']}, floor turns {f_sp['retries'] if f_sp else 0}"),
        ("INCONSISTENT_PROMO_BALANCE", str(inconsistent), f"0: {_verdict(inconsistent == 0)}"),
    ]  # fmt: skip


def measures_table(
    args: argparse.Namespace, m: Measured, s: dict[str, Any], fl: dict[str, Any] | None,
    figures: dict[str, Any], verification: Verification, rss: dict[str, Any], spend_run: dict[str, Any],
) -> list[Row]:  # fmt: skip
    """The run's measures with their targets: one row each, as printed and in the report."""
    inv = verification.report
    floor_cell = f"{fl['p50_ms']} / {fl['p95_ms']} / {fl['p99_ms']}" if fl else "not run"
    rate_ratio, proc_p95, lag_p95 = figures["ratio"], figures["proc_p95"], figures["lag_p95"]
    ratio_ok = _verdict(None if math.isnan(rate_ratio) else rate_ratio <= FLOOR_RATIO_TARGET)
    drain = f"{verification.drain_s:.1f} s"
    if not verification.drained:
        drain += f", NOT drained: {len(verification.pending)} pending"
    timing = figures["timing"]
    return [
        ("answer p50 / p95 / p99 ms", f"{s['p50_ms']} / {s['p95_ms']} / {s['p99_ms']}",
         f"p95 < {TARGET_P95_MS:g} ms: {_below(s['p95_ms'], TARGET_P95_MS)}"),
        ("floor p50 / p95 / p99 ms", floor_cell, "same traffic mix and rate, in turns"),
        ("answer p95 / floor p95", fmt(rate_ratio, 2) + "x", f"<= {FLOOR_RATIO_TARGET}x: {ratio_ok}"),
        ("processing p95 ms (worker)", fmt(proc_p95), f"< 250 ms: {_below(proc_p95, 250)}"),
        ("lag p95 ms (received -> processed)", fmt(lag_p95), f"< 5000 ms: {_below(lag_p95, 5000)}"),
        ("deliveries sent / achieved rate", f"{s['deliveries']} / {s['achieved_rate']}/s",
         f"{args.rate:g}/s offered"),
        ("events accepted / per s", f"{m.service.accepted_events} / {figures['accepted_per_s']}/s", "all"),
        ("worker throughput", f"{timing['worker_throughput']}/s ({timing['worker_processed']} events)", ""),
        ("non-2xx answers (retried)", str(s["errors"]), "0"),
        ("drain after the load", drain, ""),
        ("RSS peak MiB", ", ".join(f"{k} {v['peak_mib']}" for k, v in rss.items()) or "n/a", ""),
        ("lost / doubled", f"{len(inv.lost)} / {len(inv.doubled)}", "0 / 0"),
        ("DLQ (unknown_product)",
         f"{inv.dlq_received} of {inv.dlq_expected}, duplicates {inv.dlq_duplicates}", "exact"),
        *_spend_rows(args, inv, spend_run, s["spends"], fl["spends"] if fl else None),
        ("invariants", "OK" if inv.ok and verification.drained else "FAILED", "OK"),
    ]  # fmt: skip


def _cpu_rows(cpu: dict[str, Any] | None, m: Measured) -> list[Row]:
    """The headline of the CPU table: serve's CPU per webhook against the floor's per event, the worker's."""
    if not cpu or not cpu["phases"]:
        return []
    service, floor = m.service.name, m.floor.name if m.floor is not None else ""
    serve, bare = ms_per_event(cpu, service, "serve"), ms_per_event(cpu, floor, FLOOR)
    worker = [ms_per_event(cpu, phase, "worker") for phase in (service, floor)]
    handled = [ms_per_event(cpu, phase, "worker", "ms_per_processed") for phase in (service, floor)]
    per_message = f"; per message it handled {fmt(handled[0], 2)} vs {fmt(handled[1], 2)}"
    return [
        ("serve CPU ms / webhook vs floor CPU ms / event",
         f"{fmt(serve, 2)} vs {fmt(bare, 2)} ({fmt(ratio(serve, bare), 2)}x)", f"{cpu['mode']}, /proc"),
        ("worker CPU ms / event: service vs floor turns",
         f"{fmt(worker[0], 2)} vs {fmt(worker[1], 2)}" + (per_message if not math.isnan(handled[0]) else ""),
         "every process: CPU ms per event"),
    ]  # fmt: skip


def _config(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    keys = ("rate", "duration", "users", "seed", "spend_share", "floor_duration", "log_level")
    return {
        **{key: getattr(args, key) for key in keys},
        "worker": stack.worker_kind,
        "find_max": bool(args.find_max),
        "step_duration": args.step_duration,
        "step_factor": args.step_factor,
        "warmup": args.warmup,
        "worker_nice": args.worker_nice if stack.worker_kind == "pull" and stack.started else None,
        "pin": bool(getattr(args, "pin", False)),
    }


def _spends(args: argparse.Namespace, inv: InvariantReport, spend_run: dict[str, Any],
            s: dict[str, Any], fl: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    return {
        "share": args.spend_share,
        "run": spend_run,  # every turn, warm-up included, as the tool saw each outcome
        "checked": {  # after the re-reads, as the invariants checked them
            "attempted": inv.spends + inv.spends_refused,
            "succeeded": inv.spends,
            "refused": inv.spends_refused,
            "points_spent": inv.points_spent,
            "points_expired": inv.points_expired,
        },
        "service": s["spends"],
        "floor": fl["spends"] if fl else None,
        "inconsistent": spend_run.get("inconsistent", 0),
    }


def _figures(stack: Stack, m: Measured, verification: Verification, s: dict[str, Any],
             fl: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    measured = {d.planned.event_id for d in m.deliveries}
    processing = worker_processing_ms(stack.worker_logs, measured)
    timing = pipeline_timing(verification.records, measured)
    wall = m.service.wall_s
    return {
        "processing": processing,
        "timing": timing,
        "ratio": ratio(s["p95_ms"], fl["p95_ms"]) if fl else float("nan"),
        "proc_p95": percentile(processing, 95) if processing else float("nan"),
        "lag_p95": percentile(timing["lag_ms"], 95),
        "accepted_per_s": round(m.service.accepted_events / wall, 1) if wall else float("nan"),
    }


def build_result(
    args: argparse.Namespace, stack: Stack, started_at: str, m: Measured, verification: Verification,
    expectation: Expectation, rss: dict[str, Any], book: SpendBook, cpu: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    s = m.service.summary()
    fl = m.floor.summary() if m.floor is not None else None
    figures = _figures(stack, m, verification, s, fl)
    inv, timing, processing, lags = (
        verification.report,
        figures["timing"],
        figures["processing"],
        figures["timing"]["lag_ms"],
    )
    spend_run = book.summary()
    table = measures_table(args, m, s, fl, figures, verification, rss, spend_run)
    table[-1:-1] = _cpu_rows(cpu, m)  # before the invariants' verdict
    return {
        "started_at": started_at,
        "commit": commit(),
        "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "stack": ", ".join(stack.started) or f"existing at {stack.url}",
        "config": _config(args, stack),
        "service": s,
        "floor": fl,
        "answer_p95_over_floor": figures["ratio"],
        "processing_ms": {"count": len(processing), "p50": percentile(processing, 50),
                          "p95": figures["proc_p95"], "p99": percentile(processing, 99)},
        "lag_ms": {"count": len(lags), "p50": percentile(lags, 50), "p95": figures["lag_p95"],
                   "p99": percentile(lags, 99), "max": max(lags, default=float("nan"))},
        "throughput": {"achieved_send_rate": s["achieved_rate"], "accepted_per_s": figures["accepted_per_s"],
                       "worker_per_s": timing["worker_throughput"], "processed_by": timing["processed_by"]},
        "rss": rss,
        "cpu": cpu,
        "drain": {"drained": verification.drained, "seconds": round(verification.drain_s, 1),
                  "pending": dict(list(verification.pending.items())[:10])},
        "invariants": {**inv.to_dict(), "summary": inv.summary()},
        "spends": _spends(args, inv, spend_run, s, fl),
        "traffic": {
            "deliveries_by_label": dict(Counter(d.label for d in m.deliveries)),
            "spends_planned": len(m.spends),
            "events": len(expectation.events), "users": len(expectation.uids),
            "skipped": m.service.skipped + (m.floor.skipped if m.floor is not None else 0),
        },
        "find_max": m.find_max,
        "table": table,
        "method": METHOD,
        "logs": [str(p) for p in stack.worker_logs],
    }  # fmt: skip


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_reports(result: dict[str, Any], m: Measured, out: Path) -> Path:
    """`load-<time>.json`, `.md` and `.png` (and `-spends.png` when the app spent) in `out`; the .md."""
    out.mkdir(parents=True, exist_ok=True)
    stem = "load-" + time.strftime("%Y%m%d-%H%M%S") + ("-findmax" if result.get("find_max") else "")
    config = result["config"]
    title = f"Answer latency per second, {config['rate']:g}/s, {config['worker']} worker"
    pngs = write_plots(out / stem, m.service, m.floor, title)
    (out / f"{stem}.json").write_text(
        json.dumps(_clean(result), indent=1, default=str) + "\n", encoding="utf-8"
    )
    (out / f"{stem}.md").write_text(render_markdown(result, [p.name for p in pngs]), encoding="utf-8")
    return out / f"{stem}.md"
