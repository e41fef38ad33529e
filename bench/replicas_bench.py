"""Throughput with K webhook replicas and K pull workers behind a round-robin proxy, and what a
kill -9 of one of each costs (it must lose and double nothing).

    python bench/replicas_bench.py [--replicas 1,2] [--rate 50] [--duration 20] [--warmup 10]
                                   [--kill] [--kill-at 0.4] [--balance request] [--json FILE]

Starts both emulators on loopback once. Then for each K of --replicas, on topics and users of its
own: the topology with the load tool's fast test overrides (ack deadline 10 s, backoff 1-2 s),
K `paynow-service serve` (queue mode, HTTP_ROUTES=webhook) and K `paynow-service worker`
(WORKER_PULL_MODE=unary: the emulator delivers nothing more to a streaming subscriber once another
has stopped, README; at --worker-nice, 10 by default as in the load tool), and a round-robin proxy
(`paynow_loadtest.round_robin`, per request by default) in front of the K serve. The load tool's
traffic (`paynow_loadtest.traffic`: its default mix, the app's spends at --spend-share) goes through
the proxy with its sender (`paynow_loadtest.driver.WebhookSender`: signed as PayNow signs, open loop,
a non-2xx answer or transport error retried after 1, 2 and 4 s): --warmup seconds first (its
events count in the invariants, not in the throughput), a drain, then --duration seconds measured.
Then the load tool's own verification (`paynow_loadtest.phases.verify`): the drain (bounded), the
DLQ pulled, every invariant checked (0 lost, 0 doubled, the DLQ exact).

--kill (K >= 2 only): at --kill-at of the measured phase, `kill -9` serve replica 0 and worker 0
(`ServiceProcess.kill`); the sender keeps sending, the proxy skips the dead replica, the requests
that were on it get a 502 and are retried. A worker killed inside its Firestore transaction keeps
that transaction's locks until the emulator expires it (about a minute), so the drain is longer,
deliveries are capped higher (MAX_DELIVERY_ATTEMPTS 100, as tests/chaos/test_worker_kill.py) and
a dead letter published twice (the killed worker's ack lost) is tolerated; every bad event must
still be in the DLQ with its reason, and nothing else.

Reported per K: the answers (p50/p95 through the proxy, non-2xx), events processed per second
(the measured events the workers processed / first receivedAt -> last processedAt, from Firestore,
`paynow_loadtest.report.pipeline_timing`), lag, drain, the invariants; per replica: the answers of
each serve (counted by the proxy per request; its log's "Webhook received" lines too, the only count
with --balance connection) and the events each worker processed (its log's "Worker processed event
successfully" lines); a process killed -9 loses the log lines it had not yet written. Bounded: the
load is --rate x --duration, every request and wait has a deadline, and it stops what it started.
Exit status 1 if an invariant fails or the queue did not drain.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paynow_loadtest.driver import WebhookSender, run_async
from paynow_loadtest.expectation import Expectation
from paynow_loadtest.phases import Verification, verify
from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.report import pipeline_timing
from paynow_loadtest.results import PhaseResult, percentile
from paynow_loadtest.round_robin import PER, ReplicaStats, RoundRobinProxy
from paynow_loadtest.spends import SpendBook
from paynow_loadtest.stack import CATALOG, FAST, SECRET, Stack
from paynow_loadtest.state import wait_drained
from paynow_loadtest.traffic import Delivery, Mix, Spend, new_traffic, plan_phase
from paynow_loadtest.webhook import WEBHOOK_PATH
from paynow_service.adapters.emulators import EmulatorStack, free_port
from paynow_service.adapters.pubsub_infra import PubSubInfra, desired_topology
from paynow_service.config import Settings
from paynow_service.domain.catalog import Catalog

RECEIVED = "Webhook received"
PROCESSED = "Worker processed event successfully"
SKIPPED = "Event already processed - skipping"
KILL_ATTEMPTS = "100"  # MAX_DELIVERY_ATTEMPTS with --kill (tests/chaos/test_worker_kill.py's reason)


@dataclass
class Replicas:
    """K serve and K workers on topics of their own, the proxy in front of the serve."""

    k: int
    servers: list[ServiceProcess]
    workers: list[ServiceProcess]
    proxy: RoundRobinProxy
    stack: Stack

    def stop(self) -> None:
        self.proxy.stop()
        for process in [*self.servers, *self.workers]:
            process.stop()


@dataclass
class KillRecord:
    at_s: float = 0.0  # seconds into the measured phase
    server: int = 0  # index of the serve killed
    worker: int = 0
    # per serve: the 2xx POST answers of the measured phase up to the kill (the killed one's, all of them)
    answers_before: list[int] = field(default_factory=list)


def service_env(emulators: EmulatorStack, workdir: Path, k: int, args: argparse.Namespace) -> dict[str, str]:
    catalog = workdir / "catalog.toml"
    catalog.write_text(CATALOG)
    run = f"rep{k}-{uuid.uuid4().hex[:6]}"
    return emulators.env() | {
        "PUBSUB_TOPIC": f"{run}-events",
        "PUBSUB_DLQ_TOPIC": f"{run}-events-dlq",
        "PUBSUB_SUBSCRIPTION": f"{run}-events-sub",
        "PUBSUB_DLQ_SUBSCRIPTION": f"{run}-events-dlq-sub",
        "PAYNOW_WEBHOOK_SECRETS": SECRET,
        "EVENT_SIGNING_KEYS": f"replicas-{secrets.token_hex(24)}",
        "PRODUCT_CATALOG": str(catalog),
        "WEBHOOK_MODE": "queue",
        "HTTP_ROUTES": "webhook",
        "PUSH_AUTH": "disabled",
        "POINTS_AUTH": "disabled",
        "LOG_LEVEL": "INFO",
        "WORKER_PULL_MODE": "unary",
        "MAX_DELIVERY_ATTEMPTS": args.max_delivery_attempts,
    }


def wait_log(process: ServiceProcess, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in process.logs():
            return
        if process.process.poll() is not None:
            break
        time.sleep(0.2)
    raise SystemExit(f"{process.command} did not log {text!r}:\n{process.logs()[-3000:]}")


def start_replicas(k: int, args: argparse.Namespace, emulators: EmulatorStack, workdir: Path) -> Replicas:
    env = service_env(emulators, workdir, k, args)
    settings = Settings.from_env(env)
    infra = PubSubInfra(settings)
    try:
        infra.apply(desired_topology(settings, FAST))
    finally:
        infra.close()
    servers: list[ServiceProcess] = []
    workers: list[ServiceProcess] = []
    proxy: RoundRobinProxy | None = None
    try:
        for _ in range(k):
            port = free_port()
            servers.append(ServiceProcess("serve", env | {"PORT": str(port)}, workdir, port=port))
        for _ in range(k):
            workers.append(ServiceProcess("worker", env, workdir, nice=args.worker_nice))
        for server in servers:
            server.wait_ready(60)
        for worker in workers:
            wait_log(worker, "Worker pulling", 60)
        budget = args.warmup + args.duration + 600  # the proxy stops by itself after the run at the latest
        upstreams = [("127.0.0.1", int(s.port or 0)) for s in servers]
        proxy = RoundRobinProxy(upstreams, per=args.balance, max_lifetime_s=budget).start()
    except BaseException:
        for process in [*servers, *workers]:
            process.stop()
        raise
    pids = {f"server{i}": s.process.pid for i, s in enumerate(servers)}
    pids |= {f"worker{i}": w.process.pid for i, w in enumerate(workers)}
    stack = Stack(
        url=proxy.url(WEBHOOK_PATH), settings=settings, project=settings.google_cloud_project,
        secret=SECRET, catalog=Catalog.from_toml(CATALOG), worker_kind="pull", pids=pids,
        worker_logs=[w.log_path for w in workers], workdir=workdir,
        started=[*(f"serve{i}" for i in range(k)), *(f"worker{i}" for i in range(k))],
    )  # fmt: skip
    return Replicas(k, servers, workers, proxy, stack)


def _ok_posts(stats: Sequence[ReplicaStats]) -> list[int]:
    return [s.answered("POST", ok=True) for s in stats]


def _delta(after: Sequence[ReplicaStats], before: Sequence[ReplicaStats]) -> list[dict[str, Any]]:
    """Per replica, what the proxy counted between two snapshots."""
    out = []
    for a, b in zip(after, before, strict=True):
        answers = Counter(a.answers)
        answers.subtract(b.answers)
        out.append({
            "upstream": a.upstream,
            "answered_2xx": a.answered("POST", ok=True) - b.answered("POST", ok=True),
            "answered_non_2xx": a.answered("POST") - b.answered("POST")
            - (a.answered("POST", ok=True) - b.answered("POST", ok=True)),
            "failed": a.failed - b.failed,
            "refused": a.refused - b.refused,
            "connections": a.connections - b.connections,
            "answers": {key: n for key, n in answers.items() if n},
        })  # fmt: skip
    return out


def serve_received(logs: Sequence[Path], measured: set[str]) -> list[int]:
    """Per serve log: the measured events' requests it received (a serve killed -9 loses its last lines)."""
    counts = []
    for path in logs:
        text = path.read_text(errors="replace") if path.exists() else ""
        count = 0
        for line in text.splitlines():
            if RECEIVED in line:
                try:
                    count += json.loads(line).get("event_id") in measured
                except ValueError:
                    continue
        counts.append(count)
    return counts


