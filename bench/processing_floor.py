"""Processing capacity: one order's transaction as a bare script (the floor) and the real pull worker,
at rising open-loop rates, with CPU per event of every process.

    python bench/processing_floor.py [--rates 25,50,100,200] [--duration 10] [--warmup 10]
                                     [--sides floor,worker] [--floor-p95-ms 250] [--worker-p95-ms 1000]
                                     [--drain 60] [--profile DIR [--profile-idle]] [--pull-mode unary]
                                     [--pin]

Starts both emulators on loopback, applies the topology and starts `paynow-service worker`
(WORKER_PULL_MODE=unary unless --pull-mode says otherwise, LOG_LEVEL=INFO) as its own process.
After an unmeasured warm-up of each side at the first rate, each rate is offered to the floor,
then to the worker, so the machine's drift hits both alike. Every step uses its own users (one
per 6 events, as the load tool's traffic: many users, a few orders each; a user's first order
creates the wallet).

floor: the processor's unit of work for one ON_ORDER_COMPLETED event with the raw async client,
no framework, plugins, pluggy nor Pub/Sub: the reads of `FirestoreProcessor._read_state`
(webhookEvents/{id}, paynowCustomers/{customer}, paynowOrders/{order}) in one round trip, then
those of `FirestoreLedger.read_phase` (users/{uid}, its wallet, ledgerKeys/{entry}, its ledger
entry) in a second, then the writes of `write_phase` and `_apply` with the service's fields:
the user on first sight, the wallet, the entry, the key, the order, the customer mapping and the
event marker. As `FirestoreTransactions` runs it: under an in-process lock on the ordering key
(the user), each attempt a fresh transaction with one commit try, contention (Aborted, a lost
create) retried with the service's backoff, and counted.
What it leaves out (decoding, `decide` and its plugins, the MAC, Pub/Sub, logs, metrics) is the
worker's own cost. tests/unit/test_processing_floor.py keeps its reads and writes equal to
the processor's.

worker: the same events, signed as the webhook signs them, published straight to the topic at
the rate (bench/worker_bench.py's publisher and log reader); a step ends when the worker logged
every event, or after `--drain` s. Its latency is publish -> commit (the marker's update time);
its processing time (`processing_ms` of its log) is shown beside it.

Per step: events offered and done, the achieved rate (done / (last completion - first start)),
p50 / p95 / p99, errors and contention retries, and the CPU ms per event of each process (the
benchmark protocol's `paynow_loadtest.cpu.CpuMeter`: utime + stime from /proc at the start and end
of each measured step; the worker, this script as the floor or as the publisher ("sender"), each
emulator; its table follows, where a worker step's p50 / p95 are the worker's processing_ms). `--pin`
pins as the protocol does (the worker and, in its steps, the floor on CPU 0; the emulators and the
publisher on CPU 1). A rate is sustained when the achieved rate is at least 95% of the offered
one, p95 is within the side's bound and nothing failed; the sustained rate is the highest rate
sustained (a lower one missed is listed: on a shared machine, mostly a neighbour's burst, which
the busy cores show). The goal: worker / floor >= 0.8. The worker's ladder stops at a step that
leaves events behind (its backlog would be the next step's load).

`--profile DIR`: py-spy (pip install py-spy; not a project dependency) records the worker during
each measured worker step (raw stacks, DIR/worker-RATE.txt) and the top frames are printed;
`--profile-idle` samples idle threads too (where each thread spends its wall time).
Bounded: each transaction and publish has a timeout, each drain a deadline; the script stops
the worker, py-spy and the emulators it started. Exit status 1 if a worker event went missing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.cloud import firestore
from google.pubsub_v1 import PublisherAsyncClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.benchlib import (  # noqa: E402
    LogTail,
    add_pin_option,
    apply_topology,
    emulator_pids,
    open_loop,
    print_cpu,
    start_emulators,
)
from bench.worker_bench import (  # noqa: E402
    CATALOG,
    POINTS,
    SIGNING_KEY,
    WorkerRun,
    make_events,
    publish_all,
    read_markers,
    wait_log,
    wait_processed,
)
from paynow_loadtest.cpu import FLOOR, SENDER, CpuMeter, Placement  # noqa: E402
from paynow_loadtest.processes import ServiceProcess  # noqa: E402
from paynow_loadtest.results import percentile  # noqa: E402
from paynow_service.adapters.emulators import EmulatorStack  # noqa: E402
from paynow_service.adapters.firestore_transactions import is_contention  # noqa: E402
from paynow_service.config import Settings  # noqa: E402
from paynow_service.domain.events import PaymentEvent  # noqa: E402
from paynow_service.domain.provenance import EventSigner  # noqa: E402

OP_TIMEOUT_S = 30
# The service's transaction policy (adapters/firestore_transactions.py): attempts and backoff.
MAX_ATTEMPTS = 8
BACKOFF_BASE_S = 0.02
BACKOFF_CAP_S = 1.0
TTL = dt.timedelta(days=30)  # WEBHOOK_EVENT_TTL_DAYS' default
COMPONENT = "processing_floor"
SUSTAINED_SHARE = 0.95
EVENTS_PER_USER = 6  # the load tool's traffic: one user per 6 deliveries


# ---------------------------------------------------------------------------------------------
# the floor: one order's transaction, as FirestoreProcessor does it
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderCredit:
    """What the floor needs of an ON_ORDER_COMPLETED event with one credited line."""

    event_id: str
    event_type: str
    ordering_key: str
    uid: str
    customer_id: str
    order_id: str
    line_id: str
    product_id: str
    quantity: int
    points: int

    @classmethod
    def of(cls, event: PaymentEvent, points: int) -> OrderCredit:
        assert event.order is not None
        assert event.uid
        assert event.customer_id
        line = event.order.lines[0]
        return cls(
            event_id=event.event_id,
            event_type=event.event_type,
            ordering_key=event.resolved_ordering_key(),
            uid=event.uid,
            customer_id=event.customer_id,
            order_id=event.order.order_id,
            line_id=line.line_id,
            product_id=line.product_id,
            quantity=line.quantity,
            points=points,
        )

    @property
    def entry_id(self) -> str:
        return f"paynow:order:{self.order_id}:line:{self.line_id}"


def state_refs(db: Any, c: OrderCredit) -> list[Any]:
    """The first round trip (`FirestoreProcessor._read_state`): the event, the mapping, the order."""
    return [
        db.document("webhookEvents", c.event_id),
        db.document("paynowCustomers", c.customer_id),
        db.document("paynowOrders", c.order_id),
    ]


def ledger_refs(db: Any, c: OrderCredit) -> list[Any]:
    """The second (`FirestoreLedger.read_phase`): the user, the wallet, the key, the entry."""
    return [
        db.document("users", c.uid),
        db.document("users", c.uid, "wallet", "points"),
        db.document("ledgerKeys", c.entry_id),
        db.document("users", c.uid, "ledger", c.entry_id),
    ]


async def _read(db: Any, tx: Any, refs: list[Any]) -> list[dict[str, Any] | None]:
    """Each reference's document in one batched read (the client's get_all, in `tx`), None if absent."""
    snaps = {
        snap.reference.path: snap async for snap in db.get_all(refs, transaction=tx, timeout=OP_TIMEOUT_S)
    }
    found = [snaps.get(ref.path) for ref in refs]
    return [(snap.to_dict() or {}) if snap is not None and snap.exists else None for snap in found]


async def credit_in(tx: Any, db: Any, c: OrderCredit) -> str:
    """One order credited in transaction `tx`: the processor's reads, then its writes. Returns
    "credited", or "duplicate" (the event processed, or its entry there: nothing written)."""
    event_doc, customer_doc, _order_doc = await _read(db, tx, state_refs(db, c))
    if (event_doc or {}).get("status") in ("processed", "ignored", "parked"):
        return "duplicate"
    user_doc, wallet_doc, key_doc, entry_doc = await _read(db, tx, ledger_refs(db, c))
    if key_doc is not None or entry_doc is not None:
        return "duplicate"
    # ---- every read is done; writes only from here ----
    event_ref, customer_ref, order_ref = state_refs(db, c)
    user_ref, wallet_ref, key_ref, entry_ref = ledger_refs(db, c)
    now = dt.datetime.now(dt.UTC)
    lots = list((wallet_doc or {}).get("promoLots") or [])
    promo = sum(int(lot.get("amountRemaining") or 0) for lot in lots if isinstance(lot, dict))
    paid = int((wallet_doc or {}).get("paidBalance") or 0)
    if user_doc is None:
        tx.create(user_ref, {"uid": c.uid, "createdAt": now, "updatedAt": now, "status": "active"})
    wallet = {"paidBalance": paid + c.points, "promoBalance": promo, "promoLots": lots, "updatedAt": now}
    if wallet_doc is None:
        tx.create(wallet_ref, {**wallet, "createdAt": now, "v": 1})
    else:
        tx.update(wallet_ref, wallet)
    pre, post = {"paid": paid, "promo": promo}, {"paid": paid + c.points, "promo": promo}
    metadata = {"eventId": c.event_id, "orderId": c.order_id, "productId": c.product_id,
                "lineId": c.line_id, "quantity": c.quantity}  # fmt: skip
    tx.create(entry_ref, {
        "uid": c.uid, "amount": c.points, "type": "credit", "channel": "paid", "action": "paynow.order",
        "actionId": c.entry_id, "source": "paynow", "note": f"order {c.order_id}", "metadata": metadata,
        "createdAt": now, "createdBy": "paynow-service", "v": 1, "pre": pre, "post": post, "after": post,
        "delta": {"paid": c.points, "promo": 0},
    })  # fmt: skip
    digest = hashlib.sha256(f"{c.uid}|{c.entry_id}|credit|{c.points}".encode()).hexdigest()
    tx.create(key_ref, {
        "entryId": c.entry_id, "uid": c.uid, "amount": c.points, "requestHash": digest, "action": "credit",
        "createdAt": now, "v": 1,
    })  # fmt: skip
    credits = [{"entryId": c.entry_id, "points": c.points, "productId": c.product_id}]
    tx.set(order_ref, {
        "uid": c.uid, "customerId": c.customer_id, "eventId": c.event_id, "entryIds": [c.entry_id],
        "credits": credits, "points": c.points, "generation": 0, "reversals": {}, "reversed": [],
        "reversedBy": "", "status": "credited", "refunds": {}, "refundAmounts": {}, "chargebacks": {},
        "updatedAt": now,
    }, merge=True)  # fmt: skip
    if (customer_doc or {}).get("uid") != c.uid:
        tx.set(customer_ref, {"uid": c.uid, "updatedAt": now}, merge=True)
    result = {
        "outcome": "credited",
        "uid": c.uid,
        "points": c.points,
        "entryIds": [c.entry_id],
        "by": COMPONENT,
    }
    attempts = int((event_doc or {}).get("attempts") or 0) + 1
    marker: dict[str, Any] = {
        "status": "processed", "processedAt": now, "attempts": attempts, "failureReason": None,
        "result": result,
    }  # fmt: skip
    if event_doc is None:  # published without an ingest record (as here): the marker is the record
        marker |= {"eventType": c.event_type, "orderingKey": c.ordering_key, "orderId": c.order_id,
                   "customerId": c.customer_id, "receivedAt": now, "expiresAt": now + TTL}  # fmt: skip
    tx.set(event_ref, marker, merge=True)
    return "credited"


class Floor:
    """Runs `credit_in` as the service runs its transactions: holding an in-process lock on the
    event's ordering key (its user: one user's transactions never abort each other on the
    emulator's pessimistic locks), a fresh transaction per attempt, one commit try each,
    contention retried with jittered exponential backoff."""

    def __init__(self, db: firestore.AsyncClient) -> None:
        self.db = db
        self.retries = 0
        self.outcomes: Counter[str] = Counter()
        self._credit = firestore.async_transactional(credit_in)
        self._locks: dict[str, asyncio.Lock] = {}

    async def credit(self, c: OrderCredit) -> None:
        async with self._locks.setdefault(c.ordering_key, asyncio.Lock()):
            await self._attempts(c)

    async def _attempts(self, c: OrderCredit) -> None:
        for attempt in range(MAX_ATTEMPTS):
            try:
                self.outcomes[await self._credit(self.db.transaction(max_attempts=1), self.db, c)] += 1
                return
            except Exception as exc:
                if not is_contention(exc) or attempt == MAX_ATTEMPTS - 1:
                    self.outcomes[type(exc).__name__] += 1
                    raise
                self.retries += 1
            await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)))


# ---------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------


class MachineCpu:
    """The whole machine's busy CPU between construction and `stop`, in cores, from /proc/stat (the
    machine is shared: what the measured processes did not use is the neighbours')."""

    def __init__(self) -> None:
        self._start = self._read()
        self._end = self._start

    @staticmethod
    def _read() -> tuple[int, int]:
        """(busy, total) jiffies of all CPUs."""
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        except (OSError, ValueError):
            return 0, 0
        return sum(values) - values[3] - values[4], sum(values)  # idle and iowait are not busy

    def stop(self) -> None:
        self._end = self._read()

    def busy_cores(self) -> float:
        busy, total = (e - s for e, s in zip(self._end, self._start, strict=True))
        return busy / total * (os.cpu_count() or 1) if total > 0 else float("nan")


