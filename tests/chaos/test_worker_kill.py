"""Chaos: the worker is killed with SIGKILL while events flow, then restarted.

The worker is the pull worker in WORKER_PULL_MODE=unary: messages it had pulled but not
acknowledged come back after their ack deadline and the restarted worker finishes them; an
event processed whose acknowledgement never left is redelivered and skipped as a duplicate.
A worker killed inside its Firestore transaction leaves that transaction's locks until
Firestore expires it (about a minute on the emulator): that event and whatever needs the
same documents wait, then complete once.

Not here: the streaming-pull worker (the Pub/Sub emulator 0.8.20 never delivers to a new
streaming subscriber once an earlier stream ended: grpc NoSuchMethodError while closing it),
and the push worker (after a minute of 503s from the locked transaction the emulator's push
backoff outlasted the drain wait in one run of three: a flaky test, so left out).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from paynow_loadtest.expectation import Expectation
from paynow_loadtest.traffic import new_traffic, plan_traffic
from paynow_service.adapters.emulators import EmulatorStack
from tests.chaos.harness import CHAOS_MIX, ChaosStack, drive, explain, verify

pytestmark = [pytest.mark.emulators, pytest.mark.e2e, pytest.mark.timeout(240)]


async def test_worker_killed_mid_run_loses_and_doubles_nothing(
    emulators: EmulatorStack, tmp_path: Path
) -> None:
    # The pull worker in unary mode: the only pull mode the emulator lets restart. The attempt
    # budget is raised because the emulator redelivers a nack at once, whatever the backoff,
    # while a transaction cut by the kill keeps its locks for about a minute.
    stack = ChaosStack(
        emulators, tmp_path, worker="pull", MAX_DELIVERY_ATTEMPTS="100", WORKER_PULL_MODE="unary"
    )
    try:
        factory, users, rng = new_traffic(stack.catalog)
        expectation = Expectation()
        deliveries = plan_traffic(factory, rate=25, duration=8, users=users, rng=rng, mix=CHAOS_MIX)
        traffic = asyncio.create_task(drive(stack.url, deliveries, expectation, retry_window_s=120))
        await asyncio.sleep(2.5)
        first = stack.worker
        assert "Worker received message" in first.logs(), first.logs()[-2000:]  # killed while working
        first.kill()  # SIGKILL mid-run: no shutdown, no flush of pending acks
        await asyncio.sleep(2.0)
        second = stack.start_worker()
        result = await traffic

        # Every delivery ended answered 200. Not always at once: a worker killed inside its
        # Firestore transaction leaves that transaction's locks until Firestore expires it
        # (about a minute on the emulator), so a duplicate delivery of that event gets 503
        # meanwhile (and is retried), and the redelivered message waits as well.
        assert not result.gave_up, result
        report, extra = await asyncio.to_thread(
            verify, stack, expectation, drain_s=150, dlq_duplicates_ok=True
        )
        assert report.ok, explain(report, extra, stack)
        assert extra["drained"], explain(report, extra, stack)
        assert report.accepted >= 150, report.summary()
        assert report.dlq_expected == 2, report.summary()
        assert "Worker processed event successfully" in second.logs(), "the restarted worker took over"
    finally:
        stack.stop()
