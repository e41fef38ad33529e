"""What one call costs this machine, in CPU: the floor under `serve`'s CPU per webhook.

    python bench/rpc_cost.py [--rate 200] [--n 2000] [--rounds 2]

Starts the Firestore emulator's stack on loopback and, in this one process on uvloop (the loop
`serve` runs on), offers `--n` operations open-loop at `--rate` per second, each kind in turn
(`--rounds` times), and reports this process's CPU ms per operation (utime + stime of every
thread, `time.process_time`):

- `tick`: no call at all, an operation that only sleeps 2 ms (the loop's own wake-ups);
- `grpc`: the webhook's create as the service sends it (`FirestoreWire.create`: one raw Commit
  on the client's channel);
- `rest`: the same create as Firestore's REST `documents:commit`, sent with aiohttp.

A webhook in queue mode makes two such calls (the create and the publish) besides its HTTP
request and answer; docs/performance.md ("What a call costs") has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable

import aiohttp
import uvloop
from google.cloud import firestore

from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.adapters.firestore_wire import FirestoreWire

PROJECT = "rpc-cost"
DOC = {
    "status": "queued",
    "eventType": "ON_ORDER_COMPLETED",
    "orderingKey": "u-1",
    "payloadHash": "x" * 64,
    "attempts": 0,
}


def rest_fields() -> dict[str, object]:
    return {
        "status": {"stringValue": "queued"},
        "eventType": {"stringValue": "ON_ORDER_COMPLETED"},
        "orderingKey": {"stringValue": "u-1"},
        "payloadHash": {"stringValue": "x" * 64},
        "attempts": {"integerValue": "0"},
    }


async def offered(op: Callable[[], Awaitable[None]], n: int, rate: float) -> float:
    """CPU ms per operation for `n` operations started open-loop at `rate` per second."""
    for _ in range(50):  # warm the connection and the code paths
        await op()
    started = time.process_time()
    tasks = []
    for _ in range(n):
        tasks.append(asyncio.ensure_future(op()))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)
    return (time.process_time() - started) / n * 1000


async def measure(host: str, n: int, rate: float, rounds: int) -> dict[str, list[float]]:
    db = firestore.AsyncClient(project=PROJECT)
    wire = FirestoreWire(db)
    database = f"projects/{PROJECT}/databases/(default)"
    results: dict[str, list[float]] = {"tick": [], "grpc": [], "rest": []}
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer owner"}) as session:
        url = f"http://{host}/v1/{database}/documents:commit"

        async def tick() -> None:
            await asyncio.sleep(0.002)

        async def grpc_create() -> None:
            await wire.create("rpcCost", uuid.uuid4().hex, DOC, 5)

        async def rest_create() -> None:
            name = f"{database}/documents/rpcCost/{uuid.uuid4().hex}"
            write = {"update": {"name": name, "fields": rest_fields()}, "currentDocument": {"exists": False}}
            body = json.dumps({"writes": [write]})
            async with session.post(url, data=body, headers={"content-type": "application/json"}) as answer:
                await answer.read()
                answer.raise_for_status()

        for _ in range(rounds):
            for kind, op in (("tick", tick), ("grpc", grpc_create), ("rest", rest_create)):
                results[kind].append(await offered(op, n, rate))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200, help="operations per second (default 200)")
    parser.add_argument("--n", type=int, default=2000, help="operations per kind and round (default 2000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three kinds (default 2)")
    args = parser.parse_args()
    stack = EmulatorStack.start(project=PROJECT)
    try:
        os.environ.update(stack.env())
        results = uvloop.run(measure(stack.firestore.host_port, args.n, args.rate, args.rounds))
    finally:
        stack.stop()
    print(f"CPU ms per operation, {args.n} per kind and round, open loop at {args.rate:g}/s, uvloop:")
    for kind, values in results.items():
        print(f"  {kind:5} " + " / ".join(f"{v:.3f}" for v in values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
