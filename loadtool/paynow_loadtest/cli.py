"""Load test of the whole pipeline (webhook in queue mode -> Pub/Sub -> worker -> Firestore),
with the invariants checked from Firestore itself and a same-run floor.

    paynow-service loadtest                    # 100/s for 60 s against a stack it starts itself
    paynow-service loadtest --rate 30 --duration 10 --floor-duration 5
    paynow-service loadtest --find-max         # raise the rate until answer p95 > 50 ms or errors
    paynow-service loadtest --worker push      # Pub/Sub pushes to the HTTP app instead of the pull worker
    paynow-service loadtest --pin              # pinned: serve and worker on CPU 0, the rest on CPU 1
    paynow-service loadtest --url http://127.0.0.1:8080/api/paynow/webhook   # an already-running stack
    paynow-loadtest ARGS, python -m paynow_loadtest ARGS   # the same tool

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
them off): the web app's own points code (paynow_loadtest.app_double, with 10 attempts and its
1 s backoff: 5 are not enough on the emulator under contention), run from this process on an
AsyncClient of its own, spends a random cost (mostly small, one in ten more than a wallet
usually holds) from a user whose order or subscription was accepted at least 1 s before, while
that user's duplicates, refunds and renewals still arrive. A spend that succeeded is recorded as
spent, INSUFFICIENT_POINTS as refused; any other outcome (contention exhausted, the 30 s timeout)
is settled after the run by re-reading `users/{uid}/ledger/{action_id}`, never guessed. The
invariants then check each spend's debit and each wallet in the app's model (credits - spends -
expired promo). INCONSISTENT_PROMO_BALANCE means a wallet was broken: counted, and the run fails.
The floor's turns carry the same share of spends, planned the same way on the floor's own users
(whose wallets the worker credits from the floor's events too): the sender and the floor share
this process, so each meets the same extra work on its event loop. Spend latency (the app's whole
transaction, retries included) is reported per kind of turn, with the contention retries.

Then it waits (bounded) for the queue to drain and checks from Firestore and the DLQ
(paynow_loadtest.invariants): every accepted event processed exactly once with exactly
its ledger entries; each wallet equal to its ledger and to the expected sum; ledgers serial;
no entry without its event; every bad event in the DLQ with reason unknown_product and
nowhere else. Exit status 1 if an invariant fails.

The floor: a bare script doing what the queue-mode webhook must do (one Firestore create of
the same webhookEvents record, or a read when it exists, then one ordered Pub/Sub publish of
the same PaymentEvent, with the `event_mac` the webhook signs it with (EVENT_SIGNING_KEYS:
a fresh key for the tool's own stack); an ignored type is marked instead) for traffic of the
same mix at the same rate, with no web framework. It writes the service's own collection and
topic, so the worker processes its events like the webhook's and the invariants check them too;
and the service and the floor take turns in short segments (--rounds), so both meet the same
machine. Answer p95 is reported as a ratio to the floor's. (`--find-max` drives its floor
apart, to a topic nobody consumes: the worker could not follow the floor's maximum.)

CPU (the benchmark protocol, `cpu`): each process's CPU time (serve, worker, this process as the
sender in the service's turns and as the floor in its own, each emulator) is read from /proc at the
start and the end of every measured turn and reported as CPU ms per event beside the turns' p50 and
p95. `--pin` pins serve and the worker on CPU 0 (a core of their own, as on Cloud Run), the emulators
and the sender on CPU 1, and the floor on CPU 0 in its turns; without it every process runs unpinned.
With fewer than 2 CPUs `--pin` says it cannot pin and exits 2. The report names the mode and the
commit (what `git rev-parse --short HEAD` prints for the checkout, read from its .git).

Writes load-<time>.json, .md and .png (latency over time, matplotlib) to --out (default: the
checkout's bench/results/). Bounded: every request has a timeout, retries are capped, every
wait has a deadline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from paynow_loadtest.cpu import CpuMeter, Placement
from paynow_loadtest.driver import WebhookSender
from paynow_loadtest.expectation import Expectation
from paynow_loadtest.find_max import find_max
from paynow_loadtest.floor import FloorTarget, floor_topic
from paynow_loadtest.markdown import print_table
from paynow_loadtest.phases import Run, interleaved, verify, warm_up
from paynow_loadtest.processes import LogCount, RssSampler
from paynow_loadtest.report import Measured, build_result, write_reports
from paynow_loadtest.spends import SpendBook
from paynow_loadtest.stack import Stack, open_stack
from paynow_loadtest.traffic import Mix, new_traffic, user_ids
from paynow_service.adapters.firestore_events import EVENTS
from paynow_service.bootstrap import freeze_startup_heap
from paynow_service.domain.provenance import EventSigner

EXIT_USAGE = 2


def default_out() -> Path:
    """bench/results of the checkout this package is installed from (editable), else ./loadtest-results."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "bench").is_dir() and (checkout / "paynow_service").is_dir():
        return checkout / "bench" / "results"
    return Path("loadtest-results")


