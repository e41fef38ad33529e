"""Worker processing time and publish-to-processed lag at a fixed open-loop rate, beside a same-run floor.

    python bench/worker_bench.py [--rate 50] [--duration 30] [--block 10] [--warmup 10] [--users 500]
                                 [--two-read-floor] [--pin]

Starts both emulators on loopback, applies the topology (the design's values), and starts
the real `paynow-service worker` (streaming pull, LOG_LEVEL=INFO) as its own process.
After an unmeasured warm-up of each side (the emulators' JVMs are much slower cold), floor
and worker run in alternating blocks, so drift and the neighbours' load hit both alike.

worker: realistic ON_ORDER_COMPLETED PaymentEvents (`build_event` -> `parse_webhook` ->
`encode_event`, many distinct users, ordering key = uid), signed as the webhook signs them
(`event_mac`), are published straight to the topic with the GAPIC PublisherAsyncClient at a
fixed rate, each on its own schedule (open loop), and each publish time is recorded.
Processing time is the worker's own `processing_ms` ("Worker processed event successfully"
lines of its log). Lag is
`webhookEvents/{id}.processedAt` (read back from Firestore after the run) minus the
publish time, same machine clock; also shown: publish -> "Worker received message" (log
time) and publish -> commit (the document's update time).

floor: the same credit as one bare Firestore transaction from this process, plain async
client, no framework, at the same rate: read the event record, customer mapping, order,
user, wallet, ledgerKey and ledger entry in one batched read, then write the entry, the
key, the wallet (and the user on first sight), the order, the customer mapping and the
event marker with the service's fields. What it leaves out (the worker's second read
round trip, decoding, the rules, plugins, locks, Pub/Sub) is the worker's own cost.
`--two-read-floor` adds a floor that reads in the worker's two round trips.

CPU (the benchmark protocol, `paynow_loadtest.cpu`): the worker's, this process's (the publisher
in the worker's blocks, the floor in its own) and each emulator's, sampled at the start and end of
every measured block, printed as CPU ms per event beside the blocks' p50 / p95 (the floor's
transactions; the worker's `processing_ms`). `--pin`: the worker on CPU 0, the emulators and the
publisher on CPU 1, the floor on CPU 0 in its blocks.

Prints a Markdown table (p50 / p95 / p99, processing ratios to the floor) and the targets
of issue 5: processing p95 within 2x of the floor's and below 50 ms; lag p95 below 1 s.
Bounded: every publish and transaction has a timeout, the drain has a deadline, and it
stops the worker and the emulators it started. Exit status 1 if an event went missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.cloud import firestore
from google.pubsub_v1 import PublisherAsyncClient
from google.pubsub_v1.types import PubsubMessage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.benchlib import (  # noqa: E402
    LogTail,
    add_env_options,
    add_pin_option,
    apply_topology,
    emulator_pids,
    floor_entry,
    open_loop,
    print_cpu,
    service_env,
    start_emulators,
)
from paynow_loadtest.cpu import FLOOR, SENDER, CpuMeter, Placement  # noqa: E402
from paynow_loadtest.processes import ServiceProcess  # noqa: E402
from paynow_loadtest.results import percentile  # noqa: E402
from paynow_service.adapters.event_codec import encode_event  # noqa: E402
from paynow_service.config import Settings  # noqa: E402
from paynow_service.domain.events import PaymentEvent  # noqa: E402
from paynow_service.domain.paynow import parse_webhook  # noqa: E402
from paynow_service.domain.provenance import ATTR_EVENT_MAC, EventSigner  # noqa: E402
from paynow_service.sample_webhooks import build_event  # noqa: E402

PRODUCT = "411486491630370816"
POINTS = 500
CATALOG = f'[products."{PRODUCT}"]\npoints = {POINTS}\n'
OP_TIMEOUT_S = 30
# The worker credits only signed events: the bench publishes as the webhook does (EVENT_SIGNING_KEYS).
SIGNING_KEY = "bench-event-signing-key-0123456789abcdef"
PROCESSED = "Worker processed event successfully"
RECEIVED = "Worker received message"


def make_events(n: int, tag: str, users: int, first: int = 0) -> list[PaymentEvent]:
    """Realistic order events, parsed as the webhook would, for `users` distinct uids in turn.

    `first` continues the rotation across blocks, so a user's later orders find a wallet.
    """
    now_ms = int(time.time() * 1000)
    out = []
    for i in range(first, first + n):
        body = build_event("ON_ORDER_COMPLETED", uid=f"bench-{tag}-{i % users}", product_id=PRODUCT)
        out.append(parse_webhook(json.dumps(body).encode(), received_at_ms=now_ms, sent_at_ms=now_ms))
    return out


# ---------------------------------------------------------------------------------------------
# floor: the same credit as one bare transaction
# ---------------------------------------------------------------------------------------------


def floor_credit(db: firestore.AsyncClient, reads: int = 1) -> Callable[[PaymentEvent], Awaitable[None]]:
    """The credit as one transaction; `reads=2` splits the reads in two round trips as the worker does
    (event, customer, order; then user, wallet, key, entry), to show what the second one costs."""

    @firestore.async_transactional
    async def credit(tx: firestore.AsyncTransaction, event: PaymentEvent) -> None:
        assert event.order is not None
        uid, order, line = event.uid, event.order, event.order.lines[0]
        entry_id = f"paynow:order:{order.order_id}:line:{line.line_id}"
        refs = {
            "event": db.document("webhookEvents", event.event_id),
            "customer": db.document("paynowCustomers", event.customer_id),
            "order": db.document("paynowOrders", order.order_id),
            "user": db.document("users", uid),
            "wallet": db.document("users", uid, "wallet", "points"),
            "key": db.document("ledgerKeys", entry_id),
            "entry": db.document("users", uid, "ledger", entry_id),
        }
        names = {ref.path: name for name, ref in refs.items()}
        groups = [list(refs.values())] if reads == 1 else [list(refs.values())[:3], list(refs.values())[3:]]
        snaps = {}
        for group in groups:
            async for snap in db.get_all(group, transaction=tx, timeout=OP_TIMEOUT_S):
                snaps[names[snap.reference.path]] = snap
        if snaps["key"].exists or (snaps["event"].to_dict() or {}).get("status") == "processed":
            return
        wallet = snaps["wallet"].to_dict() if snaps["wallet"].exists else None
        pre = int((wallet or {}).get("paidBalance", 0))
        now = datetime.now(UTC)
        metadata = {"eventId": event.event_id, "orderId": order.order_id, "productId": PRODUCT,
                    "lineId": line.line_id, "quantity": line.quantity}  # fmt: skip
        tx.create(refs["entry"], floor_entry(uid, entry_id, POINTS, pre, now, metadata, "paynow"))
        tx.create(refs["key"], {
            "entryId": entry_id, "uid": uid, "amount": POINTS, "requestHash": "0" * 64, "action": "credit",
            "createdAt": now, "v": 1,
        })  # fmt: skip
        if not snaps["user"].exists:
            tx.create(refs["user"], {"uid": uid, "createdAt": now, "updatedAt": now, "status": "active"})
        balance = {"paidBalance": pre + POINTS, "promoBalance": 0, "updatedAt": now}
        if wallet is None:
            tx.create(refs["wallet"], {**balance, "promoLots": [], "createdAt": now, "v": 1})
        else:
            tx.update(refs["wallet"], balance)
        credits = [{"entryId": entry_id, "points": POINTS, "productId": PRODUCT}]
        tx.set(refs["order"], {
            "uid": uid, "customerId": event.customer_id, "eventId": event.event_id, "entryIds": [entry_id],
            "credits": credits, "points": POINTS, "status": "credited", "updatedAt": now,
        }, merge=True)  # fmt: skip
        tx.set(refs["customer"], {"uid": uid, "updatedAt": now}, merge=True)
        result = {"outcome": "credited", "uid": uid, "points": POINTS, "entryIds": [entry_id], "by": "floor"}
        tx.set(refs["event"], {
            "status": "processed", "processedAt": now, "attempts": 1, "failureReason": None, "result": result,
            "eventType": event.event_type, "orderingKey": uid, "receivedAt": now,
            "expiresAt": now + timedelta(days=30),
        }, merge=True)  # fmt: skip

    async def run(event: PaymentEvent) -> None:
        await credit(db.transaction(), event)

    return run


# ---------------------------------------------------------------------------------------------
# worker: publish at a fixed rate, read the worker's log and Firestore
# ---------------------------------------------------------------------------------------------


@dataclass
class WorkerRun:
    """Everything measured about the worker's events (ids are event ids)."""

    wanted: set[str] = field(default_factory=set)  # every event published so far, warm-up excluded
    published_at: dict[str, float] = field(default_factory=dict)  # confirmed ones: wall clock at publish
    publish_ms: list[float] = field(default_factory=list)
    publish_failures: int = 0
    processing_ms: dict[str, float] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)  # first "received" log time
    outcomes: Counter[str] = field(default_factory=Counter)
    processed_at: dict[str, float] = field(default_factory=dict)
    committed_at: dict[str, float] = field(default_factory=dict)
    drain_s: float = 0.0


