"""The chaos scenarios' common parts: a queue-mode stack of real processes on the session
emulators, traffic that retries like PayNow, and the shared invariant check.

Traffic: the load tool's traffic model (`paynow_loadtest.traffic.plan_traffic`) with the chaos
mix, `CHAOS_MIX`: orders of many users (10% delivered twice), exactly two unknown products
(they must end in the DLQ), ignored types, and refunds of orders at least 1.5 s old; no bursts,
no subscriptions, no spends. Each delivery starts on its own schedule (open loop); a non-2xx
answer or a transport error is retried (as PayNow would, with backoff) until it is answered 2xx
or the retry window closes. Requests are signed and sent by the shared `paynow_loadtest.webhook`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from paynow_loadtest.expectation import Expectation
from paynow_loadtest.invariants import InvariantReport, check
from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.state import pull_dead_letters, read_state, wait_drained
from paynow_loadtest.traffic import Delivery, Mix
from paynow_loadtest.webhook import post_async
from paynow_service.adapters.emulators import EmulatorStack, free_port
from paynow_service.adapters.pubsub_infra import InfraOverrides
from paynow_service.config import Settings
from paynow_service.domain.catalog import Catalog
from tests.support.processes import run_cli, serve
from tests.support.stack import CATALOG, FAST, apply_topology, stack_env, write_catalog

SECRET = "pn-test-secret-one"
# The chaos traffic (plan_traffic's mix): 10% duplicates, 6% refunds (of orders >= 1.5 s old), 5%
# ignored types, exactly 2 unknown products, the rest orders; no bursts, subscriptions or spends.
CHAOS_MIX = Mix(
    duplicates=0.10, refunds=0.06, subscriptions=0.0, renewals=0.0, ignored=0.05, unknown_count=2,
    burst_len=0, dependency_delay_s=1.5, spend_share=0.0,
)  # fmt: skip
CHAOS_MIX_NO_REFUNDS = dataclasses.replace(CHAOS_MIX, refunds=0.0)


class ChaosStack:
    """`serve` (queue mode, webhook only) and a worker as real processes.

    The worker is the streaming-pull `paynow-service worker` (`worker="pull"`) or a second
    `serve` exposing only the push endpoint that the subscription pushes to (`"push"`, a
    fixed port so a restarted worker is found again). `service_env` is what the processes
    see (possibly a fault proxy as FIRESTORE_EMULATOR_HOST); `env` is the direct one the
    checks use.
    """

    def __init__(
        self, emulators: EmulatorStack, tmp: Path, *, worker: str = "pull", firestore_host: str = "",
        **overrides: str,
    ) -> None:  # fmt: skip
        self.tmp = tmp
        self.kind = worker
        self.env = stack_env(
            emulators.env(),
            write_catalog(tmp, CATALOG),
            WEBHOOK_MODE="queue",
            HTTP_ROUTES="webhook",
            FIRESTORE_TIMEOUT_S="3",
            PUBLISH_TIMEOUT_S="1",
            LOG_LEVEL="INFO",
            **overrides,
        )
        self.service_env = {
            **self.env,
            **({"FIRESTORE_EMULATOR_HOST": firestore_host} if firestore_host else {}),
        }
        self.settings = Settings.from_env(self.env)
        self.project = self.settings.google_cloud_project
        self.catalog = Catalog.from_toml(CATALOG)
        self.push_port = free_port() if worker == "push" else 0
        push = f"http://127.0.0.1:{self.push_port}/api/tasks/paynow/process" if worker == "push" else None
        apply_topology(
            self.settings,
            InfraOverrides(
                ack_deadline_s=FAST.ack_deadline_s, min_backoff_s=FAST.min_backoff_s,
                max_backoff_s=FAST.max_backoff_s, push_endpoint=push, pull=worker == "pull",
            ),
        )  # fmt: skip
        self.http = serve(self.service_env, tmp)
        self.url = f"http://127.0.0.1:{self.http.port}/api/paynow/webhook"
        self.workers: list[ServiceProcess] = []
        self.start_worker()

    @property
    def worker(self) -> ServiceProcess:
        return self.workers[-1]

    def start_worker(self) -> ServiceProcess:
        if self.kind == "push":
            env = {**self.service_env, "HTTP_ROUTES": "push", "PORT": str(self.push_port)}
            self.workers.append(ServiceProcess("serve", env, self.tmp, port=self.push_port).wait_ready())
        else:
            self.workers.append(ServiceProcess("worker", self.service_env, self.tmp))
        return self.worker

    def worker_logs(self) -> str:
        return "\n".join(w.logs() for w in self.workers)

    def sweep(self) -> str:
        """`paynow-service sweep`, as the operators' scheduled job runs it."""
        result = run_cli("sweep", env=self.env, timeout=60)
        return result.stdout + result.stderr

    def stop(self) -> None:
        self.http.stop()
        for worker in self.workers:
            worker.stop()


