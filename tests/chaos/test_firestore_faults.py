"""Chaos: a TCP fault proxy in front of the Firestore emulator, used by `serve` and the worker
(FIRESTORE_EMULATOR_HOST), runs events through delay, reset and black-hole phases of a few
seconds each, then passes traffic again.

FIRESTORE_TIMEOUT_S=3 bounds each call, so black-holed calls fail fast; the webhook
answers 503 for what it could not record and the sender retries, as PayNow would; the
worker retries its transient failures through Pub/Sub. The attempt limit is raised to
100: the emulator redelivers a nacked message after a fraction of a second, whatever the
subscription's minimum backoff, so 5 attempts would span no outage at all (production's
10-600 s backoff spans minutes), and a refund that overtook its delayed order would be
dead-lettered as order_not_credited.
Afterwards the operators' scheduled `sweep` re-publishes any event recorded during the
faults but never published. Then: nothing lost, nothing doubled, DLQ exact.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from paynow_loadtest.expectation import Expectation
from paynow_loadtest.traffic import new_traffic, plan_traffic
from paynow_service.adapters.emulators import EmulatorStack
from tests.chaos.harness import CHAOS_MIX_NO_REFUNDS, ChaosStack, drive, explain, verify
from tests.support.fault_proxy import FaultProxy

pytestmark = [pytest.mark.emulators, pytest.mark.e2e, pytest.mark.timeout(300)]

PHASES = ((1.5, "delay", 300), (4.0, "reset", 0), (6.5, "blackhole", 0), (9.0, "pass", 0))


async def test_firestore_delay_reset_and_black_hole_lose_and_double_nothing(
    emulators: EmulatorStack, tmp_path: Path
) -> None:
    with FaultProxy(("127.0.0.1", emulators.firestore.port), max_lifetime_s=240) as proxy:
        stack = ChaosStack(
            emulators,
            tmp_path,
            firestore_host=proxy.address,
            MAX_DELIVERY_ATTEMPTS="100",
            PUBLISH_LEASE_S="2",
        )
        try:
            factory, users, rng = new_traffic(stack.catalog)
            expectation = Expectation()
            # No refunds here: one that overtakes its order while Firestore is cut off burns its
            # attempts in seconds on the emulator (it ignores the retry backoff) and is
            # dead-lettered as order_not_credited, to be replayed (docs/runbook.md). Refunds
            # under outages are covered by the Pub/Sub freeze and worker kill scenarios.
            deliveries = plan_traffic(
                factory, rate=15, duration=11, users=users, rng=rng, mix=CHAOS_MIX_NO_REFUNDS
            )
            start = time.monotonic()
            traffic = asyncio.create_task(drive(stack.url, deliveries, expectation, retry_window_s=60))
            for at, mode, delay_ms in PHASES:
                await asyncio.sleep(max(0.0, start + at - time.monotonic()))
                await asyncio.to_thread(proxy.set_mode, mode, delay_ms=delay_ms)
            result = await traffic
            swept = await asyncio.to_thread(stack.sweep)

            assert not result.gave_up, result
            # A transaction cut off by the reset phase after its read reached the emulator keeps that
            # read's locks until the emulator expires it (about a minute; nobody has its id to roll it
            # back): that user's events wait for it, then for their hold-back (up to 10 s) and a
            # transaction's own bound (3 x FIRESTORE_TIMEOUT_S). 90 s of drain left seconds to spare.
            report, extra = await asyncio.to_thread(
                verify, stack, expectation, drain_s=150, dlq_duplicates_ok=True
            )
            extra["sweep"] = swept
            extra["proxy"] = proxy.describe()
            assert report.ok, explain(report, extra, stack)
            assert extra["drained"], explain(report, extra, stack)
            assert report.accepted >= 120, report.summary()
            assert report.dlq_expected == 2, report.summary()
            assert proxy.stats.reset > 0, proxy.describe()  # the faults happened ...
            felt = (
                result.non_2xx > 0 or result.slowest_ms > 1000 or "Transient failure" in stack.worker_logs()
            )
            assert felt, result  # ... and the service felt them
        finally:
            stack.stop()
