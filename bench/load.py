"""Load test of the whole pipeline (webhook in queue mode -> Pub/Sub -> worker -> Firestore),
with the invariants checked from Firestore itself and a same-run floor.

    python bench/load.py                       # 100/s for 60 s against a stack it starts itself
    python bench/load.py --rate 30 --duration 10 --floor-duration 5
    python bench/load.py --find-max            # raise the rate until answer p95 > 50 ms or errors
    python bench/load.py --worker push         # Pub/Sub pushes to the HTTP app instead of the pull worker
    python bench/load.py --url http://127.0.0.1:8080/api/paynow/webhook   # an already-running stack
    paynow-service loadtest ARGS               # the same tool

By default it starts everything on loopback: both emulators, `infra apply` with the fast
test overrides (ack deadline 10 s, backoff 1-2 s), `paynow-service serve` in queue mode and
the pull worker (or push to the HTTP app). The pull worker runs at nice 10 (`--worker-nice`):
on one two-core machine the webhook, whose answer PayNow waits for, gets the CPU first, as
it has its own instances in production; the worker's measure is its lag, reported too.
`--pubsub-host/--firestore-host` reuse running emulators (the tool still starts its own
serve and worker); `--url` targets a running stack whose settings come from the environment
(PAYNOW_WEBHOOK_SECRETS, PRODUCT_CATALOG, PUBSUB_DLQ_SUBSCRIPTION ...) or the flags.

Traffic, open loop at a fixed rate (each delivery on its own schedule: a slow answer does
not slow the sender): signed, realistic PayNow events of many users from `build_event`
(orders of the catalog's products, subscription activations and renewals, ignored types),
10% exact duplicate deliveries (the same bytes re-sent), bursts for one user, a few
unknown products (they must end in the DLQ), refunds of earlier orders (sent after the
order was accepted). A non-2xx answer is retried like PayNow would (1, 2, 4 s) and counted
as an error.

The app's spends ride on the same schedule (`--spend-share`, default 0.15 per delivery; 0 turns
them off; bench/load_spends.py): the web app's own points code (tests/support/app_double.py,
with 10 attempts and its 1 s backoff: 5 are not enough on the emulator under contention),
run from this process on an AsyncClient of its own, spends a random cost (mostly small, one in
ten more than a wallet usually holds) from a user whose order or subscription was accepted at
least 1 s before, while that user's duplicates, refunds and renewals still arrive. A spend
that succeeded is recorded as spent, INSUFFICIENT_POINTS as refused; any other outcome
(contention exhausted, the 30 s timeout) is settled after the run by re-reading
`users/{uid}/ledger/{action_id}`, never guessed. The invariants then check each spend's
debit and each wallet in the app's model (credits - spends - expired promo).
INCONSISTENT_PROMO_BALANCE means a wallet was broken: counted, and the run fails. The floor's
turns carry the same share of spends, planned the same way on the floor's own users (whose
wallets the worker credits from the floor's events too): the sender and the floor share this
process, so each meets the same extra work on its event loop. Spend latency (the app's whole
transaction, retries included) is reported per kind of turn, with the contention retries.

Then it waits (bounded) for the queue to drain and checks from Firestore and the DLQ
(tests/support/invariants.py): every accepted event processed exactly once with exactly
its ledger entries; each wallet equal to its ledger and to the expected sum; ledgers serial;
no entry without its event; every bad event in the DLQ with reason unknown_product and
nowhere else. Exit status 1 if an invariant fails.

The floor: a bare script doing what the queue-mode webhook must do (one Firestore create of
the same webhookEvents record, or a read when it exists, then one ordered Pub/Sub publish of
the same PaymentEvent, with the `event_mac` the webhook signs it with (EVENT_SIGNING_KEYS:
a fresh key for the tool's own stack); an ignored type is marked instead) for traffic of the
same mix at the same rate, with no web framework. It writes the service's own collection and topic, so the
worker processes its events like the webhook's and the invariants check them too; and the
service and the floor take turns in short segments (--rounds), so both meet the same
machine. Answer p95 is reported as a ratio to the floor's. (`--find-max` drives its floor
apart, to a topic nobody consumes: the worker could not follow the floor's maximum.)

Writes bench/results/load-<time>.json, .md and .png (latency over time). Bounded: every
request has a timeout, retries are capped, every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import random
import secrets
import struct
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402
from google.api_core import exceptions as gexc  # noqa: E402
from google.cloud import firestore  # noqa: E402
from google.cloud.pubsub_v1 import PublisherClient  # noqa: E402
from google.pubsub_v1 import PublisherAsyncClient  # noqa: E402
from google.pubsub_v1.types import PubsubMessage  # noqa: E402

from bench.benchlib import FloorItem, floor_item, percentile  # noqa: E402
from bench.lean_http import LeanClient  # noqa: E402
from bench.load_spends import Spend, SpendBook, SpendStats, SpendTurn, plan_spends  # noqa: E402
from paynow_service.adapters.emulators import EmulatorStack, free_port  # noqa: E402
from paynow_service.adapters.firestore_events import EVENTS  # noqa: E402
from paynow_service.adapters.pubsub_infra import InfraOverrides, PubSubInfra, desired_topology  # noqa: E402
from paynow_service.bootstrap import freeze_startup_heap  # noqa: E402
from paynow_service.config import Settings  # noqa: E402
from paynow_service.domain.catalog import Catalog  # noqa: E402
from paynow_service.domain.provenance import ATTR_EVENT_MAC, EventSigner  # noqa: E402
from paynow_service.domain.signature import sign  # noqa: E402
from tests.support.invariants import (  # noqa: E402
    EventFactory,
    Expectation,
    InvariantReport,
    PlannedEvent,
    check,
    pull_dead_letters,
    read_state,
    wait_drained,
)
from tests.support.processes import ServiceProcess, wait_port  # noqa: E402

SECRET = "pn-load-secret"
TARGET_P95_MS = 50.0
FLOOR_RATIO_TARGET = 1.5
RETRY_BACKOFF_S = (1.0, 2.0, 4.0)  # PayNow retries with backoff; bounded here
REQUEST_TIMEOUT_S = 10.0
WARM_CONNECTIONS = 8  # the sender's keep-alive pool, opened before each measured turn
CATALOG = """
[products."411486491630370816"]   # points pack S
points = 500

[products."411486491630370820"]   # points pack L
points = 1200

[products."411486491630370818"]   # promo pack
points = 50
kind = "promo"

