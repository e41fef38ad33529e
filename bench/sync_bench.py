"""Sync mode (the rollback lever) at a fixed open-loop rate: `serve` with WEBHOOK_MODE=sync.

    python bench/sync_bench.py [--rate 100] [--duration 20] [--warmup 10] [--profile DIR] [--pin]

Starts both emulators on loopback, applies the topology and starts `paynow-service serve`
(WEBHOOK_MODE=sync, HTTP_ROUTES=webhook, LOG_LEVEL=INFO) as its own process. After an unmeasured
warm-up at the rate (the emulators' JVMs are much slower cold), signed, realistic
ON_ORDER_COMPLETED webhooks (`build_event`, one user per 6 events, as the load tool's traffic)
go out at the rate for the duration, each on its own schedule (open loop), signed as PayNow
signs them (`paynow_loadtest.webhook.signed_headers`) and sent over the load tool's lean
keep-alive client (the sender's own cost stays small). In sync mode each answer waits for the
event's record and its whole processing transaction.

Reports p50 / p95 / p99 of the answers, non-2xx and failed requests, how many measured events
Firestore holds as processed, and CPU ms per event of each process (the benchmark protocol's
`paynow_loadtest.cpu.CpuMeter`: serve, each emulator, this sender; `--pin` pins serve on CPU 0,
the emulators and the sender on CPU 1). The goal: p95 <= 250 ms and no non-2xx.

`--profile DIR`: py-spy (not a project dependency) records `serve` during the measured run
(raw stacks, DIR/serve.txt) and the top frames are printed. Bounded: each request has a
timeout; the script stops serve, py-spy and the emulators it started. Exit status 1 if the
goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from google.cloud import firestore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.benchlib import (  # noqa: E402
    add_pin_option,
    apply_topology,
    emulator_pids,
    open_loop,
    print_cpu,
    start_emulators,
)
from bench.processing_floor import EVENTS_PER_USER, MachineCpu, Profiler, print_profile, py_spy  # noqa: E402
from paynow_loadtest.cpu import SENDER, CpuMeter, Placement  # noqa: E402
from paynow_loadtest.lean_http import LeanClient  # noqa: E402
from paynow_loadtest.processes import ServiceProcess  # noqa: E402
from paynow_loadtest.results import percentile  # noqa: E402
from paynow_loadtest.webhook import WEBHOOK_PATH, encode, signed_headers  # noqa: E402
from paynow_service.adapters.emulators import free_port  # noqa: E402
from paynow_service.config import Settings  # noqa: E402
from paynow_service.sample_webhooks import build_event  # noqa: E402

SECRET = "pn-bench-secret"
SIGNING_KEY = "bench-event-signing-key-0123456789abcdef"
PRODUCT = "411486491630370816"
CATALOG = f'[products."{PRODUCT}"]\npoints = 500\n'
REQUEST_TIMEOUT_S = 30
GOAL_P95_MS = 250.0
PHASE = "sync"


def bodies(count: int, tag: str) -> tuple[list[bytes], list[str]]:
    """`count` order webhooks (one user per EVENTS_PER_USER of them) and their event ids."""
    users = max(20, round(count / EVENTS_PER_USER))
    events = [
        build_event("ON_ORDER_COMPLETED", uid=f"sync-{tag}-{i % users}", product_id=PRODUCT)
        for i in range(count)
    ]
    ids = [str(e["event_id"]) for e in events]
    return [encode(e) for e in events], ids


class Sender:
    def __init__(self, port: int) -> None:
        self.client = LeanClient(f"http://127.0.0.1:{port}")
        self.statuses: Counter[str] = Counter()
        self.timeline: list[tuple[float, float]] = []  # (seconds after the segment's start, ms) per answer

    async def segment(self, rate: float, duration: float, tag: str) -> tuple[list[float], int, list[str]]:
        payloads, ids = bodies(max(1, int(rate * duration)), tag)
        self.statuses = Counter()
        self.timeline = []
        began = time.perf_counter()

        async def one(i: int) -> bool:
            headers = signed_headers(SECRET, payloads[i])
            sent = time.perf_counter()
            try:
                status, _ = await self.client.request("POST", WEBHOOK_PATH, payloads[i], headers)
            except Exception as err:
                self.statuses[type(err).__name__] += 1
                raise
            self.statuses[str(status)] += 1
            self.timeline.append((sent - began, (time.perf_counter() - sent) * 1000))
            return 200 <= status < 300

        latencies, failures = await open_loop(rate, len(payloads), one, REQUEST_TIMEOUT_S)
        return latencies, failures, ids


async def processed_count(db: firestore.AsyncClient, ids: list[str]) -> int:
    done = 0
    for start in range(0, len(ids), 300):
        refs = [db.document("webhookEvents", i) for i in ids[start : start + 300]]
        async for snap in db.get_all(refs, timeout=REQUEST_TIMEOUT_S):
            done += int(snap.exists and (snap.to_dict() or {}).get("status") == "processed")
    return done


@dataclass
class SyncResult:
    latencies: list[float]
    statuses: dict[str, int]  # HTTP status, or the exception of a failed request: count
    sent: int
    elapsed_s: float
    cpu_per_event: dict[str, float]
    processed: int  # measured events Firestore holds as processed
    timeline: list[tuple[float, float]]  # (seconds after the start, ms) of each answer, by start
    busy_cores: float  # the machine's during the run
    others_cores: float  # of those, what serve, the sender and the emulators did not use


async def measure(
    settings: Settings, serve: ServiceProcess, meter: CpuMeter, args: argparse.Namespace
) -> SyncResult:
    assert serve.port is not None
    sender = Sender(serve.port)
    db = firestore.AsyncClient(project=settings.google_cloud_project)
    try:
        if args.warmup > 0:
            print(f"warm-up: {args.warmup:g} s at {args.rate:g}/s ...", file=sys.stderr, flush=True)
            with meter.turn(PHASE, SENDER, measured=False):
                await sender.segment(args.rate, args.warmup, "warm")
            await asyncio.sleep(1)
        profiler = Profiler(args.profile / "serve.txt", serve.process.pid) if args.profile else None
        machine = MachineCpu()
        try:
            with meter.turn(PHASE, SENDER) as turn:
                started = time.perf_counter()
                latencies, _, ids = await sender.segment(args.rate, args.duration, "run")
                elapsed = time.perf_counter() - started
                turn.record(latencies)
            machine.stop()
        finally:
            if profiler is not None:
                profiler.stop()
        phase = meter.phases[PHASE]
        cpu = {name: ms / phase.events for name, ms in phase.cpu_ms.items()}
        busy = machine.busy_cores()
        others = busy - sum(phase.cpu_ms.values()) / (phase.wall_s * 1000)
        processed = await processed_count(db, ids)
        return SyncResult(
            latencies,
            dict(sender.statuses),
            len(ids),
            elapsed,
            cpu,
            processed,
            sorted(sender.timeline),
            busy,
            others,
        )
    finally:
        sender.client.close()
        db.close()


def report(args: argparse.Namespace, r: SyncResult) -> bool:
    latencies, statuses, cpu, sent = r.latencies, r.statuses, r.cpu_per_event, r.sent
    two_xx = sum(v for k, v in statuses.items() if k.isdigit() and 200 <= int(k) < 300)
    non_2xx = sum(v for k, v in statuses.items() if k.isdigit() and not 200 <= int(k) < 300)
    errors = sent - two_xx - non_2xx
    p50, p95, p99 = statistics.median(latencies), percentile(latencies, 95), percentile(latencies, 99)
    print(
        f"\nSync mode (`serve`, WEBHOOK_MODE=sync): {args.rate:g}/s open loop for {args.duration:g} s after "
        f"{args.warmup:g} s of warm-up, one user per {EVENTS_PER_USER} events; both emulators, serve and "
        f"this sender on this machine ({os.cpu_count()} cores, shared; busy cores: the machine's during the "
        "run, and of them the ones serve, the sender and the emulators did not use)\n"
    )
    names = [n for n in ("serve", SENDER, "firestore", "pubsub") if n in cpu] + sorted(
        set(cpu) - {"serve", SENDER, "firestore", "pubsub"}
    )
    print("| requests | completed /s | p50 ms | p95 ms | p99 ms | non-2xx | failed requests | processed | "
          + " | ".join(f"CPU ms/event {n}" for n in names) + " | busy cores: all / others' |")  # fmt: skip
    print("|" + "---:|" * (9 + len(names)))
    cpu_cells = " | ".join(f"{float(cpu[n]):.2f}" for n in names)
    print(
        f"| {sent} | {len(latencies) / r.elapsed_s:.1f} | {p50:.1f} | {p95:.1f} | {p99:.1f} | {non_2xx} | "
        f"{errors} | {r.processed} | {cpu_cells} | {r.busy_cores:.2f} / {r.others_cores:.2f} |"
    )
    print(f"\nanswers: {', '.join(f'{k}: {v}' for k, v in sorted(statuses.items())) or 'none'}")
    seconds: dict[int, list[float]] = {}
    for at, ms in r.timeline:
        seconds.setdefault(int(at), []).append(ms)
    worst = sorted(seconds.items(), key=lambda item: -percentile(item[1], 95))[:3]
    cells = ", ".join(
        f"{second}-{second + 1} s: p95 {percentile(v, 95):.0f} ms, max {max(v):.0f} ms" for second, v in worst
    )
    print(f"slowest seconds of the run (by when the request was sent): {cells}")
    slow = sorted({int(at) for at, ms in r.timeline if ms > GOAL_P95_MS})
    over = sum(1 for _, ms in r.timeline if ms > GOAL_P95_MS)
    print(f"answers above {GOAL_P95_MS:g} ms: {over}, sent in {len(slow)} distinct seconds {slow[:12]}")
    ok = p95 <= GOAL_P95_MS and non_2xx == 0 and errors == 0
    print(
        f"\n- goal p95 <= {GOAL_P95_MS:g} ms and 0 non-2xx: {'met' if ok else 'MISSED'} "
        f"(p95 {p95:.1f} ms, {non_2xx} non-2xx, {errors} failed requests)"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100, help="webhooks per second (default 100)")
    parser.add_argument("--duration", type=float, default=20, help="measured seconds (default 20)")
    parser.add_argument("--warmup", type=float, default=10, help="unmeasured seconds first (default 10)")
    parser.add_argument("--profile", type=Path, help="py-spy serve during the measured run into this folder")
    add_pin_option(parser)
    args = parser.parse_args()
    placement = Placement.choose(args.pin, "sync_bench.py")
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0:
        parser.error("rate and duration must be positive, warmup at least 0")
    if args.profile is not None:
        if py_spy() is None:
            parser.error("--profile needs py-spy: .venv/bin/pip install py-spy (not a project dependency)")
        args.profile.mkdir(parents=True, exist_ok=True)
    stack, workdir, catalog = start_emulators("sync-bench-", CATALOG)
    port = free_port()
    env = {
        **stack.env(),
        "PAYNOW_WEBHOOK_SECRETS": SECRET,
        "EVENT_SIGNING_KEYS": SIGNING_KEY,
        "PRODUCT_CATALOG": str(catalog),
        "HTTP_ROUTES": "webhook",
        "LOG_LEVEL": "INFO",
        "WEBHOOK_MODE": "sync",
        "PORT": str(port),
    }
    settings = Settings.from_env(env)
    serve: ServiceProcess | None = None
    meter: CpuMeter | None = None
    try:
        apply_topology(settings)
        serve = ServiceProcess("serve", env, workdir, port=port).wait_ready()
        emulators = emulator_pids(stack)
        meter = CpuMeter({"serve": serve.process.pid}, emulators, placement)
        meter.pin()
        result = asyncio.run(measure(settings, serve, meter, args))
    finally:
        if serve is not None:
            serve.stop()
        stack.stop()
        if placement is not None:
            placement.restore()
    ok = report(args, result)
    print_cpu(meter, ROOT)
    if args.profile is not None:
        print_profile(args.profile / "serve.txt", f"serve (sync) at {args.rate:g}/s")
    print(f"\nlogs in {workdir}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
