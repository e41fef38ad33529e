"""Chaos: the Pub/Sub emulator is frozen (SIGSTOP) under the webhook while events flow, then
resumed (SIGCONT).

While it is frozen, publishes time out (PUBLISH_TIMEOUT_S=1) and the webhook processes
events inline; what cannot be made durable is answered 503 and retried by the sender, as
PayNow would. A publish that timed out may still land after the resume, so the worker
sees events already processed inline: they must be skipped. Every event answered 200 is
credited exactly once.

An event whose inline processing failed too (an unknown product: its dead letter cannot
be published while Pub/Sub is frozen) is answered 503, and PayNow's retry within
PUBLISH_LEASE_S is answered 200 "duplicate" while nothing publishes it (see
test_stranded_retry.py): it waits for the operators' scheduled `sweep`, which this test
runs (with a 2 s lease) before checking.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from paynow_loadtest.expectation import Expectation
from paynow_loadtest.traffic import new_traffic, plan_traffic
from paynow_service.adapters.emulators import EmulatorStack
from tests.chaos.harness import CHAOS_MIX, ChaosStack, drive, explain, verify

pytestmark = [pytest.mark.emulators, pytest.mark.e2e, pytest.mark.timeout(150)]


async def test_pubsub_paused_under_the_webhook_credits_every_event_once(
    emulators: EmulatorStack, tmp_path: Path
) -> None:
    stack = ChaosStack(emulators, tmp_path, PUBLISH_LEASE_S="2", MAX_DELIVERY_ATTEMPTS="100")
    try:
        factory, users, rng = new_traffic(stack.catalog)
        expectation = Expectation()
        deliveries = plan_traffic(factory, rate=20, duration=8, users=users, rng=rng, mix=CHAOS_MIX)
        traffic = asyncio.create_task(drive(stack.url, deliveries, expectation))
        await asyncio.sleep(2.0)
        emulators.pubsub.pause()
        try:
            await asyncio.sleep(3.0)
        finally:
            emulators.pubsub.resume()
        result = await traffic
        await asyncio.sleep(2.5)  # past the lease of the last delivery
        swept = await asyncio.to_thread(stack.sweep)

        assert not result.gave_up, result  # every 503 was retried until it was answered 200
        report, extra = await asyncio.to_thread(
            verify, stack, expectation, drain_s=60, dlq_duplicates_ok=True
        )
        extra["sweep"] = swept
        assert report.ok, explain(report, extra, stack)
        assert extra["drained"], explain(report, extra, stack)
        assert report.accepted >= 120, report.summary()
        assert report.dlq_expected == 2, report.summary()
        logs = stack.http.logs()
        assert "Publish failed - processing inline" in logs, "the outage was felt by the webhook"
        assert result.outcomes["processed"] + result.answers[503] > 0, result
    finally:
        if emulators.pubsub.paused:  # never leave the shared emulator frozen
            emulators.pubsub.resume()
        stack.stop()