[subscriptions."411486491630370817"]   # monthly plan
points_per_cycle = 1000
"""
T = TypeVar("T")
Timed = TypeVar("Timed")  # a Delivery or a Spend: a dataclass with `due`
FAST = InfraOverrides(ack_deadline_s=10, min_backoff_s=1, max_backoff_s=2)


# ---- statistics ---------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run one phase on uvloop, the loop `serve` runs on (uvicorn picks it): the sender, the floor and
    the service then all spend the same per-callback cost on their event loops."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# ---- the traffic --------------------------------------------------------------------------------


@dataclass
class Delivery:
    due: float  # seconds after the phase starts
    planned: PlannedEvent
    duplicate: bool = False
    needs: str = ""  # event id that must have been accepted first (refund -> order, renewal -> activation)
    label: str = ""  # order, burst, refund, subscription, renewal, ignored, unknown_product, duplicate


@dataclass
class Mix:
    duplicates: float = 0.10
    refunds: float = 0.05
    subscriptions: float = 0.04
    renewals: float = 0.03
    ignored: float = 0.09
    unknown: float = 0.005  # at least `min_unknown` per phase
    min_unknown: int = 3
    burst_every_s: float = 5.0
    burst_len: int = 15
    dependency_delay_s: float = 2.0  # a refund or renewal goes out at least this long after its origin
    spend_share: float = 0.15  # the app's spends per delivery (bench/load_spends.py)
    spend_delay_s: float = 1.0  # a spend goes out at least this long after the user's order or subscription


def plan_traffic(
    factory: EventFactory, *, rate: float, duration: float, users: Sequence[str], rng: random.Random, mix: Mix
) -> list[Delivery]:
    """The deliveries of one phase, `rate` per second for `duration` seconds, all planned up front."""
    total = max(1, round(rate * duration))
    unknown_count = max(mix.min_unknown, round(total * mix.unknown)) if total >= 10 * mix.min_unknown else 1
    unknown_at = {int(total * (k + 0.5) / unknown_count) for k in range(unknown_count)}
    burst_every = max(mix.burst_len * 2, round(rate * mix.burst_every_s))
    deliveries: list[Delivery] = []
    originals: list[Delivery] = []
    refundable: list[Delivery] = []
    renewable: list[Delivery] = []
    hot = users[0]
    for i in range(total):
        t = i / rate
        if i % burst_every == burst_every // 2:
            hot = rng.choice(users)
        in_burst = burst_every // 2 <= i % burst_every < burst_every // 2 + mix.burst_len
        ready = t - mix.dependency_delay_s
        delivery: Delivery
        if i in unknown_at:
            delivery = Delivery(t, factory.unknown_product(rng.choice(users)), label="unknown_product")
        elif in_burst:
            delivery = Delivery(t, factory.order(hot), label="burst")
        else:
            r = rng.random()
            edges = [mix.duplicates, mix.refunds, mix.subscriptions, mix.renewals, mix.ignored]
            cut = [sum(edges[: k + 1]) for k in range(len(edges))]
            refund_pool = [d for d in refundable if d.due <= ready]
            renew_pool = [d for d in renewable if d.due <= ready]
            recent = [d for d in originals[-int(rate * 5) - 1 :] if d.due <= t]
            if r < cut[0] and recent:
                original = rng.choice(recent)
                delivery = Delivery(
                    t, original.planned, duplicate=True, needs=original.needs, label="duplicate"
                )
            elif r < cut[1] and refund_pool:
                order = rng.choice(refund_pool)
                refundable.remove(order)
                delivery = Delivery(
                    t, factory.refund(order.planned), needs=order.planned.event_id, label="refund"
                )
            elif r < cut[2] and factory.plans:
                delivery = Delivery(t, factory.subscription(rng.choice(users)), label="subscription")
            elif r < cut[3] and renew_pool and factory.plans:
                origin = rng.choice(renew_pool)
                renewable.remove(origin)
                delivery = Delivery(
                    t, factory.subscription("", renew_of=origin.planned), needs=origin.planned.event_id,
                    label="renewal",
                )  # fmt: skip
            elif r < cut[4]:
                delivery = Delivery(t, factory.ignored(rng.choice(users)), label="ignored")
            else:
                delivery = Delivery(t, factory.order(rng.choice(users)), label="order")
        deliveries.append(delivery)
        if not delivery.duplicate:
            originals.append(delivery)
            if delivery.label in ("order", "burst") and delivery.planned.credit_points:
                refundable.append(delivery)
            if delivery.label in ("subscription", "renewal"):
                renewable.append(delivery)
    return deliveries


def plan_phase(
    factory: EventFactory, *, rate: float, duration: float, users: Sequence[str], rng: random.Random, mix: Mix
) -> tuple[list[Delivery], list[Spend]]:
    """A phase's deliveries and the app's spends among them."""
    deliveries = plan_traffic(factory, rate=rate, duration=duration, users=users, rng=rng, mix=mix)
    spends = plan_spends(deliveries, share=mix.spend_share, rng=rng, delay_s=mix.spend_delay_s)
    return deliveries, spends


# ---- sending ------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # when the request started, seconds after the phase started
    ms: float  # answer latency
    status: int  # HTTP status, 0 for a transport error or timeout
    outcome: str  # the answer's status (queued, duplicate, ignored, processed ...) or the error
    label: str
    retry: int  # 0 for the first try of a delivery
    event_id: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class PhaseResult:
    name: str
    rate: float
    duration: float
    samples: list[Sample] = field(default_factory=list)
    skipped: int = 0  # a refund or renewal whose origin was never accepted
    wall_s: float = 0.0  # first to last request start
    lag_s: float = 0.0  # how far behind schedule the sender ran at most
    spends: SpendStats = field(default_factory=SpendStats)  # the app's spends in this phase

    @property
    def first_tries(self) -> list[Sample]:
        return [s for s in self.samples if s.retry == 0]

    @property
    def errors(self) -> int:
        return sum(1 for s in self.samples if not s.ok)

    def latencies(self) -> list[float]:
        return [s.ms for s in self.samples]

    @property
    def accepted_events(self) -> int:
        return len({s.event_id for s in self.samples if s.ok})

    def summary(self) -> dict[str, Any]:
        lat = self.latencies()
        sent = len(self.first_tries)
        return {
            "phase": self.name,
            "target_rate": self.rate,
            "duration_s": self.duration,
            "deliveries": sent,
            "requests": len(self.samples),
            "retries": len(self.samples) - sent,
            "errors": self.errors,
            "skipped": self.skipped,
            "achieved_rate": round(sent / self.wall_s, 1) if self.wall_s > 0 else float(sent),
            "sender_max_lag_ms": round(self.lag_s * 1000, 1),
            "p50_ms": round(percentile(lat, 50), 2),
            "p95_ms": round(percentile(lat, 95), 2),
            "p99_ms": round(percentile(lat, 99), 2),
            "max_ms": round(max(lat), 2) if lat else float("nan"),
            "outcomes": dict(Counter(s.outcome for s in self.samples)),
            "spends": self.spends.summary(),
        }


async def open_loop(
    deliveries: Sequence[Delivery], one: Any, phase: PhaseResult, spends: Sequence[Spend] = (),
    spend: Any = None,
) -> None:  # fmt: skip
    """Start `one(delivery)` at each delivery's due time, and `spend(spend)` at each spend's (open loop),
    and wait for all of them."""
    start = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    schedule: list[Delivery | Spend] = sorted([*deliveries, *spends], key=lambda item: item.due)
    for item in schedule:
        delay = start + item.due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            phase.lag_s = max(phase.lag_s, -delay)
        runner = spend if isinstance(item, Spend) else one
        tasks.append(asyncio.create_task(runner(item, start)))
    phase.wall_s = time.perf_counter() - start
    await asyncio.gather(*tasks)


@contextlib.asynccontextmanager
async def spend_turn(
    book: SpendBook | None, spends: Sequence[Spend], stats: SpendStats, accepted: Any
) -> AsyncIterator[Any]:
    """The turn's spender (`SpendTurn.one`), or None when the turn has no spends."""
    if book is None or not spends:
        yield None
        return
    async with SpendTurn(book, stats, accepted) as turn:
        yield turn.one


class WebhookSender:
    """Signs and posts deliveries like PayNow: each delivery retried on a non-2xx (bounded)."""

    def __init__(
        self, url: str, secret: str, expectation: Expectation, book: SpendBook | None = None
    ) -> None:
        self.url = url
        self.secret = secret
        self.expectation = expectation
        self.book = book  # the app's spends, when the traffic has any

    async def run(
        self, name: str, rate: float, duration: float, deliveries: Sequence[Delivery],
        spends: Sequence[Spend] = (),
    ) -> PhaseResult:  # fmt: skip
        phase = PhaseResult(name, rate, duration)
        # The lean client: the sender's own cost is in every answer it measures (aiohttp, which this
        # tool used before, cost 0.7 ms of CPU per request here; httpx 2.4 ms).
        url = urlsplit(self.url)
        client = LeanClient(f"{url.scheme}://{url.netloc}")
        path = url.path + (f"?{url.query}" if url.query else "")

        async def one(delivery: Delivery, start: float) -> None:
            planned = delivery.planned
            if not self.expectation.admit(planned, needs=delivery.needs, duplicate=delivery.duplicate):
                phase.skipped += 1
                return
            for attempt in range(len(RETRY_BACKOFF_S) + 1):
                began = time.perf_counter()
                ts = str(int(time.time() * 1000))
                headers = {
                    "Content-Type": "application/json",
                    "PayNow-Signature": sign(self.secret, ts, planned.body),
                    "PayNow-Timestamp": ts,
                    "User-Agent": "paynow-service loadtest",
                }
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_S):
                        status, raw = await client.request("POST", path, planned.body, headers)
                    try:
                        answer = json.loads(raw)
                        outcome = str(answer.get("status") or answer.get("error") or status)
                    except (ValueError, AttributeError):
                        outcome = str(status)
                except Exception as err:  # a transport error is an error answer, not a crash
                    status, outcome = 0, type(err).__name__
                ms = (time.perf_counter() - began) * 1000
                phase.samples.append(
                    Sample(began - start, ms, status, outcome, delivery.label, attempt, planned.event_id)
                )
                if 200 <= status < 300:
                    self.expectation.accept(planned.event_id)
                    return
                if attempt < len(RETRY_BACKOFF_S):
                    await asyncio.sleep(RETRY_BACKOFF_S[attempt])

        try:
            # WARM_CONNECTIONS keep-alive connections opened before measuring, as the floor's channels
            # are: a handshake is the client's cost, not the service's (measured at 100/s: 4-8 new
            # connections per 5 s turn for overlapping answers, each one on a waiting request).
            with contextlib.suppress(Exception):  # outside the measurement; a failure shows in the run
                await client.open(WARM_CONNECTIONS, url.path.rsplit("/api/", 1)[0] + "/healthz")
            async with spend_turn(self.book, spends, phase.spends, self.expectation.is_accepted) as spend:
                await open_loop(deliveries, one, phase, spends, spend)
        finally:
            client.close()
        return phase


