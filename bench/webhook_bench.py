"""Webhook answer latency at a fixed open-loop rate, queue and sync mode, beside a same-run floor.

    python bench/webhook_bench.py [--rate 100] [--duration 30] [--modes floor,queue,sync] [--pin]

Starts both emulators on loopback, applies the topology, then for each mode sends
signed, realistic ON_ORDER_COMPLETED events (PayNow's shapes, distinct users) at a
fixed rate for a fixed time, each request on its own schedule (open loop: a slow
answer does not slow the sender). The floor is a bare script doing the same work as
the queue-mode webhook with no web framework: the same Firestore create (the same
document) and the same ordered Pub/Sub publish (the same message) per event, at the
same rate, with the document and message built before the clock starts. Prints a
Markdown table of p50 / p95 / p99 with the ratio of each p95 to the floor's, then the CPU ms
per event of each process (each mode's serve, this process as the sender or as the floor, each
emulator: /proc, sampled at the start and end of every measured segment; `paynow_loadtest.cpu`)
beside the same segments' p50 / p95. `--pin`: serve on CPU 0, the emulators and the sender on
CPU 1, the floor on CPU 0 in its segments. Bounded: stops by itself.

The HTTP client is aiohttp: a load generator must cost far less than what it measures.
Here httpx spent about 2.4 ms of CPU per request in the sending process (aiohttp 0.9 ms),
which on a two-core machine showed up in the service's p95 and not in the floor's.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
from pathlib import Path

import aiohttp
from google.cloud import firestore
from google.pubsub_v1 import PublisherAsyncClient
from google.pubsub_v1.types import PubsubMessage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.benchlib import (  # noqa: E402
    add_env_options,
    add_pin_option,
    emulator_pids,
    open_loop,
    print_cpu,
    service_env,
    start_emulators,
)
from paynow_loadtest.cpu import FLOOR, SENDER, CpuMeter, Placement  # noqa: E402
from paynow_loadtest.floor import floor_item  # noqa: E402
from paynow_loadtest.processes import ServiceProcess  # noqa: E402
from paynow_loadtest.results import percentile  # noqa: E402
from paynow_loadtest.webhook import signed_headers  # noqa: E402
from paynow_service.adapters.emulators import free_port  # noqa: E402
from paynow_service.adapters.pubsub_infra import PubSubInfra, desired_topology  # noqa: E402
from paynow_service.config import Settings  # noqa: E402
from paynow_service.domain.provenance import ATTR_EVENT_MAC, EventSigner  # noqa: E402
from paynow_service.sample_webhooks import build_event  # noqa: E402

SECRET = "pn-bench-secret"
SIGNING_KEY = "bench-event-signing-key-0123456789abcdef"  # EVENT_SIGNING_KEYS of the bench's serve
PRODUCT = "411486491630370816"
CATALOG = f'[products."{PRODUCT}"]\npoints = 500\n'


def events(n: int, tag: str) -> list[bytes]:
    return [
        json.dumps(
            build_event("ON_ORDER_COMPLETED", uid=f"bench-{tag}-{i % 500}", product_id=PRODUCT)
        ).encode()
        for i in range(n)
    ]


class Floor:
    """The same durable work as the queue-mode webhook, with no web framework."""

    def __init__(self, settings: Settings) -> None:
        self.db = firestore.AsyncClient(project=settings.google_cloud_project)
        self.publisher = PublisherAsyncClient()
        self.topic = settings.topic_path(settings.pubsub_topic)
        self.signer = EventSigner(settings.event_signing_keys)

    async def segment(self, rate: float, duration: float, tag: str) -> tuple[list[float], int]:
        bodies = events(int(rate * duration), tag)

        async def one(i: int) -> bool:
            # The same document and the same message as the queue-mode webhook, built in
            # advance but for the times: what remains is the durable work itself.
            item = prepared[i]
            document = item.document(dt.datetime.now(dt.UTC))
            await self.db.collection("benchFloor").document(item.event_id).create(document, timeout=10)
            # The webhook's MAC, computed per delivery as the webhook does.
            attributes = {**item.attributes, ATTR_EVENT_MAC: self.signer.sign(item.data)}
            message = PubsubMessage(data=item.data, attributes=attributes, ordering_key=item.ordering_key)
            await self.publisher.publish(topic=self.topic, messages=[message], retry=None, timeout=10)
            return True

        prepared = [floor_item(body) for body in bodies]
        return await open_loop(rate, len(bodies), one)

    async def close(self) -> None:
        await self.publisher.transport.close()
        self.db.close()


class Webhook:
    """Signed deliveries to a running `paynow-service serve`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session: aiohttp.ClientSession | None = None  # made inside the running loop

    async def segment(self, rate: float, duration: float, tag: str) -> tuple[list[float], int]:
        bodies = events(int(rate * duration), tag)
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=200), timeout=aiohttp.ClientTimeout(total=30)
            )
        session = self.session

        async def one(i: int) -> bool:
            headers = signed_headers(SECRET, bodies[i])
            async with session.post(self.url, data=bodies[i], headers=headers) as response:
                await response.read()
                return 200 <= response.status < 300

        return await open_loop(rate, len(bodies), one)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