def worker_counts(logs: Sequence[Path], measured: set[str]) -> list[dict[str, float]]:
    """Per worker log: events processed (all of the run's, the measured ones) and duplicates skipped."""
    out: list[dict[str, float]] = []
    for path in logs:
        processed = processed_measured = skipped = 0
        text = path.read_text(errors="replace") if path.exists() else ""
        for line in text.splitlines():
            if PROCESSED not in line and SKIPPED not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if SKIPPED in line:
                skipped += 1
                continue
            processed += 1
            processed_measured += record.get("event_id") in measured
        out.append({"processed": processed, "processed_measured": processed_measured, "skipped": skipped})
    return out


async def _measured(
    replicas: Replicas,
    sender: WebhookSender,
    args: argparse.Namespace,
    plan: tuple[list[Delivery], list[Spend]],
    kill: KillRecord | None,
    before: Sequence[ReplicaStats],
) -> PhaseResult:
    """The measured phase; with `kill`, serve and worker `kill.server`/`kill.worker` killed -9 mid-way
    (`before`: the proxy's counts when the phase began)."""

    async def kill_later() -> None:
        assert kill is not None
        await asyncio.sleep(args.kill_at * args.duration)
        began = time.perf_counter()
        await asyncio.to_thread(replicas.servers[kill.server].kill)
        await asyncio.to_thread(replicas.workers[kill.worker].kill)
        kill.at_s = args.kill_at * args.duration + (time.perf_counter() - began)
        await asyncio.sleep(0.3)  # whatever the dead serve had sent reached the proxy: its count is final
        now = _ok_posts(await asyncio.to_thread(replicas.proxy.snapshot))
        kill.answers_before = [n - b for n, b in zip(now, _ok_posts(before), strict=True)]
        print(
            f"  killed -9 serve {kill.server} and worker {kill.worker} at {kill.at_s:.1f} s; "
            f"2xx answers per serve before: {kill.answers_before}",
            file=sys.stderr,
            flush=True,
        )

    killer = asyncio.create_task(kill_later()) if kill is not None else None
    try:
        return await sender.run("measured", args.rate, args.duration, *plan)
    finally:
        if killer is not None:
            await killer