def _load_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--rate", type=float, default=100, help="deliveries per second (default 100)")
    add("--duration", type=float, default=60, help="seconds of load (default 60)")
    add("--users", type=int, default=0, help="distinct users (default: one per 6 deliveries)")
    add("--seed", type=int, default=None, help="random seed of the traffic plan")
    add("--spend-share", type=float, default=Mix.spend_share,
        help=f"the app's spends per delivery, in the service's and the floor's turns alike "
        f"(default {Mix.spend_share:g}; 0: none)")  # fmt: skip
    add("--worker", choices=("pull", "push"), default="pull", help="pull worker or push to serve")
    add("--worker-nice", type=int, default=10,
        help="CPU niceness of the pull worker it starts (default 10; 0 for equal priority)")  # fmt: skip
    add("--floor-duration", type=float, default=None, help="seconds of floor (default: --duration; 0 skips)")
    add("--rounds", type=int, default=6, help="segments the service and the floor take turns in (default 6)")
    add("--warmup", type=float, default=30,
        help="seconds of unmeasured traffic first, at the rate "
        "(default 30: the emulators' JVMs need it)")  # fmt: skip
    add("--drain-timeout", type=float, default=120, help="max seconds to wait for the queue to drain")
    add("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="LOG_LEVEL of the service processes it starts "
        "(at INFO the worker's log gives processing_ms)")  # fmt: skip
    add("--out", type=Path, default=default_out(), help="report directory (default: %(default)s)")
    add("--port", type=int, default=0, help="HTTP port of the serve process it starts")
    add("--pin", action="store_true",
        help="pinned mode: serve and the worker on CPU 0, the emulators and the sender on CPU 1, the floor "
        "on CPU 0 in its turns (needs 2 CPUs: else it exits 2); default: unpinned")  # fmt: skip


def _find_max_options(parser: argparse.ArgumentParser) -> None:
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


def _existing_stack_options(parser: argparse.ArgumentParser) -> None:
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


