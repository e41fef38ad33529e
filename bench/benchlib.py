"""Helpers shared by the benchmarks in this folder: one open-loop driver and a paid credit's
ledger entry as the floors write it. The percentile, the webhook floor's record and message, and
the service's processes come from the load tool (`paynow_loadtest`: results, floor, processes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


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
