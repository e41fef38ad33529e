"""Sending the traffic to the stack (`stack.open_stack` starts the service's processes it is sent to).

`WebhookSender` signs and posts deliveries like PayNow (`webhook.signed_headers`) on the lean
keep-alive client (`lean_http`), open loop (`open_loop`): each delivery on its own schedule, a
slow answer never slows the sender; a non-2xx answer is retried after 1, 2 and 4 s and counted
as an error. The app's spends of the turn go out on the same schedule (`spends`). Every phase
runs on uvloop (`run_async`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import uvloop

from paynow_loadtest.expectation import Expectation
from paynow_loadtest.lean_http import LeanClient
from paynow_loadtest.results import PhaseResult, Sample
from paynow_loadtest.spends import SpendBook, Spender, spend_turn
from paynow_loadtest.traffic import Delivery, Spend
from paynow_loadtest.webhook import signed_headers

RETRY_BACKOFF_S = (1.0, 2.0, 4.0)  # PayNow retries with backoff; bounded here
REQUEST_TIMEOUT_S = 10.0
WARM_CONNECTIONS = 8  # the sender's keep-alive pool, opened before each measured turn
T = TypeVar("T")
Runner = Callable[[Delivery, float], Coroutine[Any, Any, None]]


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run one phase on uvloop, the loop `serve` runs on (uvicorn picks it): the sender, the floor and
    the service then all spend the same per-callback cost on their event loops."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def open_loop(
    deliveries: Sequence[Delivery], one: Runner, phase: PhaseResult, spends: Sequence[Spend] = (),
    spend: Spender | None = None,
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
        if isinstance(item, Spend):
            assert spend is not None, "spends need a spender"
            tasks.append(asyncio.create_task(spend(item, start)))
        else:
            tasks.append(asyncio.create_task(one(item, start)))
    phase.wall_s = time.perf_counter() - start
    await asyncio.gather(*tasks)


def _outcome(status: int, raw: bytes) -> str:
    """The answer's `status` (queued, duplicate ...) or `error`, else the HTTP status."""
    try:
        answer = json.loads(raw)
        return str(answer.get("status") or answer.get("error") or status)
    except (ValueError, AttributeError):
        return str(status)


class WebhookSender:
    """Signs and posts deliveries like PayNow: each delivery retried on a non-2xx (bounded)."""

    def __init__(
        self, url: str, secret: str, expectation: Expectation, book: SpendBook | None = None
    ) -> None:
        self.url = url
        self.secret = secret
        self.expectation = expectation
        self.book = book  # the app's spends, when the traffic has any

    async def _deliver(
        self, client: LeanClient, path: str, phase: PhaseResult, delivery: Delivery, start: float
    ) -> None:
        planned = delivery.planned
        if not self.expectation.admit(planned, needs=delivery.needs, duplicate=delivery.duplicate):
            phase.skipped += 1
            return
        for attempt in range(len(RETRY_BACKOFF_S) + 1):
            began = time.perf_counter()
            headers = signed_headers(self.secret, planned.body)
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    status, raw = await client.request("POST", path, planned.body, headers)
                outcome = _outcome(status, raw)
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
            await self._deliver(client, path, phase, delivery, start)

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