def run_replicas(k: int, args: argparse.Namespace, emulators: EmulatorStack, workdir: Path) -> dict[str, Any]:
    print(f"K={k}: starting {k} serve and {k} workers ...", file=sys.stderr, flush=True)
    replicas = start_replicas(k, args, emulators, workdir)
    stack, proxy = replicas.stack, replicas.proxy
    try:
        expectation = Expectation()
        book = SpendBook(expectation, stack.project)
        sender = WebhookSender(stack.url, stack.secret, expectation, book)
        users = args.users or max(20, round(args.rate * (args.duration + args.warmup) / 6))
        factory, user_ids, rng = new_traffic(stack.catalog, seed=args.seed + k, users=users, run=f"rep{k}")
        mix = Mix(spend_share=args.spend_share)
        if args.warmup > 0:
            warm = plan_phase(factory, rate=args.rate, duration=args.warmup, users=user_ids, rng=rng, mix=mix)
            print(f"K={k}: warming up {args.warmup:g} s ...", file=sys.stderr, flush=True)
            run_async(sender.run("warm-up", args.rate, args.warmup, *warm))
            wait_drained(stack.project, expectation, timeout_s=60)
        plan = plan_phase(factory, rate=args.rate, duration=args.duration, users=user_ids, rng=rng, mix=mix)
        measured_ids = {d.planned.event_id for d in plan[0]}
        kill = KillRecord() if args.kill and k >= 2 else None
        if args.kill and kill is None:
            print(f"K={k}: --kill needs 2 replicas or more: not killing", file=sys.stderr, flush=True)
        before = proxy.snapshot()
        print(f"K={k}: {len(plan[0])} deliveries and {len(plan[1])} spends at {args.rate:g}/s for "
              f"{args.duration:g} s through the proxy ...", file=sys.stderr, flush=True)  # fmt: skip
        phase = run_async(_measured(replicas, sender, args, plan, kill, before))
        after = proxy.snapshot()
        print(f"K={k}: waiting for the drain, checking the invariants ...", file=sys.stderr, flush=True)
        verification = verify(
            stack, expectation, book, drain_timeout_s=args.drain_timeout, strict_dlq=kill is None
        )
        return summarize(k, args, phase, verification, measured_ids, before, after, kill, replicas)
    finally:
        replicas.stop()


