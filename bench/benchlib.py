"""Helpers shared by the benchmarks in this folder: one percentile, one open-loop driver,
and the webhookEvents record and message the webhook floors write."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from paynow_service.adapters.event_codec import encode_event
from paynow_service.domain.paynow import decode_envelope, event_from_envelope, payload_hash

RECORD_TTL = dt.timedelta(days=30)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


async def open_loop(
    rate: float, count: int, one: Callable[[int], Awaitable[bool]], timeout_s: float = 30
) -> tuple[list[float], int]:
    """Start `one(i)` every 1/rate s, `count` times (a slow answer never delays the next start);
    return the latencies (ms) and how many failed or timed out."""
    latencies: list[float] = []
    failures = 0
    start = time.perf_counter()

    async def timed(i: int) -> None:
        nonlocal failures
        began = time.perf_counter()
        try:
            ok = await asyncio.wait_for(one(i), timeout=timeout_s)
        except Exception:  # every failure is counted, none stops the run
            ok = False
        latencies.append((time.perf_counter() - began) * 1000)
        failures += 0 if ok else 1

    tasks = []
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed(i)))
    await asyncio.gather(*tasks)
    return latencies, failures


@dataclass(frozen=True)
class FloorItem:
    """What the queue-mode webhook makes of one delivery: its webhookEvents record and its message."""

    event_id: str
    record: dict[str, Any]  # without the times, which are taken when it is written
    data: bytes
    attributes: dict[str, str]
    ordering_key: str
    ignored: bool

    def document(self, now: dt.datetime) -> dict[str, Any]:
        return {**self.record, "receivedAt": now, "leaseAt": now, "expiresAt": now + RECORD_TTL}


def floor_item(body: bytes) -> FloorItem:
    """The record and message of a signed webhook body, built as the service builds them."""
    now_ms = int(time.time() * 1000)
    envelope = decode_envelope(body)
    event = event_from_envelope(envelope, received_at_ms=now_ms, sent_at_ms=now_ms)
    data, attributes = encode_event(event)
    record = {
        "status": "queued", "eventType": event.event_type, "orderingKey": event.resolved_ordering_key(),
        "payloadHash": payload_hash(envelope.body), "publishedAt": None, "attempts": 0, "processedAt": None,
        "result": None, "failureReason": None, "event": data,
    }  # fmt: skip
    return FloorItem(
        event.event_id, record, data, attributes, event.resolved_ordering_key(), bool(event.ignored)
    )


def floor_entry(
    uid: str, entry_id: str, amount: int, paid_before: int, now: Any, metadata: dict[str, Any], source: str
) -> dict[str, Any]:
    """A paid credit's ledger entry in the service's own shape (the floors write the same document size)."""
    pre, post = {"paid": paid_before, "promo": 0}, {"paid": paid_before + amount, "promo": 0}
    return {
        "uid": uid, "amount": amount, "type": "credit", "channel": "paid", "action": "credit",
        "actionId": entry_id, "source": source, "note": "credit", "metadata": metadata, "pre": pre,
        "post": post, "after": post, "delta": {"paid": amount, "promo": 0}, "createdAt": now,
        "createdBy": "floor", "v": 1,
    }  # fmt: skip