def _absorb(run: WorkerRun, lines: list[dict[str, Any]], wanted: set[str]) -> None:
    for line in lines:
        event_id = line.get("event_id")
        if event_id not in wanted:
            continue
        message = line.get("message", "")
        if message == RECEIVED and event_id not in run.received_at:
            run.received_at[event_id] = datetime.fromisoformat(line["time"]).timestamp()
        elif message != RECEIVED:
            run.outcomes[message] += 1
            if message == PROCESSED and event_id not in run.processing_ms:
                run.processing_ms[event_id] = float(line["processing_ms"])


async def publish_all(
    publisher: PublisherAsyncClient,
    topic: str,
    events: list[PaymentEvent],
    rate: float,
    run: WorkerRun | None,
    signer: EventSigner,
) -> tuple[list[float], int]:
    messages = []
    for event in events:
        data, attributes = encode_event(event)
        attributes[ATTR_EVENT_MAC] = signer.sign(data)
        messages.append(
            PubsubMessage(data=data, attributes=attributes, ordering_key=event.resolved_ordering_key())
        )

    async def one(i: int) -> bool:
        sent = time.time()
        await publisher.publish(topic=topic, messages=[messages[i]], retry=None, timeout=10)
        if run is not None:  # only confirmed publishes are expected to arrive
            run.published_at[events[i].event_id] = sent
        return True

    return await open_loop(rate, len(events), one, OP_TIMEOUT_S)