def summarize(
    k: int, args: argparse.Namespace, phase: PhaseResult, verification: Verification, measured: set[str],
    before: Sequence[ReplicaStats], after: Sequence[ReplicaStats], kill: KillRecord | None,
    replicas: Replicas,
) -> dict[str, Any]:  # fmt: skip
    timing = pipeline_timing(verification.records, measured)
    lags = timing.pop("lag_ms")
    latencies = phase.latencies()
    workers = worker_counts(replicas.stack.worker_logs, measured)
    serve = _delta(after, before)
    for entry, received in zip(
        serve, serve_received([s.log_path for s in replicas.servers], measured), strict=True
    ):
        entry["log_received"] = received
    span = _span(verification.records, measured)
    for count in workers:
        count["per_s"] = round(count["processed_measured"] / span, 1) if span > 0 else float("nan")
    report = verification.report
    return {
        "replicas": k,
        "balance": args.balance,
        "rate": args.rate,
        "duration_s": args.duration,
        "deliveries": len(phase.first_tries),
        "accepted_measured": phase.accepted_events,
        "accepted_per_s": round(phase.accepted_events / phase.wall_s, 1) if phase.wall_s else float("nan"),
        "answer_p50_ms": round(statistics.median(latencies), 2) if latencies else float("nan"),
        "answer_p95_ms": round(percentile(latencies, 95), 2),
        "non_2xx": phase.errors,
        "never_2xx": len({s.event_id for s in phase.samples} - {s.event_id for s in phase.samples if s.ok}),
        "outcomes": dict(Counter(s.outcome for s in phase.samples)),
        "processed_per_s": timing["worker_throughput"],
        "processed_by": timing["processed_by"],
        "worker_processed": timing["worker_processed"],
        "lag_p50_ms": round(percentile(lags, 50), 1),
        "lag_p95_ms": round(percentile(lags, 95), 1),
        "drained": verification.drained,
        "drain_s": round(verification.drain_s, 1),
        "pending": dict(list(verification.pending.items())[:10]),
        "invariants_ok": report.ok,
        "invariants": report.to_dict(),
        "invariants_summary": report.summary(),
        "serve": serve,
        "workers": workers,
        "kill": None if kill is None else {
            "at_s": round(kill.at_s, 1), "serve": kill.server, "worker": kill.worker,
            "answers_2xx_before_per_serve": kill.answers_before,
        },
        "max_delivery_attempts": args.max_delivery_attempts,
    }  # fmt: skip


def _span(records: dict[str, dict[str, Any]], measured: set[str]) -> float:
    """First receivedAt -> last processedAt of the measured events the workers processed, in seconds."""
    got, done = [], []
    for event_id in measured:
        record = records.get(event_id) or {}
        received, processed = record.get("receivedAt"), record.get("processedAt")
        if record.get("status") == "processed" and isinstance(received, dt.datetime):
            got.append(received)
            if isinstance(processed, dt.datetime):
                done.append(processed)
    return (max(done) - min(got)).total_seconds() if got and done else 0.0