@dataclass
class Step:
    """One side at one offered rate."""

    side: str
    rate: float
    offered: int
    done: int = 0
    errors: int = 0
    retries: int = 0
    elapsed_s: float = float("nan")  # first start -> last completion
    latencies_ms: list[float] = field(default_factory=list)
    processing_ms: list[float] = field(default_factory=list)  # the worker's own, from its log
    cpu_per_event: dict[str, float] = field(default_factory=dict)
    busy_cores: float = float("nan")  # the whole machine's, during the step
    others_cores: float = float("nan")  # of those, what the measured processes did not use
    notes: str = ""

    @property
    def achieved(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else float("nan")

    def sustained(self, p95_bound_ms: float) -> bool:
        p95 = percentile(self.latencies_ms, 95)
        return self.achieved >= SUSTAINED_SHARE * self.rate and p95 <= p95_bound_ms and not self.errors


def users_for(count: int) -> int:
    return max(20, round(count / EVENTS_PER_USER))


@dataclass
class Bench:
    settings: Settings
    db: firestore.AsyncClient
    publisher: PublisherAsyncClient
    topic: str
    tail: LogTail
    worker: ServiceProcess
    stack: EmulatorStack
    drain_s: float
    profile_dir: Path | None
    idle: bool  # py-spy samples idle threads too (where the threads wait: wall time)
    meter: CpuMeter

    def cpu_of(self, phase: str, step: Step, machine: MachineCpu) -> None:
        """The step's CPU ms per event of each process (the shared meter's phase: one turn) and the
        machine's busy cores beside the share the measured processes did not use."""
        p = self.meter.phases.get(phase)
        if p is None or not p.events:
            return
        step.cpu_per_event = {name: ms / p.events for name, ms in p.cpu_ms.items()}
        step.busy_cores = machine.busy_cores()
        step.others_cores = step.busy_cores - sum(p.cpu_ms.values()) / (p.wall_s * 1000)

    async def floor_step(self, rate: float, duration: float, tag: str, *, measured: bool = True) -> Step:
        count = max(1, int(rate * duration))
        credits = [OrderCredit.of(e, POINTS) for e in make_events(count, tag, users_for(count))]
        floor = Floor(self.db)

        async def one(i: int) -> bool:
            await floor.credit(credits[i])
            return True

        phase = f"floor {rate:g}/s"
        machine = MachineCpu()
        with self.meter.turn(phase, FLOOR, measured=measured) as turn:
            started = time.perf_counter()
            latencies, failures = await open_loop(rate, count, one, OP_TIMEOUT_S)
            elapsed = time.perf_counter() - started
            turn.record(latencies, events=count)
        machine.stop()
        step = Step("floor", rate, count, count - failures, failures, floor.retries, elapsed, latencies)
        self.cpu_of(phase, step, machine)
        other = {k: v for k, v in floor.outcomes.items() if k != "credited"}
        step.notes = ", ".join(f"{k}: {v}" for k, v in sorted(other.items()))
        return step

    async def worker_step(
        self, rate: float, duration: float, tag: str, profile: str = "", *, measured: bool = True
    ) -> Step:
        count = max(1, int(rate * duration))
        events = make_events(count, tag, users_for(count))
        run = WorkerRun()
        run.wanted = {e.event_id for e in events}
        signer = EventSigner(self.settings.event_signing_keys)
        profiler = None
        if profile and self.profile_dir is not None:
            profiler = Profiler(self.profile_dir / f"{profile}.txt", self.worker.process.pid, idle=self.idle)
        phase = f"worker {rate:g}/s"
        machine = MachineCpu()
        try:
            # The turn's latencies are the worker's processing_ms (the lags are read after it).
            with self.meter.turn(phase, SENDER, measured=measured) as turn:
                _, publish_failures = await publish_all(self.publisher, self.topic, events, rate, run, signer)
                await wait_processed(self.tail, run, run.wanted, self.drain_s)
                turn.record(list(run.processing_ms.values()), events=count)
            machine.stop()
        finally:
            if profiler is not None:
                profiler.stop()
        step = Step("worker", rate, count)
        self.cpu_of(phase, step, machine)
        if (code := self.worker.process.poll()) is not None:
            raise SystemExit(f"the worker exited with {code}; log: {self.worker.log_path}")
        await read_markers(self.db, run)
        step.done = len(run.committed_at)
        step.errors = count - step.done
        if run.committed_at:
            step.elapsed_s = max(run.committed_at.values()) - min(run.published_at.values())
        step.latencies_ms = [
            (run.committed_at[i] - t) * 1000 for i, t in run.published_at.items() if i in run.committed_at
        ]
        step.processing_ms = list(run.processing_ms.values())
        step.retries = run.outcomes["Transient failure - will retry"]
        other = {k: v for k, v in run.outcomes.items() if k != "Worker processed event successfully"}
        if publish_failures:
            other["publish failures"] = publish_failures
        step.notes = ", ".join(f"{k}: {v}" for k, v in sorted(other.items()))
        return step


# ---------------------------------------------------------------------------------------------
# py-spy (optional; never a project dependency)
# ---------------------------------------------------------------------------------------------


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """`py-spy record` of one process (raw stacks, every thread) until `stop`."""

    def __init__(self, out: Path, pid: int, rate: int = 100, *, idle: bool = False) -> None:
        exe = py_spy()
        if exe is None:
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.out = out
        self._log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 (closed in stop)
        cmd = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--threads"]
        cmd += ["--idle"] if idle else []
        self.process = subprocess.Popen(
            [*cmd, "--nonblocking", "-o", str(out)], stdout=self._log, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def _frame(frame: str) -> tuple[str, str]:
    """`func (path:line)` as (`func (short path)`, its package): the line dropped, the path shortened
    to what follows site-packages/, the checkout or the standard library's folder."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", f"{ROOT}/", "lib/python3.11/", "lib/python3.12/", "lib/python3.13/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    package = path.split("/", 1)[0].removesuffix(".py")  # py-spy already shortens installed packages' paths
    return (f"{name} ({path})" if path else name), package or "?"


@dataclass
class Profile:
    """py-spy's raw stacks added up: samples per thread, per leaf frame and package (own time), and
    per frame of the service's own code (total time: the frame and what it calls)."""

    samples: int = 0
    threads: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)
    packages: Counter[str] = field(default_factory=Counter)
    service: Counter[str] = field(default_factory=Counter)

    @classmethod
    def read(cls, path: Path) -> Profile:
        p = cls()
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            p.samples += count
            p.threads[frames[0].split(": ", 1)[-1]] += count  # with --threads: "thread (tid): name"
            leaf, package = _frame(frames[-1]) if len(frames) > 1 else ("(no Python frame)", "-")
            p.own[leaf] += count
            p.packages[package] += count
            for name in {f for f, pkg in map(_frame, frames[1:]) if pkg == "paynow_service"}:
                p.service[name] += count
        return p


def print_profile(path: Path, title: str, n: int = 15) -> None:
    if not path.exists():
        print(f"\n(no profile at {path}: see {path.with_suffix('.log')})")
        return
    p = Profile.read(path)

    def rows(head: str, counter: Counter[str], k: int) -> None:
        print(f"\n| {head} | share |\n|---|---:|")
        for name, count in counter.most_common(k):
            print(f"| `{name}` | {100 * count / max(p.samples, 1):.1f}% |")

    print(f"\n{title}: {p.samples} samples (py-spy) in {path}")
    rows("thread", p.threads, 6)
    rows("own time: package", p.packages, 12)
    rows("own time: frame", p.own, n)
    rows("total time: the service's frames", p.service, n)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN


CPU_ORDER = ("worker", FLOOR, SENDER, "firestore", "pubsub")


def table(steps: Sequence[Step], bound_ms: float, latency: str) -> None:
    seen = {name for s in steps for name in s.cpu_per_event}
    names = [n for n in CPU_ORDER if n in seen] + sorted(seen - set(CPU_ORDER))
    cpu_head = " | ".join(f"CPU ms/event {n}" for n in [*names, "all"]) + " | busy cores: all / others'"
    extra = " | worker processing p50 / p95 ms" if any(s.processing_ms for s in steps) else ""
    print(f"| offered /s | events | done | achieved /s | {latency} p50 | p95 | p99 | errors | retries |"
          f" sustained | {cpu_head}{extra} | notes |")  # fmt: skip
    print("|" + "---:|" * (12 + len(names) + bool(extra)) + "---|")
    for s in steps:
        lat = s.latencies_ms
        cells = [s.cpu_per_event.get(n, float("nan")) for n in names]
        cpu = " | ".join(fmt(v, 2) for v in [*cells, sum(s.cpu_per_event.values()) or float("nan")])
        cpu += f" | {fmt(s.busy_cores, 2)} / {fmt(s.others_cores, 2)}"
        proc = ""
        if extra:
            proc = f" | {fmt(statistics.median(s.processing_ms)) if s.processing_ms else 'n/a'} / "
            proc += fmt(percentile(s.processing_ms, 95))
        median = statistics.median(lat) if lat else float("nan")
        print(
            f"| {s.rate:g} | {s.offered} | {s.done} | {fmt(s.achieved)} | {fmt(median)} | "
            f"{fmt(percentile(lat, 95))} | {fmt(percentile(lat, 99))} | {s.errors} | {s.retries} | "
            f"{'yes' if s.sustained(bound_ms) else 'NO'} | {cpu}{proc} | {s.notes or '-'} |"
        )


def sustained_rate(steps: Sequence[Step], bound_ms: float) -> tuple[float, list[Step]]:
    """The highest rate sustained (0: none), and the lower rates that were not (on a shared machine,
    mostly a neighbour's burst: see their busy cores)."""
    best = max((s.rate for s in steps if s.sustained(bound_ms)), default=0.0)
    return best, [s for s in steps if s.rate < best and not s.sustained(bound_ms)]


def _missed(below: list[Step]) -> str:
    if not below:
        return ""
    steps = ", ".join(f"{s.rate:g}/s (others' busy cores {fmt(s.others_cores, 2)})" for s in below)
    return f"; not sustained below it: {steps}"


def report(args: argparse.Namespace, floor: list[Step], worker: list[Step]) -> None:
    print(
        f"\nProcessing capacity: open loop, {args.duration:g} s per rate and side after {args.warmup:g} s of "
        f"warm-up each, one user per {EVENTS_PER_USER} events; both emulators, the worker and this script "
        f"on this machine ({os.cpu_count()} cores, shared). Sustained: achieved >= "
        f"{SUSTAINED_SHARE:.0%} of offered, p95 within the bound, no errors. Busy cores: the machine's "
        "during the step, and of them the ones the measured processes did not use (other work on it).\n"
    )
    if floor:
        print(f"Floor: one bare transaction per event (p95 bound {args.floor_p95_ms:g} ms)\n")
        table(floor, args.floor_p95_ms, "txn ms")
    if worker:
        print(
            f"\nWorker (WORKER_PULL_MODE={args.pull_mode}): publish -> commit "
            f"(p95 bound {args.worker_p95_ms:g} ms)\n"
        )
        table(worker, args.worker_p95_ms, "lag ms")
    f_rate, f_missed = sustained_rate(floor, args.floor_p95_ms) if floor else (float("nan"), [])
    w_rate, w_missed = sustained_rate(worker, args.worker_p95_ms) if worker else (float("nan"), [])
    print(f"\n- floor sustained rate: {fmt(f_rate, 0)}/s (of {args.rates}){_missed(f_missed)}")
    print(f"- worker sustained rate: {fmt(w_rate, 0)}/s{_missed(w_missed)}")
    if floor and worker:
        ratio = w_rate / f_rate if f_rate else float("nan")
        verdict = "met" if ratio >= 0.8 else "MISSED"
        top = max(args.rate_list)
        if f_rate == top:
            verdict += f" (the floor sustained the top rate, {top:g}/s: its capacity may be higher)"
        print(f"- worker / floor: {fmt(ratio, 2)}x, goal >= 0.8x: {verdict}")


# ---------------------------------------------------------------------------------------------


async def measure(bench: Bench, args: argparse.Namespace) -> tuple[list[Step], list[Step]]:
    floor: list[Step] = []
    worker: list[Step] = []
    sides = args.side_list
    first = args.rate_list[0]
    if args.warmup > 0:
        print(f"warm-up: {args.warmup:g} s of each side at {first:g}/s ...", file=sys.stderr, flush=True)
        if "floor" in sides:
            await bench.floor_step(first, args.warmup, "warm-floor", measured=False)
        if "worker" in sides:
            warm = await bench.worker_step(first, args.warmup, "warm-worker", measured=False)
            if warm.errors:
                raise SystemExit(f"the worker did not process the warm-up; log: {bench.worker.log_path}")
    worker_on = "worker" in sides
    for rate in args.rate_list:
        tag = f"r{rate:g}"
        if "floor" in sides:
            step = await bench.floor_step(rate, args.duration, f"floor-{tag}")
            floor.append(step)
            print(f"  floor {rate:g}/s: achieved {step.achieved:.1f}/s", file=sys.stderr, flush=True)
        if worker_on:
            await asyncio.sleep(1)
            profile = f"worker-{rate:g}" if bench.profile_dir is not None else ""
            step = await bench.worker_step(rate, args.duration, f"worker-{tag}", profile)
            worker.append(step)
            print(f"  worker {rate:g}/s: achieved {step.achieved:.1f}/s", file=sys.stderr, flush=True)
            if step.errors:
                print("  the worker left events behind: its ladder stops here", file=sys.stderr, flush=True)
                worker_on = False
        await asyncio.sleep(1)
    return floor, worker


async def run(
    settings: Settings,
    stack: EmulatorStack,
    worker: ServiceProcess,
    meter: CpuMeter,
    args: argparse.Namespace,
) -> tuple[list[Step], list[Step]]:
    bench = Bench(
        settings=settings,
        db=firestore.AsyncClient(project=settings.google_cloud_project),
        publisher=PublisherAsyncClient(),
        topic=settings.topic_path(settings.pubsub_topic),
        tail=LogTail(worker.log_path),
        worker=worker,
        stack=stack,
        drain_s=args.drain,
        profile_dir=args.profile,
        idle=args.profile_idle,
        meter=meter,
    )
    try:
        return await measure(bench, args)
    finally:
        await bench.publisher.transport.close()
        bench.db.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rates", default="25,50,100,200", help="offered rates, /s (default 25,50,100,200)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per rate and side (default 10)")
    parser.add_argument("--warmup", type=float, default=10, help="unmeasured seconds per side first (10)")
    parser.add_argument("--sides", default="floor,worker", help="floor, worker or both (default both)")
    parser.add_argument("--floor-p95-ms", type=float, default=250, help="floor p95 bound (default 250 ms)")
    parser.add_argument(
        "--worker-p95-ms", type=float, default=1000, help="worker publish->commit p95 bound (default 1000 ms)"
    )
    parser.add_argument("--drain", type=float, default=60, help="seconds to wait for a worker step (60)")
    parser.add_argument("--profile", type=Path, help="py-spy the worker's measured steps into this folder")
    parser.add_argument(
        "--profile-idle", action="store_true", help="with --profile: idle threads too (where they wait)"
    )
    parser.add_argument(
        "--pull-mode", choices=("unary", "streaming"), default="unary", help="the worker's WORKER_PULL_MODE"
    )
    add_pin_option(parser)
    args = parser.parse_args(argv)
    try:
        args.rate_list = sorted(float(r) for r in args.rates.split(","))
    except ValueError:
        parser.error("--rates: a comma list of numbers")
    args.side_list = [s for s in args.sides.split(",") if s]
    if not args.rate_list or min(args.rate_list) <= 0 or args.duration <= 0 or args.warmup < 0:
        parser.error("rates and duration must be positive, warmup at least 0")
    if not set(args.side_list) <= {"floor", "worker"} or not args.side_list:
        parser.error("--sides: floor, worker or floor,worker")
    if args.profile is not None:
        if py_spy() is None:
            parser.error("--profile needs py-spy: .venv/bin/pip install py-spy (not a project dependency)")
        args.profile.mkdir(parents=True, exist_ok=True)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    placement = Placement.choose(args.pin, "processing_floor.py")
    stack, workdir, catalog = start_emulators("processing-floor-", CATALOG)
    env = {
        **stack.env(),
        "PRODUCT_CATALOG": str(catalog),
        "LOG_LEVEL": "INFO",
        "EVENT_SIGNING_KEYS": SIGNING_KEY,
        "WORKER_PULL_MODE": args.pull_mode,
    }
    settings = Settings.from_env(env)
    worker: ServiceProcess | None = None
    meter: CpuMeter | None = None
    try:
        apply_topology(settings)
        worker = ServiceProcess("worker", env, workdir)
        wait_log(worker, "Worker pulling", 40)
        emulators = emulator_pids(stack)
        meter = CpuMeter({"worker": worker.process.pid}, emulators, placement)
        meter.pin()
        print(f"rates {args.rates}/s, {args.duration:g} s each ...", file=sys.stderr, flush=True)
        floor, worker_steps = asyncio.run(run(settings, stack, worker, meter, args))
    finally:
        if worker is not None:
            worker.stop()
        stack.stop()
        if placement is not None:
            placement.restore()
    report(args, floor, worker_steps)
    print_cpu(meter, ROOT)
    if args.profile is not None:
        for step in worker_steps:
            print_profile(args.profile / f"worker-{step.rate:g}.txt", f"worker at {step.rate:g}/s")
    print(f"\nlogs in {workdir}", file=sys.stderr)
    return 1 if any(s.errors for s in worker_steps) else 0


if __name__ == "__main__":
    sys.exit(main())