async def wait_processed(tail: LogTail, run: WorkerRun, wanted: set[str], deadline_s: float) -> None:
    """Read the worker's log until every event of `wanted` was processed, or the deadline."""
    deadline = time.monotonic() + deadline_s
    _absorb(run, tail.lines(), run.wanted)
    while not wanted <= run.processing_ms.keys() and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        _absorb(run, tail.lines(), run.wanted)


async def read_markers(db: firestore.AsyncClient, run: WorkerRun) -> None:
    """processedAt and the commit time of every confirmed event, read back after the run."""
    ids = list(run.published_at)
    for start in range(0, len(ids), 300):
        refs = [db.document("webhookEvents", i) for i in ids[start : start + 300]]
        async for snap in db.get_all(refs, timeout=OP_TIMEOUT_S):
            data = snap.to_dict() or {}
            if snap.exists and data.get("status") == "processed" and data.get("processedAt"):
                run.processed_at[snap.id] = data["processedAt"].timestamp()
                run.committed_at[snap.id] = snap.update_time.timestamp()


@dataclass
class Clients:
    settings: Settings
    db: firestore.AsyncClient
    publisher: PublisherAsyncClient
    topic: str
    tail: LogTail
    worker: ServiceProcess
    drain_s: float
    cpu: CpuMeter  # a measured block's CPU per process ("warm-" blocks are not measured)


async def floor_block(
    c: Clients, rate: float, count: int, users: int, tag: str, first: int, reads: int = 1
) -> tuple[list[float], int]:
    events = make_events(count, tag, users, first)
    credit = floor_credit(c.db, reads)

    async def one(i: int) -> bool:
        await credit(events[i])
        return True

    with c.cpu.turn(tag, FLOOR, measured=not tag.startswith("warm-")) as turn:
        latencies, failures = await open_loop(rate, count, one, OP_TIMEOUT_S)
        turn.record(latencies)
    return latencies, failures