def parse_args(argv: Sequence[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _load_options(parser)
    _find_max_options(parser)
    _existing_stack_options(parser)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    if not 0 <= args.spend_share <= 1:
        parser.error("--spend-share must be between 0 and 1")
    if args.floor_duration is None:
        args.floor_duration = args.step_duration if args.find_max else args.duration
    return args


def _worker_count(stack: Stack) -> dict[str, LogCount]:
    """The pull worker's own count of the messages it handled (its log's "Worker received message" lines,
    LOG_LEVEL INFO): it may lag behind a turn's webhooks, so its CPU is also given per message handled."""
    if stack.worker_kind != "pull" or "worker" not in stack.pids or len(stack.worker_logs) != 1:
        return {}
    return {"worker": LogCount(stack.worker_logs[0], "Worker received message")}


def _new_run(args: argparse.Namespace, stack: Stack, placement: Placement | None) -> Run:
    run_id = uuid.uuid4().hex[:8]
    n_users = args.users or max(20, round(args.rate * args.duration / 6))
    factory, users, rng = new_traffic(stack.catalog, seed=args.seed, users=n_users, run=f"load-{run_id}")
    expectation = Expectation()
    keys = stack.settings.event_signing_keys
    signer = EventSigner(keys) if keys else None
    if signer is None:
        print("load: no EVENT_SIGNING_KEYS: the floor's messages go unsigned (the worker dead-letters them)",
              file=sys.stderr, flush=True)  # fmt: skip
    # The floor writes the service's own records and publishes to its topic: the worker processes
    # the floor's events too, and the invariants check them.
    events_topic = stack.settings.topic_path(stack.settings.pubsub_topic)
    book = SpendBook(expectation, stack.project)  # the app's spends, recorded in the same expectation
    return Run(
        args=args, stack=stack, factory=factory, rng=rng, book=book,
        sender=WebhookSender(stack.url, stack.secret, expectation, book), run_id=run_id, users=users,
        floor_users=user_ids(f"load-{run_id}", "f", n_users),
        pipeline_floor=FloorTarget(events_topic, EVENTS, expectation, signer),
        cpu=CpuMeter(stack.service_pids, stack.emulator_pids, placement, _worker_count(stack)),
    )  # fmt: skip


def _measure(run: Run) -> Measured:
    """find-max's steps, or the service and the floor in turns at the rate."""
    args = run.args
    if args.find_max:
        signer = run.pipeline_floor.signer
        apart = FloorTarget(floor_topic(run.stack.settings.topic_path(f"load-floor-{run.run_id}")),
                            f"loadFloor-{run.run_id}", signer=signer)  # fmt: skip
        # The plan, the expectation and the clients live as long as the run: frozen out of the
        # collector's reach, a full collection no longer pauses the sender and the floor (100-300 ms
        # each, measured, with them in).
        freeze_startup_heap()
        service, floor, summary, deliveries, spends = find_max(run, apart)
        return Measured(service, floor, deliveries, spends, summary)
    deliveries, spends = run.plan(args.duration, run.users)
    floor_plan, floor_spends = (
        run.plan(args.floor_duration, run.floor_users) if args.floor_duration > 0 else ([], [])
    )
    print(f"load: {len(deliveries)} deliveries and {len(spends)} spends at {args.rate:g}/s for "
          f"{args.duration:g} s, {len(floor_plan)} and {len(floor_spends)} through the floor, in turns ...",
          file=sys.stderr, flush=True)  # fmt: skip
    freeze_startup_heap()  # as for find-max above
    service, floor = interleaved(run, deliveries, floor_plan, spends, floor_spends)
    return Measured(service, floor, [*deliveries, *floor_plan], [*spends, *floor_spends])


def _run(args: argparse.Namespace) -> int:
    started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    args.seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    placement = Placement.choose(args.pin, "load")  # before anything starts: exits 2 if it cannot pin
    try:
        with open_stack(args) as stack:
            run = _new_run(args, stack, placement)
            run.cpu.pin()
            print(f"warming up for {args.warmup:g} s ({stack.url}) ...", file=sys.stderr, flush=True)
            warm = warm_up(run)
            rss = RssSampler(stack.pids).start()
            run.measuring = True
            measured = _measure(run)
            run.measuring = False
            rss_result = rss.stop()
            print(
                "waiting for the queue to drain and checking the invariants ...", file=sys.stderr, flush=True
            )
            verification = verify(stack, run.expectation, run.book, drain_timeout_s=args.drain_timeout)
            result = build_result(
                args, stack, started_at, measured, verification, run.expectation, rss_result, run.book,
                cpu=run.cpu.result(),
            )  # fmt: skip
            result["warm_up"] = warm
            print_table(result)
            report = write_reports(result, measured, args.out)
            print(f"\nreport: {report} (and .json, .png)")
            if stack.workdir is not None:
                print(f"service logs: {stack.workdir}")
    finally:
        if placement is not None:
            placement.restore()
    return 0 if verification.report.ok and verification.drained and not run.book.inconsistent else 1


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The load tool with `argv` (default: the command line); its exit status (2: a usage error)."""
    try:
        return _run(parse_args(argv, prog))
    except SystemExit as exit_:  # argparse (--help, a bad flag) and the tool's own usage errors
        code = exit_.code
        if isinstance(code, int):
            return code
        if code:
            print(code, file=sys.stderr)
            return EXIT_USAGE
        return 0