# ---- the floor ----------------------------------------------------------------------------------


@dataclass
class FloorTarget:
    """Where the floor writes. The pipeline floor uses the service's own collection and topic, so the
    worker processes its events as it processes the webhook's (same background load, same invariants);
    find-max's floor writes apart (no consumer: the worker could not follow the floor's maximum)."""

    topic_path: str
    collection: str
    expectation: Expectation | None = None
    signer: EventSigner | None = None  # signs `event_mac` as the webhook does (EVENT_SIGNING_KEYS)


async def run_floor(
    project: str, target: FloorTarget, name: str, rate: float, duration: float,
    deliveries: Sequence[Delivery], spends: Sequence[Spend] = (), book: SpendBook | None = None,
) -> PhaseResult:  # fmt: skip
    """The queue-mode webhook's own durable work, bare: Firestore create of the record (or a read when it
    exists), then one ordered publish; an ignored type is marked instead of published, as the webhook does.
    With an expectation, deliveries are skipped, added and accepted exactly as the webhook sender does.
    The app's spends go out beside, as in the service's turns (a spend waits for its origin's acceptance:
    the expectation's, or without one this phase's own)."""
    phase = PhaseResult(name, rate, duration)
    items = {d.planned.event_id: floor_item(d.planned.body) for d in deliveries}
    db = firestore.AsyncClient(project=project)
    publisher = PublisherAsyncClient()
    expectation = target.expectation
    accepted_here: set[str] = set()
    try:

        async def work(item: FloorItem) -> str:
            ref = db.collection(target.collection).document(item.event_id)
            try:
                await ref.create(item.document(dt.datetime.now(dt.UTC)), timeout=REQUEST_TIMEOUT_S)
            except gexc.AlreadyExists:
                await ref.get(timeout=REQUEST_TIMEOUT_S)
                return "duplicate"
            if item.ignored:
                mark = {"status": "ignored", "result": {"outcome": "ignored"}}
                await ref.set(mark, merge=True, timeout=REQUEST_TIMEOUT_S)
                return "ignored"
            attributes = item.attributes
            if target.signer is not None:  # the webhook's MAC, computed per delivery as it does
                attributes = {**attributes, ATTR_EVENT_MAC: target.signer.sign(item.data)}
            message = PubsubMessage(data=item.data, attributes=attributes, ordering_key=item.ordering_key)
            await publisher.publish(
                topic=target.topic_path, messages=[message], retry=None, timeout=REQUEST_TIMEOUT_S
            )
            return "queued"

        async def one(delivery: Delivery, start: float) -> None:
            planned = delivery.planned
            if expectation is not None and not expectation.admit(
                planned, needs=delivery.needs, duplicate=delivery.duplicate
            ):
                phase.skipped += 1
                return
            began = time.perf_counter()
            try:
                outcome = await asyncio.wait_for(work(items[planned.event_id]), REQUEST_TIMEOUT_S)
                status = 200
            except Exception as err:  # counted, never stops the run
                status, outcome = 0, type(err).__name__
            phase.samples.append(
                Sample(
                    began - start, (time.perf_counter() - began) * 1000, status, outcome, delivery.label, 0,
                    planned.event_id,
                )
            )  # fmt: skip
            if status == 200:
                accepted_here.add(planned.event_id)
                if expectation is not None:
                    expectation.accept(planned.event_id)

        # Warm both channels outside the measurement, as the service's are by then.
        with contextlib.suppress(Exception):
            await db.collection(target.collection).document("warm-up").get(timeout=REQUEST_TIMEOUT_S)
            await publisher.get_topic(topic=target.topic_path, timeout=REQUEST_TIMEOUT_S)
        accepted = expectation.is_accepted if expectation is not None else accepted_here.__contains__
        async with spend_turn(book, spends, phase.spends, accepted) as spend:
            await open_loop(deliveries, one, phase, spends, spend)
    finally:
        await publisher.transport.close()  # type: ignore[no-untyped-call]
        db.close()  # type: ignore[no-untyped-call]
    return phase


# ---- the stack ----------------------------------------------------------------------------------


