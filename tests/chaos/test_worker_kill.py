"""Chaos: the worker is killed with SIGKILL while events flow, then restarted.

The worker here is the push worker (the HTTP app with only the push endpoint, as the
worker service runs in push mode): Pub/Sub's in-flight pushes to it fail, it redelivers
them with backoff, and the restarted worker finishes them; a push that was processed but
whose 204 never left is redelivered too and must be skipped as a duplicate.

A worker killed inside its Firestore transaction leaves the transaction's locks behind
until Firestore expires it (about a minute on the emulator): that event, its duplicate
deliveries (answered 503 meanwhile) and whatever else needs the same documents wait,
then complete once.

The pull worker is killed too, in WORKER_PULL_MODE=unary: messages it had pulled come
back after their ack deadline. The streaming-pull worker is not killed here: the Pub/Sub
emulator (0.8.20) never releases a streaming pull whose client went away (grpc
NoSuchMethodError while closing the stream, then a NullPointerException in its
StreamingPullPusher), so the messages it had dispatched to the dead stream, and the later
ones of their ordering keys, stay undelivered for minutes, whether the worker was killed
or stopped cleanly. That is the
emulator, not the service: real Pub/Sub redelivers them after the stream's ack deadline.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from paynow_service.adapters.emulators import EmulatorStack
from tests.chaos.harness import ChaosStack, drive, explain, new_traffic, plan, verify
from tests.support.invariants import Expectation

pytestmark = [pytest.mark.emulators, pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.mark.parametrize("kind", ["push", "unary-pull"])
async def test_worker_killed_mid_run_loses_and_doubles_nothing(
    emulators: EmulatorStack, tmp_path: Path, kind: str
) -> None:
    if kind == "push":
        stack = ChaosStack(emulators, tmp_path, worker="push", MAX_DELIVERY_ATTEMPTS="20")
    else:  # the pull worker in unary mode: the only pull mode the emulator lets restart
        stack = ChaosStack(
            emulators, tmp_path, worker="pull", MAX_DELIVERY_ATTEMPTS="20", WORKER_PULL_MODE="unary"
        )
    try:
        factory, users, rng = new_traffic(stack.catalog)
        expectation = Expectation()
        deliveries = plan(factory, rate=25, duration=8, users=users, rng=rng)
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
            verify, stack, expectation, drain_s=100, dlq_duplicates_ok=True
        )
        assert report.ok, explain(report, extra, stack)
        assert extra["drained"], explain(report, extra, stack)
        assert report.accepted >= 150, report.summary()
        assert report.dlq_expected == 2, report.summary()
        assert "Worker processed event successfully" in second.logs(), "the restarted worker took over"
    finally:
        stack.stop()