@dataclass
class TrafficResult:
    answers: Counter[int] = field(default_factory=Counter)  # HTTP status (0: transport error) -> count
    outcomes: Counter[str] = field(default_factory=Counter)  # answer "status" of the 2xx answers
    retried: int = 0  # deliveries that needed more than one try
    gave_up: list[str] = field(default_factory=list)  # events no delivery of which was answered 2xx
    skipped: int = 0
    last_send: float = 0.0
    slowest_ms: float = 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.answers.items() if not 200 <= status < 300)


async def drive(
    url: str, deliveries: Sequence[Delivery], expectation: Expectation, *, retry_window_s: float = 60,
) -> TrafficResult:  # fmt: skip
    """Send every delivery at its due time; retry a non-2xx with backoff (0.5 s doubling to 3 s) within
    the window."""
    result = TrafficResult()
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=500)) as client:

        async def one(delivery: Delivery) -> None:
            planned = delivery.planned
            if not expectation.admit(planned, needs=delivery.needs, duplicate=delivery.duplicate):
                result.skipped += 1
                return
            deadline = time.monotonic() + retry_window_s
            backoff, tries = 0.5, 0
            while True:
                tries += 1
                began = time.monotonic()
                try:
                    response = await post_async(client, url, planned.body, SECRET)
                    status = response.status_code
                except httpx.HTTPError:
                    status = 0
                result.slowest_ms = max(result.slowest_ms, (time.monotonic() - began) * 1000)
                result.answers[status] += 1
                if 200 <= status < 300:
                    expectation.accept(planned.event_id)
                    try:
                        result.outcomes[str(response.json().get("status"))] += 1
                    except ValueError:
                        result.outcomes["?"] += 1
                    result.retried += tries > 1
                    return
                if time.monotonic() + backoff > deadline:
                    # PayNow would go on for days; here only a never-accepted event counts.
                    if not expectation.is_accepted(planned.event_id):
                        result.gave_up.append(planned.event_id)
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 3.0)

        tasks = []
        for delivery in deliveries:
            delay = start + delivery.due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(delivery)))
            result.last_send = time.monotonic() - start
        await asyncio.gather(*tasks)
    return result


def verify(
    stack: ChaosStack, expectation: Expectation, *, drain_s: float = 60, dlq_duplicates_ok: bool = False,
) -> tuple[InvariantReport, dict[str, Any]]:  # fmt: skip
    """Wait for the queue to drain (bounded), pull the DLQ, check every invariant."""
    drained, pending = wait_drained(stack.project, expectation, timeout_s=drain_s)
    bad = [e for e in expectation.accepted if e.status == "failed_terminal"]
    letters = pull_dead_letters(
        stack.settings.subscription_path(stack.settings.pubsub_dlq_subscription),
        set(expectation.events),
        want=len(bad),
        wait_s=15,
    )
    report = check(
        expectation, read_state(stack.project, expectation), letters, dlq_duplicates_ok=dlq_duplicates_ok
    )
    return report, {"drained": drained, "pending": pending}


def explain(report: InvariantReport, extra: dict[str, Any], stack: ChaosStack) -> str:
    """The failure message: the invariants, what was still pending, and the ends of the logs."""
    return "\n".join(
        [
            report.summary(),
            json.dumps(extra, default=str)[:2000],
            "--- serve log (end) ---",
            stack.http.logs()[-3000:],
            "--- worker log (end) ---",
            stack.worker_logs()[-3000:],
        ]
    )