async def worker_block(
    c: Clients, run: WorkerRun, rate: float, count: int, users: int, tag: str, first: int
) -> None:
    """Publish `count` events at `rate` into `run`, then wait (bounded) until the worker logged them."""
    events = make_events(count, tag, users, first)
    wanted = {e.event_id for e in events}
    run.wanted |= wanted
    signer = EventSigner(c.settings.event_signing_keys)
    with c.cpu.turn(tag, SENDER, measured=not tag.startswith("warm-")) as turn:
        latencies, failures = await publish_all(c.publisher, c.topic, events, rate, run, signer)
        run.publish_ms += latencies
        run.publish_failures += failures
        drained_from = time.monotonic()
        await wait_processed(c.tail, run, wanted, c.drain_s)
        run.drain_s = max(run.drain_s, time.monotonic() - drained_from)
        turn.record([run.processing_ms[i] for i in wanted if i in run.processing_ms])  # per processed event
    if (code := c.worker.process.poll()) is not None:
        raise SystemExit(f"the worker exited with {code}; log: {c.worker.log_path}")


async def measure(
    settings: Settings, worker: ServiceProcess, args: argparse.Namespace, cpu: CpuMeter
) -> tuple[list[float], int, list[float], WorkerRun]:
    """Warm-up (unmeasured), then floor and worker blocks in turn, so drift hits both alike."""
    c = Clients(
        settings=settings,
        db=firestore.AsyncClient(project=settings.google_cloud_project),
        publisher=PublisherAsyncClient(),
        topic=settings.topic_path(settings.pubsub_topic),
        tail=LogTail(worker.log_path),
        worker=worker,
        drain_s=args.drain,
        cpu=cpu,
    )
    floor: list[float] = []
    floor_failures = 0
    floor2: list[float] = []  # --two-read-floor
    run = WorkerRun()
    try:
        warm = int(args.rate * args.warmup)
        if warm:
            print(f"warm-up: {args.warmup:g} s of each ...", file=sys.stderr, flush=True)
            await floor_block(c, args.rate, warm, args.users, "warm-floor", 0)
            warm_run = WorkerRun()
            await worker_block(c, warm_run, args.rate, warm, args.users, "warm-worker", 0)
            if len(warm_run.processing_ms) < len(warm_run.wanted):
                raise SystemExit(f"the worker did not process the warm-up; log: {worker.log_path}")
        per_block = int(args.rate * args.block)
        total = int(args.rate * args.duration)
        done = 0
        while done < total:
            size = min(per_block, total - done)
            latencies, failures = await floor_block(c, args.rate, size, args.users, "floor", done)
            floor += latencies
            floor_failures += failures
            if args.two_read_floor:
                latencies, failures = await floor_block(c, args.rate, size, args.users, "floor2", done, 2)
                floor2 += latencies
                floor_failures += failures
            await worker_block(c, run, args.rate, size, args.users, "worker", done)
            done += size
            print(f"  {done}/{total} events per side", file=sys.stderr, flush=True)
        await read_markers(c.db, run)
    finally:
        await c.publisher.transport.close()
        c.db.close()
    return floor, floor_failures, floor2, run


def lags(run: WorkerRun, after: dict[str, float]) -> list[float]:
    return [(after[i] - t) * 1000 for i, t in run.published_at.items() if i in after]