def print_tables(results: list[dict[str, Any]]) -> None:
    print(
        "\n| replicas | deliveries | accepted/s | answer p50 / p95 ms | non-2xx (retried) | never 2xx "
        "| processed/s | lag p50 / p95 ms | drain s | invariants | lost | doubled "
        "| DLQ received / expected (dup.) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in results:
        inv = r["invariants"]
        kill = f" (kill -9 at {r['kill']['at_s']} s)" if r["kill"] else ""
        cells = [
            f"{r['replicas']}{kill}", str(r["deliveries"]), str(r["accepted_per_s"]),
            f"{r['answer_p50_ms']} / {r['answer_p95_ms']}", str(r["non_2xx"]), str(r["never_2xx"]),
            str(r["processed_per_s"]), f"{r['lag_p50_ms']} / {r['lag_p95_ms']}",
            f"{r['drain_s']}{'' if r['drained'] else ' NOT drained'}",
            "OK" if r["invariants_ok"] else "FAILED", str(inv["lost"]), str(inv["doubled"]),
            f"{inv['dlq_received']} / {inv['dlq_expected']} ({inv['dlq_duplicates']})",
        ]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    print(
        "\n| replicas | replica | serve: 2xx answers (before the kill) | non-2xx | broken (502) | refused "
        "| serve log: requests received "
        "| worker: processed (measured) | per s | duplicates skipped |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        before = r["kill"]["answers_2xx_before_per_serve"] if r["kill"] else None
        for i, (serve, worker) in enumerate(zip(r["serve"], r["workers"], strict=True)):
            killed = r["kill"] is not None and i == r["kill"]["serve"]
            mark = " (killed -9)" if killed else ""
            early = f" ({before[i]})" if before else ""
            cells = [
                str(r["replicas"]), f"{i}{mark}", f"{serve['answered_2xx']}{early}",
                str(serve["answered_non_2xx"]), str(serve["failed"]), str(serve["refused"]),
                str(serve["log_received"]),
                f"{worker['processed']} ({worker['processed_measured']})", str(worker["per_s"]),
                str(worker["skipped"]),
            ]  # fmt: skip
            print("| " + " | ".join(cells) + " |")
    for r in results:
        print(f"\nK={r['replicas']}: {r['invariants_summary']}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--replicas", default="1,2", help="comma list of replica counts K (default 1,2)")
    add("--rate", type=float, default=50, help="deliveries per second (default 50)")
    add("--duration", type=float, default=20, help="measured seconds per K (default 20)")
    add("--warmup", type=float, default=10, help="unmeasured seconds per K first, then a drain (default 10)")
    add("--users", type=int, default=0, help="distinct users per K (default: one per 6 deliveries)")
    add("--seed", type=int, default=7, help="random seed of the traffic plan (default 7; K added)")
    add("--spend-share", type=float, default=Mix.spend_share,
        help=f"the app's spends per delivery (default {Mix.spend_share:g}; 0: none)")  # fmt: skip
    add(
        "--worker-nice",
        type=int,
        default=10,
        help="CPU niceness of the workers (default 10, as the load tool)",
    )
    add(
        "--balance",
        choices=PER,
        default="request",
        help="the proxy balances per request (default) or connection",
    )
    add("--kill", action="store_true", help="kill -9 one serve and one worker mid-run (K >= 2)")
    add("--kill-at", type=float, default=0.4, help="when, as a share of --duration (default 0.4)")
    add(
        "--drain-timeout",
        type=float,
        default=None,
        help="max seconds of drain (default 120; 180 with --kill)",
    )
    add("--max-delivery-attempts", default=None,
        help=f"MAX_DELIVERY_ATTEMPTS of the stack (default 5; {KILL_ATTEMPTS} with --kill)")  # fmt: skip
    add("--json", type=Path, default=None, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    try:
        args.replica_counts = [int(k) for k in args.replicas.split(",") if k.strip()]
    except ValueError:
        parser.error("--replicas is a comma list of integers")
    if not args.replica_counts or min(args.replica_counts) < 1 or max(args.replica_counts) > 8:
        parser.error("--replicas: counts between 1 and 8")
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or not 0 <= args.spend_share <= 1:
        parser.error("--rate and --duration must be positive, --warmup >= 0, --spend-share in 0..1")
    if args.rate * args.duration > 20_000:
        parser.error("at most 20000 deliveries per K (--rate x --duration)")
    if not 0 < args.kill_at < 1:
        parser.error("--kill-at is a share of --duration, between 0 and 1")
    args.drain_timeout = args.drain_timeout or (180.0 if args.kill else 120.0)
    args.max_delivery_attempts = str(args.max_delivery_attempts or (KILL_ATTEMPTS if args.kill else "5"))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="replicas-bench-"))
    print("starting the Pub/Sub and Firestore emulators ...", file=sys.stderr, flush=True)
    emulators = EmulatorStack.start(project="replicas-bench", log_dir=workdir)
    os.environ.update(emulators.env())  # this process's own clients (spends, checks)
    results = []
    try:
        for k in args.replica_counts:
            results.append(run_replicas(k, args, emulators, workdir))
    finally:
        emulators.stop()
    print(
        f"\nReplicas: K serve + K pull workers (unary) behind a round-robin proxy (per {args.balance}), "
        f"{args.rate:g}/s open loop for {args.duration:g} s per K after {args.warmup:g} s of warm-up; the "
        f"load tool's traffic mix, spend share {args.spend_share:g}; both emulators, the processes and this "
        f"sender on this machine ({os.cpu_count()} cores)"
        + ("; --kill: serve 0 and worker 0 killed -9 mid-run" if args.kill else "")
    )
    print_tables(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nJSON: {args.json}")
    print(f"service logs: {workdir}", file=sys.stderr)
    ok = all(r["invariants_ok"] and r["drained"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