class RssSampler:
    """Samples VmRSS of some processes from /proc (no dependency) every `interval_s`."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.5) -> None:
        self.pids = {k: v for k, v in pids.items() if v}
        self.interval_s = interval_s
        self.peak_kb: dict[str, int] = dict.fromkeys(self.pids, 0)
        self.last_kb: dict[str, int] = dict.fromkeys(self.pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss", daemon=True)

    @staticmethod
    def read_kb(pid: int, field_name: str = "VmRSS") -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            kb = self.read_kb(pid)
            if kb:
                self.last_kb[name] = kb
                self.peak_kb[name] = max(self.peak_kb[name], kb)

    def start(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> dict[str, dict[str, float]]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.sample()
        return {
            name: {
                "peak_mib": round(self.peak_kb[name] / 1024, 1),
                "last_mib": round(self.last_kb[name] / 1024, 1),
                "hwm_mib": round(self.read_kb(pid, "VmHWM") / 1024, 1),
            }
            for name, pid in self.pids.items()
        }


@dataclass
class Stack:
    url: str
    settings: Settings
    project: str
    secret: str
    catalog: Catalog
    worker_kind: str
    pids: dict[str, int] = field(default_factory=dict)
    worker_logs: list[Path] = field(default_factory=list)
    workdir: Path | None = None
    started: list[str] = field(default_factory=list)  # what this tool started itself


@contextlib.contextmanager
def open_stack(args: argparse.Namespace) -> Iterator[Stack]:
    """The stack under test: the one at --url, or one this tool starts (and stops)."""
    workdir = Path(tempfile.mkdtemp(prefix="paynow-load-"))
    emulators: EmulatorStack | None = None
    processes: list[ServiceProcess] = []
    try:
        if args.url:
            yield _existing_stack(args)
            return
        env: dict[str, str] = {}
        if args.pubsub_host or args.firestore_host:
            if not (args.pubsub_host and args.firestore_host):
                raise SystemExit("load: --pubsub-host and --firestore-host go together")
            env.update(
                PUBSUB_EMULATOR_HOST=args.pubsub_host,
                FIRESTORE_EMULATOR_HOST=args.firestore_host,
                GOOGLE_CLOUD_PROJECT=args.project or os.environ.get("GOOGLE_CLOUD_PROJECT") or "paynow-local",
            )
        else:
            print("starting the Pub/Sub and Firestore emulators ...", file=sys.stderr, flush=True)
            emulators = EmulatorStack.start(project=args.project or "paynow-load", log_dir=workdir)
            env.update(emulators.env())
        os.environ.update(env)  # this tool's own clients (floor, checks) use them too
        catalog_path = workdir / "catalog.toml"
        catalog_path.write_text(CATALOG)
        run = uuid.uuid4().hex[:8]
        env.update(
            PUBSUB_TOPIC=f"load-{run}-events",
            PUBSUB_DLQ_TOPIC=f"load-{run}-events-dlq",
            PUBSUB_SUBSCRIPTION=f"load-{run}-events-sub",
            PUBSUB_DLQ_SUBSCRIPTION=f"load-{run}-events-dlq-sub",
            PAYNOW_WEBHOOK_SECRETS=SECRET,
            EVENT_SIGNING_KEYS=os.environ.get("EVENT_SIGNING_KEYS") or f"load-{secrets.token_hex(24)}",
            PRODUCT_CATALOG=str(catalog_path),
            WEBHOOK_MODE="queue",
            PUSH_AUTH="disabled",
            POINTS_AUTH="disabled",
            LOG_LEVEL=args.log_level,
            # On the emulator a streaming pull that falls behind is redelivered what it holds: in a
            # default run 9,946 of 13,412 deliveries were repeats and the worker stalled (8,627 events
            # never processed); with plain Pull calls the same run drained in 22 s. GCP: streaming.
            WORKER_PULL_MODE=os.environ.get("WORKER_PULL_MODE") or "unary",
            HTTP_ROUTES="webhook,push" if args.worker == "push" else "webhook",
        )
        settings = Settings.from_env(env)
        port = args.port or free_port()
        env["PORT"] = str(port)
        server = ServiceProcess("serve", env, workdir, port=port)
        processes.append(server)
        if not wait_port(port, 40):
            raise SystemExit(f"load: serve did not listen on {port}:\n{server.logs()[-2000:]}")
        overrides = FAST
        if args.worker == "push":
            overrides = InfraOverrides(
                ack_deadline_s=10, min_backoff_s=1, max_backoff_s=2,
                push_endpoint=f"http://127.0.0.1:{port}/api/tasks/paynow/process",
            )  # fmt: skip
        infra = PubSubInfra(settings)
        try:
            infra.apply(desired_topology(settings, overrides))
        finally:
            infra.close()
        pids = {"server": server.process.pid}
        logs = [server.log_path]
        if args.worker == "pull":
            worker = ServiceProcess("worker", env, workdir, nice=args.worker_nice)
            processes.append(worker)
            pids["worker"] = worker.process.pid
            logs = [worker.log_path]
        yield Stack(
            url=f"http://127.0.0.1:{port}/api/paynow/webhook",
            settings=settings,
            project=settings.google_cloud_project,
            secret=SECRET,
            catalog=Catalog.from_toml(CATALOG),
            worker_kind=args.worker,
            pids=pids,
            worker_logs=logs,
            workdir=workdir,
            started=(["emulators"] if emulators else [])
            + ["serve"]
            + (["worker"] if args.worker == "pull" else []),
        )
    finally:
        for process in processes:
            process.stop()
        if emulators is not None:
            emulators.stop()


def _existing_stack(args: argparse.Namespace) -> Stack:
    if args.pubsub_host:
        os.environ["PUBSUB_EMULATOR_HOST"] = args.pubsub_host
    if args.firestore_host:
        os.environ["FIRESTORE_EMULATOR_HOST"] = args.firestore_host
    if args.project:
        os.environ["GOOGLE_CLOUD_PROJECT"] = args.project
    if args.dlq_subscription:
        os.environ["PUBSUB_DLQ_SUBSCRIPTION"] = args.dlq_subscription
    settings = Settings.from_env()
    secret = args.secret or next((s for s in settings.paynow_webhook_secrets if s), "")
    if not secret:
        raise SystemExit("load: --url needs --secret or PAYNOW_WEBHOOK_SECRETS")
    catalog_path = args.catalog or settings.product_catalog
    if not catalog_path:
        raise SystemExit("load: --url needs --catalog or PRODUCT_CATALOG (to know what each event is worth)")
    logs = [Path(p) for p in args.worker_log]
    pids = {"server": args.server_pid or 0, "worker": args.worker_pid or 0}
    return Stack(
        url=args.url,
        settings=settings,
        project=settings.google_cloud_project,
        secret=secret,
        catalog=Catalog.from_toml(Path(catalog_path).read_text(encoding="utf-8")),
        worker_kind=args.worker,
        pids={k: v for k, v in pids.items() if v},
        worker_logs=logs,
    )


# ---- after the load: drain, processing, lag, invariants -------------------------------------------


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


@dataclass
class Verification:
    drained: bool
    drain_s: float
    pending: dict[str, str]
    report: InvariantReport
    records: dict[str, dict[str, Any]]


def verify(
    stack: Stack,
    expectation: Expectation,
    book: SpendBook,
    *,
    drain_timeout_s: float,
    strict_dlq: bool = True,
) -> Verification:
    began = time.monotonic()
    drained, pending = wait_drained(stack.project, expectation, timeout_s=drain_timeout_s)
    drain_s = time.monotonic() - began
    book.resolve()  # the spends whose outcome the app's code did not tell: their ledger entry says
    bad = {e.event_id for e in expectation.events.values() if e.status == "failed_terminal"}
    accepted_bad = sum(1 for e in bad if expectation.is_accepted(e))
    letters = pull_dead_letters(
        stack.settings.subscription_path(stack.settings.pubsub_dlq_subscription),
        set(expectation.events),
        want=accepted_bad,
        wait_s=20,
    )
    state = read_state(stack.project, expectation)
    report = check(expectation, state, letters, dlq_duplicates_ok=not strict_dlq)
    return Verification(drained, drain_s, pending, report, state.records)


# ---- the PNG (no plotting dependency: a raster, zlib and the PNG chunk format) -------------------

_FONT = {  # 3x5 glyphs, rows top to bottom, bit 2 = left column
    "0": (7, 5, 5, 5, 7), "1": (2, 6, 2, 2, 7), "2": (7, 1, 7, 4, 7), "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1), "5": (7, 4, 7, 1, 7), "6": (7, 4, 7, 5, 7), "7": (7, 1, 1, 2, 2),
    "8": (7, 5, 7, 5, 7), "9": (7, 5, 7, 1, 7), ".": (0, 0, 0, 0, 2), " ": (0, 0, 0, 0, 0),
    "/": (1, 1, 2, 4, 4), "-": (0, 0, 7, 0, 0), "=": (0, 7, 0, 7, 0), "x": (0, 5, 2, 5, 0),
    "A": (2, 5, 7, 5, 5), "C": (7, 4, 4, 4, 7), "D": (6, 5, 5, 5, 6), "E": (7, 4, 6, 4, 7),
    "F": (7, 4, 6, 4, 4), "G": (7, 4, 5, 5, 7), "H": (5, 5, 7, 5, 5), "I": (7, 2, 2, 2, 7),
    "K": (5, 5, 6, 5, 5), "L": (4, 4, 4, 4, 7), "M": (5, 7, 7, 5, 5), "N": (6, 5, 5, 5, 5),
    "O": (7, 5, 5, 5, 7), "P": (7, 5, 7, 4, 4), "R": (6, 5, 6, 5, 5), "S": (7, 4, 7, 1, 7),
    "T": (7, 2, 2, 2, 2), "U": (5, 5, 5, 5, 7), "W": (5, 5, 7, 7, 5), "Y": (5, 5, 2, 2, 2),
}  # fmt: skip


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(b"\xff" * (width * height * 3))

    def dot(self, x: int, y: int, color: tuple[int, int, int]) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int], dash: int = 0) -> None:
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err, n = dx + dy, 0
        while True:
            if not dash or (n // dash) % 2 == 0:
                self.dot(x0, y0, color)
            n += 1
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x: int, y: int, text: str, color: tuple[int, int, int], scale: int = 2) -> None:
        for char in text.upper():
            rows = _FONT.get(char, _FONT[" "])
            for r, bits in enumerate(rows):
                for c in range(3):
                    if bits & (4 >> c):
                        for dx in range(scale):
                            for dy in range(scale):
                                self.dot(x + c * scale + dx, y + r * scale + dy, color)
            x += 4 * scale

    def png(self) -> bytes:
        stride = self.width * 3
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * stride : (y + 1) * stride]) for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def per_second(samples: Sequence[Sample], q: float) -> list[tuple[float, float]]:
    buckets: dict[int, list[float]] = {}
    for s in samples:
        buckets.setdefault(int(s.t), []).append(s.ms)
    return [(k + 0.5, percentile(v, q)) for k, v in sorted(buckets.items())]


def latency_png(service: PhaseResult, floor: PhaseResult | None, title: str) -> bytes:
    """Answer latency per second of the run: p50, p95, p99; the floor's p95; the 50 ms ceiling."""
    width, height, left, right, top, bottom = 960, 420, 70, 20, 40, 50
    canvas = Canvas(width, height)
    series = [
        ("P50", per_second(service.samples, 50), (40, 110, 200)),
        ("P95", per_second(service.samples, 95), (230, 120, 20)),
        ("P99", per_second(service.samples, 99), (200, 30, 40)),
    ]
    if floor is not None and floor.samples:
        series.append(("FLOOR P95", per_second(floor.samples, 95), (40, 150, 60)))
    span_s = max([service.duration] + [x for _, points, _ in series for x, _ in points] + [1.0])
    peak = max([TARGET_P95_MS * 1.2] + [y for _, points, _ in series for _, y in points if not math.isnan(y)])
    nice = [m * 10**e for e in range(0, 6) for m in (1, 2, 2.5, 5)]
    y_max = float(next((v for v in nice if v >= peak * 1.05), nice[-1]))
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float, y: float) -> tuple[int, int]:
        return left + round(x / span_s * plot_w), top + plot_h - round(min(y, y_max) / y_max * plot_h)

    grey, black = (215, 215, 215), (30, 30, 30)
    for k in range(5):
        value = y_max * k / 4
        _, y = px(0, value)
        canvas.line(left, y, left + plot_w, y, grey)
        canvas.text(4, y - 5, fmt(value, 0 if y_max >= 20 else 1), black)
    tick = next(t for t in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 1e9) if span_s / t <= 12)
    for k in range(int(span_s // tick) + 1):
        value = k * tick
        x, _ = px(value, 0)
        canvas.line(x, top, x, top + plot_h, grey)
        canvas.text(x - 6, top + plot_h + 8, f"{value:g}", black)
    canvas.line(left, top, left, top + plot_h, black)
    canvas.line(left, top + plot_h, left + plot_w, top + plot_h, black)
    _, y50 = px(0, TARGET_P95_MS)
    canvas.line(left, y50, left + plot_w, y50, (120, 120, 120), dash=6)
    for _, points, color in series:
        previous: tuple[int, int] | None = None
        last_x = -math.inf
        for x, y in points:
            if math.isnan(y):
                continue
            point = px(x, y)
            if previous is not None and x - last_x <= 1.5:  # no line across the other phase's turn
                canvas.line(*previous, *point, color)
            previous, last_x = point, x
    canvas.text(left, 10, title[:80], black)
    canvas.text(width - 190, top + plot_h + 30, "TIME S", black)
    canvas.text(4, top - 20, "MS", black)
    x = left + 200
    for name, _, color in series:
        for dy in range(3):
            canvas.line(x, top + plot_h + 35 + dy, x + 24, top + plot_h + 35 + dy, color)
        canvas.text(x + 30, top + plot_h + 31, name, black)
        x += 30 + 8 * len(name) + 30
    canvas.line(x, top + plot_h + 36, x + 24, top + plot_h + 36, (120, 120, 120), dash=6)
    canvas.text(x + 30, top + plot_h + 31, "50 MS", black)
    return canvas.png()


# ---- the report ---------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


def _md_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


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


def _step_cells(step: dict[str, Any]) -> list[Any]:
    sv, fl = step.get("service") or {}, step.get("floor") or {}
    return [
        f"{step['rate']:g}", sv.get("achieved_rate", "-"), sv.get("p95_ms", "-"), sv.get("errors", "-"),
        step.get("drain_s", "-"), fl.get("achieved_rate", "-"), fl.get("p95_ms", "-"), fl.get("errors", "-"),
    ]  # fmt: skip


def render_markdown(result: dict[str, Any], png_name: str) -> str:
    s, f, inv, config = result["service"], result.get("floor"), result["invariants"], result["config"]
    lines = [
        f"# Load test {result['started_at']}",
        "",
        (
            f"find-max from {config['rate']:g}/s, x{config['step_factor']:g} per step "
            f"of {config['step_duration']:g} s"
            if config["find_max"]
            else f"{config['rate']:g}/s open loop for {config['duration']:g} s"
        )
        + f", worker: {config['worker']}, stack: {result['stack']}. {result['machine']}",
        "",
        "| measure | value | target |",
        "|---|---:|---|",
        *(_md_row(row) for row in result["table"]),
        "",
        "## Answer latency",
        "",
        _md_row(PHASE_COLUMNS),
        _md_row(["---"] + ["---:"] * (len(PHASE_COLUMNS) - 1)),
        *(_md_row([phase[c] for c in PHASE_COLUMNS]) for phase in [s, *([f] if f else [])]),
        "",
        f"![answer latency over time]({png_name})",
        "",
    ]
    if result.get("warm_up"):
        warm = result["warm_up"]
        lines += [
            "Warm-up, not measured above: "
            + ", ".join(
                f"{name} {w['deliveries']} deliveries, p95 {w['p95_ms']} ms" for name, w in warm.items()
            )
            + ".",
            "",
        ]
    if result.get("find_max"):
        fm = result["find_max"]
        capped = " (a lower bound: the last step still passed)" if fm.get("capped") else ""
        lines += [
            "## Find max",
            "",
            f"Highest sustained rate (answer p95 <= {TARGET_P95_MS:g} ms, no errors): service "
            f"**{fm['service_max']}/s**, floor **{fm['floor_max']}/s**, "
            f"ratio **{fmt(fm['ratio'], 2)}**{capped}.",
            "",
            _md_row(STEP_HEADER),
            _md_row(["---:"] * len(STEP_HEADER)),
            *(_md_row(_step_cells(step)) for step in fm["steps"]),
            "",
        ]
    spends = result.get("spends")
    if spends:
        run = spends["run"]
        lines += [
            "## The app's spends",
            "",
            f"The app's points code spending from the users' wallets beside the traffic, "
            f"{spends['share']:g} per delivery in every turn. Whole run (warm-up included): "
            f"{run['attempted']} attempted, {run['spent']} spent, {run['refused']} refused (not enough "
            f"points), {run['unknown']} unknown and {run['inconsistent']} inconsistent (re-read after the "
            f"run: {run['unknown_reread_written']} written, {run['unknown_reread_unwritten']} not), "
            f"{run['skipped']} skipped (their order never "
            f"accepted); {run['retries']} contention retries"
            + "".join(f", {n} {name}" for name, n in run["retried_by"].items())
            + "; "
            f"INCONSISTENT_PROMO_BALANCE **{spends['inconsistent']}**"
            + (f" ({', '.join(run['inconsistent_examples'])})" if run["inconsistent_examples"] else "")
            + f". Checked: {spends['checked']['succeeded']} debits written, "
            f"{spends['checked']['points_spent']} points spent, "
            f"{spends['checked']['points_expired']} expired.",
            "",
            _md_row(SPEND_COLUMNS),
            _md_row(["---"] + ["---:"] * (len(SPEND_COLUMNS) - 1)),
            *(
                _md_row([name] + [phase[c] for c in SPEND_COLUMNS[1:]])
                for name, phase in (("service turns", spends["service"]), ("floor turns", spends["floor"]))
                if phase
            ),
            "",
        ]
    lines += [
        "## Invariants", "", "```", inv["summary"], "```", "",
        "## Traffic", "", "```", json.dumps(result["traffic"], indent=1), "```", "",
        "## Method", "", result["method"], "",
    ]  # fmt: skip
    return "\n".join(lines)


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
    "read from Firestore and the DLQ subscription after the queue drained (tests/support/invariants.py). "
    "The app's spends (--spend-share per delivery, in the service's and the floor's turns alike, from this "
    "process on an AsyncClient of their own) run the app's points code (tests/support/app_double.py, 10 "
    "attempts, 1 s initial backoff) on users whose order or subscription was accepted at least 1 s before; "
    "a spend's latency is its whole transaction, contention retries included; an outcome the app's code "
    "does not tell (retries exhausted, 30 s timeout) is settled by re-reading the spend's ledger entry after "
    "the drain; the invariants check every debit and every wallet in the app's model."
)


def build_result(
    args: argparse.Namespace, stack: Stack, started_at: str, service: PhaseResult, floor: PhaseResult | None,
    verification: Verification, expectation: Expectation, rss: dict[str, Any], deliveries: Sequence[Delivery],
    find_max: dict[str, Any] | None, book: SpendBook | None = None, spends: Sequence[Spend] = (),
) -> dict[str, Any]:  # fmt: skip
    s = service.summary()
    fl = floor.summary() if floor is not None else None
    measured = {d.planned.event_id for d in deliveries}
    processing = worker_processing_ms(stack.worker_logs, measured)
    timing = pipeline_timing(verification.records, measured)
    inv = verification.report
    ratio = _ratio(s["p95_ms"], fl["p95_ms"]) if fl else float("nan")
    proc_p95 = percentile(processing, 95) if processing else float("nan")
    lag_p95 = percentile(timing["lag_ms"], 95)
    accepted_per_s = round(service.accepted_events / service.wall_s, 1) if service.wall_s else float("nan")

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "FAIL")

    def below(value: float, limit: float) -> str:
        return verdict(None if math.isnan(value) else value < limit)

    floor_cell = f"{fl['p50_ms']} / {fl['p95_ms']} / {fl['p99_ms']}" if fl else "not run"
    ratio_ok = verdict(None if math.isnan(ratio) else ratio <= FLOOR_RATIO_TARGET)
    drain = f"{verification.drain_s:.1f} s"
    if not verification.drained:
        drain += f", NOT drained: {len(verification.pending)} pending"
    rss_cell = ", ".join(f"{k} {v['peak_mib']}" for k, v in rss.items()) or "n/a"
    dlq_cell = f"{inv.dlq_received} of {inv.dlq_expected}, duplicates {inv.dlq_duplicates}"
    spend_run = book.summary() if book is not None else {}
    s_sp, f_sp = s["spends"], (fl["spends"] if fl else None)
    inconsistent = spend_run.get("inconsistent", 0)

    def spend_ms(phase: dict[str, Any] | None) -> str:
        return f"{phase['p50_ms']} / {phase['p95_ms']}" if phase and phase["attempted"] else "n/a"

    spend_rows: list[tuple[str, str, str]] = [
        ("app spends attempted / succeeded / refused",
         f"{inv.spends + inv.spends_refused} / {inv.spends} / {inv.spends_refused}",
         f"share {args.spend_share:g}; warm-up incl.; {spend_run.get('unknown', 0) + inconsistent} unknown, "
         f"re-read: {spend_run.get('unknown_reread_written', 0)} written"),
        ("app points spent / expired", f"{inv.points_spent} / {inv.points_expired}", "checked per wallet"),
        ("spend p50 / p95 ms: service vs floor turns", f"{spend_ms(s_sp)} vs {spend_ms(f_sp)}",
         f"{s_sp['attempted']} vs {f_sp['attempted'] if f_sp else 0} spends, same share"),
        ("spend contention retries", f"{spend_run.get('retries', 0)}",
         f"service turns {s_sp['retries']}, floor turns {f_sp['retries'] if f_sp else 0}"),
        ("INCONSISTENT_PROMO_BALANCE", str(inconsistent), f"0: {verdict(inconsistent == 0)}"),
    ]  # fmt: skip
    table: list[tuple[str, str, str]] = [
        ("answer p50 / p95 / p99 ms", f"{s['p50_ms']} / {s['p95_ms']} / {s['p99_ms']}",
         f"p95 < {TARGET_P95_MS:g} ms: {below(s['p95_ms'], TARGET_P95_MS)}"),
        ("floor p50 / p95 / p99 ms", floor_cell, "same traffic mix and rate, in turns"),
        ("answer p95 / floor p95", fmt(ratio, 2) + "x", f"<= {FLOOR_RATIO_TARGET}x: {ratio_ok}"),
        ("processing p95 ms (worker)", fmt(proc_p95), f"< 250 ms: {below(proc_p95, 250)}"),
        ("lag p95 ms (received -> processed)", fmt(lag_p95), f"< 5000 ms: {below(lag_p95, 5000)}"),
        ("deliveries sent / achieved rate", f"{s['deliveries']} / {s['achieved_rate']}/s",
         f"{args.rate:g}/s offered"),
        ("events accepted / per s", f"{service.accepted_events} / {accepted_per_s}/s", "all"),
        ("worker throughput", f"{timing['worker_throughput']}/s ({timing['worker_processed']} events)", ""),
        ("non-2xx answers (retried)", str(s["errors"]), "0"),
        ("drain after the load", drain, ""),
        ("RSS peak MiB", rss_cell, ""),
        ("lost / doubled", f"{len(inv.lost)} / {len(inv.doubled)}", "0 / 0"),
        ("DLQ (unknown_product)", dlq_cell, "exact"),
        *(spend_rows if book is not None else []),
        ("invariants", "OK" if inv.ok and verification.drained else "FAILED", "OK"),
    ]  # fmt: skip
    labels = Counter(d.label for d in deliveries)
    return {
        "started_at": started_at,
        "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "stack": ", ".join(stack.started) or f"existing at {stack.url}",
        "config": {
            "rate": args.rate,
            "duration": args.duration,
            "worker": stack.worker_kind,
            "users": args.users,
            "seed": args.seed,
            "spend_share": args.spend_share,
            "floor_duration": args.floor_duration,
            "log_level": args.log_level,
            "find_max": bool(args.find_max),
            "step_duration": args.step_duration,
            "step_factor": args.step_factor,
            "warmup": args.warmup,
            "worker_nice": args.worker_nice if stack.worker_kind == "pull" and stack.started else None,
        },
        "service": s,
        "floor": fl,
        "answer_p95_over_floor": ratio,
        "processing_ms": {
            "count": len(processing),
            "p50": percentile(processing, 50),
            "p95": proc_p95,
            "p99": percentile(processing, 99),
        },
        "lag_ms": {
            "count": len(timing["lag_ms"]),
            "p50": percentile(timing["lag_ms"], 50),
            "p95": lag_p95,
            "p99": percentile(timing["lag_ms"], 99),
            "max": max(timing["lag_ms"], default=float("nan")),
        },
        "throughput": {
            "achieved_send_rate": s["achieved_rate"],
            "accepted_per_s": accepted_per_s,
            "worker_per_s": timing["worker_throughput"],
            "processed_by": timing["processed_by"],
        },
        "rss": rss,
        "drain": {
            "drained": verification.drained,
            "seconds": round(verification.drain_s, 1),
            "pending": dict(list(verification.pending.items())[:10]),
        },
        "invariants": {**inv.to_dict(), "summary": inv.summary()},
        "spends": {
            "share": args.spend_share,
            "run": spend_run,  # every turn, warm-up included, as the tool saw each outcome
            "checked": {  # after the re-reads, as the invariants checked them
                "attempted": inv.spends + inv.spends_refused,
                "succeeded": inv.spends,
                "refused": inv.spends_refused,
                "points_spent": inv.points_spent,
                "points_expired": inv.points_expired,
            },
            "service": s_sp,
            "floor": f_sp,
            "inconsistent": inconsistent,
        },
        "traffic": {
            "deliveries_by_label": dict(labels),
            "spends_planned": len(spends),
            "events": len(expectation.events),
            "users": len(expectation.uids),
            "skipped": service.skipped + (floor.skipped if floor is not None else 0),
        },
        "find_max": find_max,
        "table": table,
        "method": METHOD,
        "logs": [str(p) for p in stack.worker_logs],
    }


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
        rate, duration = config["rate"], config["duration"]
        print(f"Load test: {rate:g}/s for {duration:g} s, worker {config['worker']}{nice}")
    print("-" * (width + vwidth + 30))
    for name, value, target in result["table"]:
        print(f"{name:<{width}}  {value:<{vwidth}}  {target}")
    print("-" * (width + vwidth + 30))
    if result.get("find_max"):
        fm = result["find_max"]
        print(
            f"find-max: service {fm['service_max']}/s, floor {fm['floor_max']}/s, ratio {fmt(fm['ratio'], 2)}"
        )
        print(
            "  ".join(
                f"{h:>10}"
                for h in ("rate", "svc/s", "svc p95", "errors", "drain s", "floor/s", "fl p95", "fl err")
            )
        )
        for step in fm["steps"]:
            print("  ".join(f"{c!s:>10}" for c in _step_cells(step)))
    print(result["invariants"]["summary"])


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_reports(result: dict[str, Any], service: PhaseResult, floor: PhaseResult | None, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stem = "load-" + time.strftime("%Y%m%d-%H%M%S") + ("-findmax" if result.get("find_max") else "")
    png = out / f"{stem}.png"
    png.write_bytes(
        latency_png(
            service,
            floor,
            f"ANSWER MS PER SECOND {result['config']['rate']:g}/S {result['config']['worker'].upper()}",
        )
    )
    (out / f"{stem}.json").write_text(
        json.dumps(_clean(result), indent=1, default=str) + "\n", encoding="utf-8"
    )
    (out / f"{stem}.md").write_text(render_markdown(result, png.name), encoding="utf-8")
    return out / f"{stem}.md"


# ---- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rate", type=float, default=100, help="deliveries per second (default 100)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load (default 60)")
    parser.add_argument("--users", type=int, default=0, help="distinct users (default: one per 6 deliveries)")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the traffic plan")
    parser.add_argument(
        "--spend-share",
        type=float,
        default=Mix.spend_share,
        help=f"the app's spends per delivery, in the service's and the floor's turns alike "
        f"(default {Mix.spend_share:g}; 0: none)",
    )
    parser.add_argument(
        "--worker", choices=("pull", "push"), default="pull", help="pull worker or push to serve"
    )
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=10,
        help="CPU niceness of the pull worker it starts (default 10; 0 for equal priority)",
    )
    parser.add_argument(
        "--floor-duration", type=float, default=None, help="seconds of floor (default: --duration; 0 skips)"
    )
    parser.add_argument(
        "--rounds", type=int, default=6, help="segments the service and the floor take turns in (default 6)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=30,
        help="seconds of unmeasured traffic first, at the rate (default 30: the emulators' JVMs need it)",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=120, help="max seconds to wait for the queue to drain"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="LOG_LEVEL of the service processes it starts (at INFO the worker's log gives processing_ms)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="report directory")
    parser.add_argument("--port", type=int, default=0, help="HTTP port of the serve process it starts")
    fm = parser.add_argument_group("find-max")
    fm.add_argument(
        "--find-max", action="store_true", help="raise the rate until answer p95 > 50 ms or errors"
    )
    fm.add_argument("--step-duration", type=float, default=10, help="seconds per step (default 10)")
    fm.add_argument("--step-factor", type=float, default=1.5, help="rate multiplier per step (default 1.5)")
    fm.add_argument("--max-steps", type=int, default=8, help="at most this many steps (default 8)")
    fm.add_argument(
        "--max-time", type=float, default=600, help="stop raising after this many seconds (default 600)"
    )
    ex = parser.add_argument_group("an existing stack")
    ex.add_argument("--url", help="webhook URL of a running stack (the tool starts nothing)")
    ex.add_argument("--pubsub-host", help="Pub/Sub emulator host:port (default: start one)")
    ex.add_argument("--firestore-host", help="Firestore emulator host:port (default: start one)")
    ex.add_argument("--project", help="Google Cloud project id")
    ex.add_argument("--secret", help="PayNow webhook secret (default: first of PAYNOW_WEBHOOK_SECRETS)")
    ex.add_argument("--catalog", help="the stack's product catalog (default: PRODUCT_CATALOG)")
    ex.add_argument("--dlq-subscription", help="DLQ subscription id (default: PUBSUB_DLQ_SUBSCRIPTION)")
    ex.add_argument("--server-pid", type=int, help="PID of the HTTP server (for RSS)")
    ex.add_argument("--worker-pid", type=int, help="PID of the worker (for RSS)")
    ex.add_argument(
        "--worker-log", action="append", default=[], help="worker log file (processing_ms); repeatable"
    )
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    if not 0 <= args.spend_share <= 1:
        parser.error("--spend-share must be between 0 and 1")
    if args.floor_duration is None:
        args.floor_duration = args.step_duration if args.find_max else args.duration
    return args


def _mix(args: argparse.Namespace) -> Mix:
    return Mix(spend_share=args.spend_share)


def _warm_up(
    args: argparse.Namespace, stack: Stack, factory: EventFactory, sender: WebhookSender,
    users: Sequence[str], floor_users: Sequence[str], rng: random.Random, floor_target: FloorTarget,
) -> dict[str, Any]:  # fmt: skip
    """Real traffic (the app's spends included) through the whole pipeline, then through the floor, before
    measuring: the emulators' JVMs compile their hot paths and every client opens its channels. Its events
    and spends count in the invariants; its latencies are reported apart."""
    rate, mix, book, expectation = args.rate, _mix(args), sender.book, sender.expectation
    deliveries, spends = plan_phase(factory, rate=rate, duration=args.warmup, users=users, rng=rng, mix=mix)
    phase = run_async(sender.run("warm-up", rate, args.warmup, deliveries, spends))
    floor_s = min(args.warmup, 5.0)
    floor_part, floor_spends = plan_phase(
        factory, rate=rate, duration=floor_s, users=floor_users, rng=rng, mix=mix
    )
    floor = run_async(
        run_floor(stack.project, floor_target, "floor warm-up", rate, floor_s, floor_part, floor_spends, book)
    )
    wait_drained(stack.project, expectation, timeout_s=60)
    # One more unmeasured turn of each after the drain: measured, the first seconds after it were slow
    # (p95 up to 96 ms for about 8 s, both emulators catching up with the drain's burst of reads), and
    # they fell on whichever turn came first.
    part, part_spends = plan_phase(factory, rate=rate, duration=floor_s, users=users, rng=rng, mix=mix)
    service_settle = run_async(sender.run("settle", rate, floor_s, part, part_spends))
    part, part_spends = plan_phase(factory, rate=rate, duration=floor_s, users=floor_users, rng=rng, mix=mix)
    floor_settle = run_async(
        run_floor(stack.project, floor_target, "floor settle", rate, floor_s, part, part_spends, book)
    )
    return {
        "service": phase.summary(),
        "floor": floor.summary(),
        "service after the drain": service_settle.summary(),
        "floor after the drain": floor_settle.summary(),
    }


def _floor_topic(stack: Stack, run: str) -> str:
    """find-max's floor publishes to a topic of its own (no subscription: nobody consumes it)."""
    topic = stack.settings.topic_path(f"load-floor-{run}")
    publisher = PublisherClient()
    with contextlib.suppress(gexc.AlreadyExists):
        publisher.create_topic(name=topic, timeout=30)
    return topic


def _slices(deliveries: Sequence[Timed], total_s: float, rounds: int) -> list[list[Timed]]:
    """A phase's planned deliveries (or spends) cut into `rounds` consecutive segments, each re-timed
    from 0."""
    size = total_s / rounds
    slices: list[list[Timed]] = [[] for _ in range(rounds)]
    for delivery in deliveries:
        k = min(rounds - 1, int(delivery.due // size))
        slices[k].append(dataclasses.replace(delivery, due=delivery.due - k * size))
    return slices


def _absorb(total: PhaseResult, part: PhaseResult, offset_s: float) -> None:
    """Add one segment's results to its phase, its sample times moved onto the run's clock."""
    for sample in part.samples:
        sample.t += offset_s
    total.samples += part.samples
    total.skipped += part.skipped
    total.wall_s += part.wall_s
    total.lag_s = max(total.lag_s, part.lag_s)
    total.spends.absorb(part.spends, offset_s)


def _interleaved(
    args: argparse.Namespace, stack: Stack, sender: WebhookSender, service_plan: Sequence[Delivery],
    floor_plan: Sequence[Delivery], floor_target: FloorTarget, service_spends: Sequence[Spend] = (),
    floor_spends: Sequence[Spend] = (),
) -> tuple[PhaseResult, PhaseResult | None]:  # fmt: skip
    """The service and the floor take turns in short segments, so both meet the same machine: the same
    emulator warmth, the same neighbours, the worker processing both one's and the other's events. Each
    turn carries its share of the app's spends."""
    rounds = max(1, min(args.rounds, int(args.duration)))
    service = PhaseResult("service", args.rate, args.duration)
    floor = PhaseResult("floor", args.rate, args.floor_duration) if floor_plan else None
    service_slices = _slices(service_plan, args.duration, rounds)
    floor_slices = _slices(floor_plan, args.floor_duration, rounds) if floor_plan else []
    service_spend_slices = _slices(service_spends, args.duration, rounds)
    floor_spend_slices = _slices(floor_spends, args.floor_duration, rounds) if floor_plan else []
    service_s, floor_s = args.duration / rounds, args.floor_duration / rounds
    began = time.perf_counter()
    for k in range(rounds):
        # Counterbalanced (service, floor), (floor, service), ...: the machine drifts during a run (the
        # emulators' JVMs are still warming), and whoever always went first would always meet it worse.
        for turn in ("service", "floor") if k % 2 == 0 else ("floor", "service"):
            offset = time.perf_counter() - began
            if turn == "service":
                part = run_async(
                    sender.run("service", args.rate, service_s, service_slices[k], service_spend_slices[k])
                )
                _absorb(service, part, offset)
            elif floor is not None:
                part = run_async(
                    run_floor(
                        stack.project, floor_target, "floor", args.rate, floor_s, floor_slices[k],
                        floor_spend_slices[k], sender.book,
                    )
                )  # fmt: skip
                _absorb(floor, part, offset)
    return service, floor


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    args.seed = seed
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    with open_stack(args) as stack:
        factory = EventFactory(stack.catalog, rng=rng)
        expectation = Expectation()
        n_users = args.users or max(20, round(args.rate * args.duration / 6))
        users = [f"load-{run}-u{i}" for i in range(n_users)]
        floor_users = [f"load-{run}-f{i}" for i in range(n_users)]
        # The floor writes the service's own records and publishes to its topic: the worker processes
        # the floor's events too, and the invariants check them.
        events_topic = stack.settings.topic_path(stack.settings.pubsub_topic)
        keys = stack.settings.event_signing_keys
        signer = EventSigner(keys) if keys else None
        if signer is None:
            print(
                "load: no EVENT_SIGNING_KEYS: the floor's messages go unsigned (the worker dead-letters "
                "them)",
                file=sys.stderr,
                flush=True,
            )
        pipeline_floor = FloorTarget(events_topic, EVENTS, expectation, signer)
        # The app's spends, recorded in the same expectation (bench/load_spends.py).
        book = SpendBook(expectation, stack.project)
        sender = WebhookSender(stack.url, stack.secret, expectation, book)
        print(f"warming up for {args.warmup:g} s ({stack.url}) ...", file=sys.stderr, flush=True)
        warm = _warm_up(args, stack, factory, sender, users, floor_users, rng, pipeline_floor)
        rss = RssSampler(stack.pids).start()
        find_max: dict[str, Any] | None = None
        spends: list[Spend] = []
        floor: PhaseResult | None = None
        if args.find_max:
            apart = FloorTarget(_floor_topic(stack, run), f"loadFloor-{run}", signer=signer)
            # The plan, the expectation and the clients live as long as the run: frozen out of the
            # collector's reach, a full collection no longer pauses the sender and the floor (100-300 ms
            # each, measured, with them in).
            freeze_startup_heap()
            service, floor, find_max, deliveries, spends = _find_max(
                args, stack, factory, sender, run, rng, apart
            )
        else:
            deliveries, spends = plan_phase(
                factory, rate=args.rate, duration=args.duration, users=users, rng=rng, mix=_mix(args)
            )
            floor_plan: list[Delivery] = []
            floor_spends: list[Spend] = []
            if args.floor_duration > 0:
                floor_plan, floor_spends = plan_phase(
                    factory, rate=args.rate, duration=args.floor_duration, users=floor_users, rng=rng,
                    mix=_mix(args),
                )  # fmt: skip
            print(
                f"load: {len(deliveries)} deliveries and {len(spends)} spends at {args.rate:g}/s for "
                f"{args.duration:g} s, {len(floor_plan)} and {len(floor_spends)} through the floor, "
                "in turns ...",
                file=sys.stderr,
                flush=True,
            )
            freeze_startup_heap()  # as for find-max above
            service, floor = _interleaved(
                args, stack, sender, deliveries, floor_plan, pipeline_floor, spends, floor_spends
            )
            deliveries = [*deliveries, *floor_plan]
            spends = [*spends, *floor_spends]
        rss_result = rss.stop()
        print("waiting for the queue to drain and checking the invariants ...", file=sys.stderr, flush=True)
        verification = verify(stack, expectation, book, drain_timeout_s=args.drain_timeout)
        result = build_result(
            args,
            stack,
            started_at,
            service,
            floor,
            verification,
            expectation,
            rss_result,
            deliveries,
            find_max,
            book,
            spends,
        )
        result["warm_up"] = warm
        print_table(result)
        report = write_reports(result, service, floor, args.out)
        print(f"\nreport: {report} (and .json, .png)")
        if stack.workdir is not None:
            print(f"service logs: {stack.workdir}")
    return 0 if verification.report.ok and verification.drained and not book.inconsistent else 1


def _sustained(summary: dict[str, Any]) -> bool:
    """A find-max step holds: answer p95 within the ceiling and not one error answer."""
    return bool(summary["p95_ms"] <= TARGET_P95_MS and summary["errors"] == 0)


def _find_max(
    args: argparse.Namespace, stack: Stack, factory: EventFactory, sender: WebhookSender, run: str,
    rng: random.Random, floor_target: FloorTarget,
) -> tuple[PhaseResult, PhaseResult | None, dict[str, Any], list[Delivery], list[Spend]]:  # fmt: skip
    """Raise the rate step by step (bounded in steps and time), for the service and for the floor, each
    until its answer p95 passes 50 ms or it answers an error. Between steps the queue drains (bounded).
    Returns the highest sustained service step (else the first), its floor step, the summary, every
    delivery and every spend. A step's floor sends the same deliveries (to its own collection) and spends
    of its own, planned alike on the same users: from the wallets the service's step credited (or from
    none, refused, once the service stopped)."""
    expectation = sender.expectation
    began = time.monotonic()
    rate = args.rate
    service_ok = floor_ok = True
    service_max = floor_max = 0.0
    steps: list[dict[str, Any]] = []
    phases: list[tuple[PhaseResult | None, PhaseResult | None, bool]] = []
    all_deliveries: list[Delivery] = []
    all_spends: list[Spend] = []
    for index in range(args.max_steps):
        if not (service_ok or floor_ok) or time.monotonic() - began > args.max_time:
            break
        users = [f"load-{run}-s{index}-u{i}" for i in range(max(20, round(rate * args.step_duration / 6)))]
        deliveries, spends = plan_phase(
            factory, rate=rate, duration=args.step_duration, users=users, rng=rng, mix=_mix(args)
        )
        floor_spends = plan_spends(deliveries, share=args.spend_share, rng=rng, delay_s=Mix.spend_delay_s)
        all_deliveries += deliveries
        step: dict[str, Any] = {"rate": round(rate, 1)}
        service = floor = None
        service_sustained = False
        if service_ok:
            print(f"find-max step {index + 1}: service at {rate:g}/s ...", file=sys.stderr, flush=True)
            service = run_async(
                sender.run(f"service {rate:g}/s", rate, args.step_duration, deliveries, spends)
            )
            all_spends += spends
            step["service"] = service.summary()
            t0 = time.monotonic()
            wait_s = min(90.0, args.drain_timeout)
            drained, pending = wait_drained(stack.project, expectation, timeout_s=wait_s)
            step["drain_s"] = (
                round(time.monotonic() - t0, 1) if drained else f">{wait_s:g} ({len(pending)} left)"
            )
            service_sustained = step["service"]["sustained"] = _sustained(step["service"])
            if service_sustained:
                service_max = round(rate, 1)
            else:
                service_ok = False
        if floor_ok:
            print(f"find-max step {index + 1}: floor at {rate:g}/s ...", file=sys.stderr, flush=True)
            floor = run_async(
                run_floor(
                    stack.project,
                    floor_target,
                    f"floor {rate:g}/s",
                    rate,
                    args.step_duration,
                    deliveries,
                    floor_spends,
                    sender.book,
                )
            )
            all_spends += floor_spends
            step["floor"] = floor.summary()
            floor_sustained = step["floor"]["sustained"] = _sustained(step["floor"])
            if floor_sustained:
                floor_max = round(rate, 1)
            else:
                floor_ok = False
        steps.append(step)
        phases.append((service, floor, service_sustained))
        rate *= args.step_factor
    sustained = [p for p in phases if p[2]]
    service, floor, _ = sustained[-1] if sustained else phases[0]
    summary = {
        "service_max": service_max,
        "floor_max": floor_max,
        "ratio": _ratio(service_max, floor_max),
        "capped": service_ok or floor_ok,
        "criterion": f"answer p95 <= {TARGET_P95_MS:g} ms and no error answer",
        "step_duration_s": args.step_duration,
        "steps": steps,
    }
    assert service is not None
    return service, floor, summary, all_deliveries, all_spends


if __name__ == "__main__":
    sys.exit(main())