def wait_log(worker: ServiceProcess, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in worker.logs():
            return
        if worker.process.poll() is not None:
            break
        time.sleep(0.2)
    raise SystemExit(f"the worker did not log {text!r}:\n{worker.logs()[-3000:]}")


def row(name: str, values: list[float], floor: tuple[float, float] | None) -> str:
    p50, p95 = statistics.median(values) if values else float("nan"), percentile(values, 95)
    ratios = f"{p50 / floor[0]:.2f}x | {p95 / floor[1]:.2f}x" if floor else "- | -"
    return f"| {name} | {len(values)} | {p50:.1f} | {p95:.1f} | {percentile(values, 99):.1f} | {ratios} |"


def report(
    args: argparse.Namespace, floor: list[float], floor_failures: int, floor2: list[float], run: WorkerRun
) -> None:
    base = (statistics.median(floor), percentile(floor, 95)) if floor else None
    processing = list(run.processing_ms.values())
    print(
        f"\nWorker, {args.rate:g}/s open loop for {args.duration:g} s per side in interleaved blocks of "
        f"{args.block:g} s after {args.warmup:g} s of warm-up each, {args.users} users (one run; both "
        "emulators, the worker and this publisher on this machine)\n"
    )
    print("| measure | n | p50 ms | p95 ms | p99 ms | p50 / floor | p95 / floor |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(row("floor: the same credit as one bare transaction", floor, base))
    if floor2:
        print(row("floor with the worker's two read round trips", floor2, base))
    print(row("worker `processing_ms`", processing, base))
    print(row("lag: publish -> worker received (its log)", lags(run, run.received_at), None))
    print(row("lag: publish -> `processedAt`", lags(run, run.processed_at), None))
    print(row("lag: publish -> commit (document update time)", lags(run, run.committed_at), None))
    print(row("publish call (GAPIC; for reference)", run.publish_ms, None))
    missing = len(run.published_at) - len(run.processed_at)
    outcomes = ", ".join(f"{k!r}: {v}" for k, v in sorted(run.outcomes.items()))
    print(
        f"\nfloor: {len(floor) + len(floor2)} transactions, {floor_failures} failed. "
        f"worker: {len(run.published_at)} published ({run.publish_failures} publish failures), "
        f"{len(run.processed_at)} processed in Firestore, {missing} missing; "
        f"slowest drain {run.drain_s:.1f} s after a block's last publish; worker log: {outcomes}"
    )
    if base is None or not processing:
        return
    p95, lag95 = percentile(processing, 95), percentile(lags(run, run.processed_at), 95)
    checks = [
        (
            f"processing p95 within 2x of the floor's ({p95:.1f} ms vs 2 x {base[1]:.1f} ms)",
            p95 <= 2 * base[1],
        ),
        (f"processing p95 below 50 ms ({p95:.1f} ms)", p95 < 50),
        (f"lag p95 (publish -> processedAt) below 1 s ({lag95:.0f} ms)", lag95 < 1000),
    ]
    print("\nTargets (issue 5):\n")
    for text, ok in checks:
        print(f"- {'met' if ok else 'MISSED'}: {text}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50, help="events per second (default 50)")
    parser.add_argument("--duration", type=float, default=30, help="measured seconds per side (default 30)")
    parser.add_argument("--block", type=float, default=10, help="seconds per interleaved block (default 10)")
    parser.add_argument("--warmup", type=float, default=10, help="unmeasured seconds per side first (10)")
    parser.add_argument("--users", type=int, default=500, help="distinct users, in turn (default 500)")
    parser.add_argument(
        "--two-read-floor", action="store_true", help="also a floor with two read round trips, as the worker"
    )
    parser.add_argument("--drain", type=float, default=120, help="seconds to wait for a block's events (120)")
    add_pin_option(parser)
    add_env_options(parser)
    args = parser.parse_args()
    if args.rate <= 0 or args.duration <= 0 or args.block <= 0 or args.users < 1 or args.warmup < 0:
        parser.error("rate, duration, block and users must be positive, warmup at least 0")
    return args


def main() -> int:
    args = parse_args()
    placement = Placement.choose(args.pin, "worker_bench")  # before anything starts: exits 2 if it cannot
    stack, workdir, catalog = start_emulators("worker-bench-", CATALOG)
    env = {
        **stack.env(),
        "PRODUCT_CATALOG": str(catalog),
        "LOG_LEVEL": "INFO",
        "EVENT_SIGNING_KEYS": SIGNING_KEY,
        **service_env(args, workdir),
    }
    settings = Settings.from_env(env)
    worker: ServiceProcess | None = None
    try:
        apply_topology(settings)
        worker = ServiceProcess("worker", env, workdir)
        emulators = emulator_pids(stack)
        cpu = CpuMeter({"worker": worker.process.pid}, emulators, placement)
        cpu.pin()
        wait_log(worker, "Worker pulling", 40)
        print(f"running: {args.rate:g}/s, {args.duration:g} s per side", file=sys.stderr, flush=True)
        floor, floor_failures, floor2, run = asyncio.run(measure(settings, worker, args, cpu))
    finally:
        if worker is not None:
            worker.stop()
        stack.stop()
        if placement is not None:
            placement.restore()
    report(args, floor, floor_failures, floor2, run)
    print_cpu(cpu, ROOT)
    print(f"\ntracing: {args.tracing}", *args.env)
    print(f"\nlogs in {workdir}", file=sys.stderr)
    return 1 if len(run.processed_at) < len(run.published_at) else 0


if __name__ == "__main__":
    sys.exit(main())
