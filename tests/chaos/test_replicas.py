"""Chaos: two webhook replicas and two pull workers, as production runs several instances of each,
behind the load tool's round-robin proxy (`paynow_loadtest.round_robin`, per request); one serve
and one worker are killed with SIGKILL while events flow.

The proxy skips the dead serve (its connections are refused); a request that was on it when it
died gets a 502, and the sender retries it as PayNow would (tests/chaos/harness.py's `drive`), on
the replica left. The dead worker's unacknowledged messages come back after their ack deadline
(10 s) to the other worker, in WORKER_PULL_MODE=unary (the only pull mode the emulator lets
several subscribers come and go in, README). A worker killed inside its Firestore transaction
keeps that transaction's locks until the emulator expires it (about a minute): the drain wait
covers it, and the delivery attempts are raised as in test_worker_kill.py. Checked with the load
tool's own verification (`paynow_loadtest.phases.verify`): 0 lost, 0 doubled, the DLQ exact (a
dead letter published twice because the kill lost the worker's ack is tolerated, as in
test_worker_kill.py; every bad event is there with its reason, nothing else is).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from paynow_loadtest.expectation import Expectation
from paynow_loadtest.phases import verify
from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.round_robin import RoundRobinProxy
from paynow_loadtest.spends import SpendBook
from paynow_loadtest.stack import Stack
from paynow_loadtest.traffic import new_traffic, plan_traffic
from paynow_loadtest.webhook import WEBHOOK_PATH
from paynow_service.adapters.emulators import EmulatorStack, free_port
from paynow_service.config import Settings
from paynow_service.domain.catalog import Catalog
from tests.chaos.harness import CHAOS_MIX, SECRET, drive
from tests.support.stack import CATALOG, apply_topology, stack_env, wait_for, write_catalog

pytestmark = [pytest.mark.emulators, pytest.mark.e2e, pytest.mark.timeout(180)]

RATE, DURATION, KILL_AT = 20, 8, 3.0


async def test_two_replicas_one_serve_and_one_worker_killed_lose_and_double_nothing(
    emulators: EmulatorStack, tmp_path: Path
) -> None:
    env = stack_env(
        emulators.env(), write_catalog(tmp_path, CATALOG), WEBHOOK_MODE="queue", HTTP_ROUTES="webhook",
        FIRESTORE_TIMEOUT_S="3", PUBLISH_TIMEOUT_S="1", LOG_LEVEL="INFO", WORKER_PULL_MODE="unary",
        MAX_DELIVERY_ATTEMPTS="100",
    )  # fmt: skip
    settings = Settings.from_env(env)
    apply_topology(settings)
    ports = [free_port(), free_port()]
    servers = [ServiceProcess("serve", {**env, "PORT": str(p)}, tmp_path, port=p) for p in ports]
    workers = [ServiceProcess("worker", env, tmp_path) for _ in range(2)]
    proxy = RoundRobinProxy([("127.0.0.1", p) for p in ports], max_lifetime_s=170)
    try:
        for server in servers:
            server.wait_ready(60)
        for worker in workers:
            assert wait_for(lambda w=worker: "Worker pulling" in w.logs(), timeout=60), worker.logs()[-2000:]
        proxy.start()
        factory, users, rng = new_traffic(Catalog.from_toml(CATALOG))
        expectation = Expectation()
        deliveries = plan_traffic(factory, rate=RATE, duration=DURATION, users=users, rng=rng, mix=CHAOS_MIX)
        url = proxy.url(WEBHOOK_PATH)
        traffic = asyncio.create_task(drive(url, deliveries, expectation, retry_window_s=60))
        await asyncio.sleep(KILL_AT)
        await asyncio.to_thread(servers[0].kill)  # SIGKILL mid-run: no shutdown, nothing flushed
        await asyncio.to_thread(workers[0].kill)
        await asyncio.sleep(0.3)  # whatever the dead serve had sent reached the proxy: its count is final
        at_kill = await asyncio.to_thread(proxy.snapshot)
        result = await traffic
        after = await asyncio.to_thread(proxy.snapshot)

        # Both replicas answered before the kill; then the dead one was skipped and the other took all.
        answered = [r.answered("POST", ok=True) for r in at_kill]
        assert min(answered) > 0, at_kill
        assert after[0].answered("POST", ok=True) == answered[0], after
        assert after[0].refused > 0, after
        assert after[1].answered("POST", ok=True) > answered[1], after
        assert not result.gave_up, result

        stack = Stack(
            url=url, settings=settings, project=settings.google_cloud_project, secret=SECRET,
            catalog=Catalog.from_toml(CATALOG), worker_kind="pull",
        )  # fmt: skip
        book = SpendBook(expectation, stack.project)  # no spends in the chaos mix: nothing to settle
        verification = await asyncio.to_thread(
            verify, stack, expectation, book, drain_timeout_s=110, strict_dlq=False
        )
        report = verification.report
        logs = "\n".join(p.logs()[-2500:] for p in [*servers, *workers])
        fields = ("status", "receivedAt", "leaseAt", "publishedAt", "processedAt", "failureReason")
        lost = {e: {f: str(verification.records.get(e, {}).get(f)) for f in fields} for e in report.lost}
        explain = (
            f"{report.summary()}\nlost: {lost}\npending: {verification.pending}\n{proxy.describe()}\n{logs}"
        )
        assert verification.drained, explain
        assert report.ok, explain
        assert (report.lost, report.doubled) == ([], []), explain
        assert report.checks["dlq_exact"].ok, explain
        assert report.dlq_expected == 2, explain
        assert report.dlq_received - report.dlq_duplicates == report.dlq_expected, explain
        assert report.accepted >= 0.8 * RATE * DURATION, explain
        assert "Worker processed event successfully" in workers[1].logs(), "the worker left took over"
    finally:
        proxy.stop()
        for process in [*servers, *workers]:
            process.stop()