async def segment(
    cpu: CpuMeter, target: Floor | Webhook, mode: str, rate: float, duration: float, tag: str,
    measured: bool = True,
) -> tuple[list[float], int]:  # fmt: skip
    """One segment of `mode`, this process as the floor or the sender (placed for it with --pin); a
    measured one's CPU per process sampled at its start and end."""
    with cpu.turn(mode, FLOOR if mode == "floor" else SENDER, measured=measured) as turn:
        latencies, failures = await target.segment(rate, duration, tag)
        turn.record(latencies)
    return latencies, failures


async def measure(
    settings: Settings, urls: dict[str, str], modes: list[str], args: argparse.Namespace, cpu: CpuMeter
) -> dict[str, tuple[list[float], int]]:
    """The floor and queue mode take turns in short segments, so both see the same machine.

    Sync mode runs last, alone: at this rate its transactions saturate the Firestore
    emulator, whose catching up would otherwise slow the segments that follow.
    """
    rate, duration, rounds = args.rate, args.duration, args.rounds
    targets: dict[str, Floor | Webhook] = {
        m: Floor(settings) if m == "floor" else Webhook(urls[m]) for m in modes
    }
    results: dict[str, tuple[list[float], int]] = {m: ([], 0) for m in modes}
    turns = [m for m in modes if m != "sync"]
    try:
        # Unmeasured traffic first, in turns: connections open, and the emulators' JVMs compile
        # their hot paths (their latency falls for the first tens of seconds of traffic).
        for mode in turns:
            warm_s = args.warmup / max(len(turns), 1)
            await segment(cpu, targets[mode], mode, rate, warm_s, f"warm-{mode}", measured=False)
        for r in range(rounds):
            # Counterbalanced (A, B), (B, A), ...: the machine drifts during a run, and whoever always
            # went first would always meet it worse.
            for mode in turns if r % 2 == 0 else turns[::-1]:
                latencies, failures = await segment(
                    cpu, targets[mode], mode, rate, duration / rounds, f"{mode}-{r}"
                )
                results[mode] = (results[mode][0] + latencies, results[mode][1] + failures)
        if "sync" in targets:
            await segment(cpu, targets["sync"], "sync", rate, 1, "warm-sync", measured=False)
            results["sync"] = await segment(cpu, targets["sync"], "sync", rate, duration, "sync")
    finally:
        for target in targets.values():
            await target.close()
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100, help="events per second (default 100)")
    parser.add_argument("--duration", type=float, default=30, help="seconds per mode (default 30)")
    parser.add_argument("--modes", default="floor,queue,sync", help="comma list of floor, queue, sync")
    parser.add_argument("--rounds", type=int, default=6, help="segments each mode's time is split into")
    parser.add_argument(
        "--warmup", type=float, default=20, help="seconds of unmeasured traffic first, shared (default 20)"
    )
    add_pin_option(parser)
    add_env_options(parser)
    return parser.parse_args()


def print_latencies(args: argparse.Namespace, results: dict[str, tuple[list[float], int]]) -> None:
    floor_p95 = percentile(results["floor"][0], 95) if "floor" in results else float("nan")
    print(
        f"\nWebhook answer latency, {args.rate:g}/s open loop, {args.duration:g} s per mode; floor and queue "
        f"in {args.rounds} interleaved segments, sync after them (one run, both emulators here)\n"
    )
    print("| mode | requests | non-2xx | p50 ms | p95 ms | p99 ms | p95 / floor p95 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, (lat, failures) in results.items():
        p95 = percentile(lat, 95)
        print(
            f"| {mode} | {len(lat)} | {failures} | {statistics.median(lat):.2f} | {p95:.2f} | "
            f"{percentile(lat, 99):.2f} | {p95 / floor_p95:.2f}x |"
        )


def main() -> int:
    args = parse_args()
    placement = Placement.choose(args.pin, "webhook_bench")  # before anything starts: exits 2 if it cannot
    stack, workdir, catalog = start_emulators("webhook-bench-", CATALOG)
    env = {
        **stack.env(),
        "PAYNOW_WEBHOOK_SECRETS": SECRET,
        "EVENT_SIGNING_KEYS": SIGNING_KEY,
        "PRODUCT_CATALOG": str(catalog),
        "HTTP_ROUTES": "webhook",
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
        **service_env(args, workdir),
    }
    settings = Settings.from_env(env)
    infra = PubSubInfra(settings)
    infra.apply(desired_topology(settings))
    infra.close()
    modes = args.modes.split(",")
    servers = {}
    try:
        for mode in modes:
            if mode != "floor":
                port = free_port()
                servers[mode] = ServiceProcess(
                    "serve", {**env, "WEBHOOK_MODE": mode, "PORT": str(port)}, workdir, port=port
                ).wait_ready()
        urls = {m: f"http://127.0.0.1:{p.port}/api/paynow/webhook" for m, p in servers.items()}
        service = {f"serve ({mode})": server.process.pid for mode, server in servers.items()}
        cpu = CpuMeter(service, emulator_pids(stack), placement)
        cpu.pin()
        print(f"running {', '.join(modes)} in turns: {args.rate:g}/s, {args.duration:g} s each in "
              f"{args.rounds} segments ...", file=sys.stderr, flush=True)  # fmt: skip
        results = asyncio.run(measure(settings, urls, modes, args, cpu))
    finally:
        for server in servers.values():
            server.stop()
        stack.stop()
        if placement is not None:
            placement.restore()
    print_latencies(args, results)
    print_cpu(cpu, ROOT)
    print(f"\ntracing: {args.tracing}", *args.env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
