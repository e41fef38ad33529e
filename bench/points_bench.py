"""CreditPoints latency and throughput over gRPC and Connect (JSON), beside a same-run Firestore floor.

    python bench/points_bench.py [--n 300] [--concurrency 1,8] [--transports floor,grpc,connect] [--pin]

Starts both emulators on loopback, then the gRPC server (`grpc_server.run`, in its own
process, JSON logs on as in production) and the Connect app (uvicorn in its own
process), both with POINTS_AUTH=disabled. The floor is the same credit done as a bare
Firestore transaction from this process, no server in between: read the ledgerKey and
the wallet, write the entry, the key and the wallet. Every credit goes to a distinct
uid (no contention). The transports run interleaved in blocks so emulator drift hits
them alike; each level starts with a warm-up. Prints a Markdown table with each p50 and
p95 as a ratio to the floor's, then the CPU ms per credit of each process (the gRPC server,
the Connect app, this process as the client or as the floor, each emulator: /proc, sampled at
the start and end of every measured block; `paynow_loadtest.cpu`) beside the same blocks' p50 /
p95. `--pin`: both servers on CPU 0, the emulators and the client on CPU 1, the floor on CPU 0 in
its blocks. Bounded: every request has a timeout and the whole run a
deadline; it stops the processes and emulators it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import grpc
from google.cloud import firestore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.benchlib import add_pin_option, emulator_pids, floor_entry, print_cpu  # noqa: E402
from paynow_loadtest.cpu import FLOOR, SENDER, CpuMeter, Placement  # noqa: E402
from paynow_loadtest.processes import wait_port  # noqa: E402
from paynow_loadtest.results import percentile  # noqa: E402
from paynow_service.adapters.emulators import EmulatorStack, free_port  # noqa: E402
from paynow_service.gen.paynow.points.v1 import points_service_pb2 as pb  # noqa: E402
from paynow_service.gen.paynow.points.v1 import points_service_pb2_grpc as pb_grpc  # noqa: E402

SERVE_GRPC = """
import sys
from paynow_service.config import Settings
from paynow_service.entrypoints.grpc_server import run
from paynow_service.logs import configure_logging
settings = Settings.from_env()
configure_logging(settings.log_level)
sys.exit(run(settings, host="127.0.0.1", drain_s=0))
"""
SERVE_CONNECT = """
import sys
import uvicorn
from google.cloud.firestore import AsyncClient
from starlette.applications import Starlette
from starlette.routing import Mount
from paynow_service.adapters.firestore_ledger import FirestoreLedger
from paynow_service.config import Settings
from paynow_service.entrypoints.connect_points import build_points_asgi
from paynow_service.logs import configure_logging
from paynow_service.service.points import PointsCore
settings = Settings.from_env()
configure_logging(settings.log_level)
db = AsyncClient(project=settings.google_cloud_project)
ledger = FirestoreLedger(db, timeout_s=settings.firestore_timeout_s)
path, app = build_points_asgi(settings, PointsCore(ledger))
uvicorn.run(Starlette(routes=[Mount(path, app=app)]), host="127.0.0.1", port=int(sys.argv[1]),
            log_config=None, access_log=False)
"""
REQUEST_TIMEOUT_S = 30
Sender = Callable[[str], Awaitable[None]]


def floor_sender(db: firestore.AsyncClient) -> Sender:
    """The same credit with nothing around it: one transaction, 2 reads, 3 writes of the same documents.

    The documents carry the data model's fields (SPEC 5), so the floor writes what the
    service writes; what it leaves out (the users/{uid} document, the replay and
    validation reads, the rules, the transport) is the service's cost.
    """

    @firestore.async_transactional
    async def credit(tx: firestore.AsyncTransaction, uid: str) -> None:
        entry_id = f"api:floor:{uid}"
        key_ref = db.document("ledgerKeys", entry_id)
        wallet_ref = db.document("users", uid, "wallet", "points")
        snaps = {
            s.reference.path: s async for s in db.get_all([key_ref, wallet_ref], transaction=tx, timeout=10)
        }
        if snaps[key_ref.path].exists:
            return
        wallet = snaps[wallet_ref.path].to_dict() or {}
        pre = int(wallet.get("paidBalance", 0))
        now = datetime.now(UTC)
        entry = floor_entry(uid, entry_id, 10, pre, now, {"idempotencyKey": uid}, "bench")
        key = {"entryId": entry_id, "uid": uid, "amount": 10, "requestHash": "0" * 64, "action": "credit"}
        tx.create(db.document("users", uid, "ledger", entry_id), entry)
        tx.create(key_ref, {**key, "createdAt": now, "v": 1})
        tx.set(wallet_ref, {
            "paidBalance": pre + 10, "promoBalance": 0, "promoLots": [], "createdAt": now, "updatedAt": now,
            "v": 1,
        })  # fmt: skip

    async def send(uid: str) -> None:
        await credit(db.transaction(), uid)

    return send


def grpc_sender(stub: pb_grpc.PointsServiceStub) -> Sender:
    async def send(uid: str) -> None:
        request = pb.CreditPointsRequest(
            uid=uid, amount=10, idempotency_key=uid, source="bench", kind=pb.KIND_PAID
        )
        response = await stub.CreditPoints(request, timeout=REQUEST_TIMEOUT_S)
        assert not response.replayed

    return send


def connect_sender(client: aiohttp.ClientSession, base: str) -> Sender:
    """Connect's JSON over HTTP/1.1 with aiohttp: a client that costs far less CPU than the server it
    measures (httpx spent 1.5-1.8 ms per request on this machine, and the client shares the cores)."""
    url = f"{base}/paynow.points.v1.PointsService/CreditPoints"

    async def send(uid: str) -> None:
        body = {"uid": uid, "amount": "10", "idempotencyKey": uid, "source": "bench", "kind": "KIND_PAID"}
        async with client.post(url, json=body) as response:
            response.raise_for_status()
            assert "replayed" not in await response.json()

    return send


async def run_block(send: Sender, tag: str, n: int, concurrency: int, latencies: list[float]) -> float:
    """n credits to distinct uids by `concurrency` workers; returns the wall time."""
    uids = [f"bench-{tag}-{uuid.uuid4().hex[:12]}" for _ in range(n)]
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(uids):
            uid = uids[next_index]
            next_index += 1
            began = time.perf_counter()
            await asyncio.wait_for(send(uid), REQUEST_TIMEOUT_S)
            latencies.append((time.perf_counter() - began) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def measure(
    senders: dict[str, Sender], n: int, levels: list[int], warmup: int, block: int, cpu: CpuMeter
) -> list[tuple[str, int, list[float], float]]:
    rows = []
    for concurrency in levels:
        latencies: dict[str, list[float]] = {name: [] for name in senders}
        walls = dict.fromkeys(senders, 0.0)
        for name, send in senders.items():
            with cpu.turn(name, FLOOR if name == "floor" else SENDER, measured=False):
                await run_block(send, f"warm-{name}", warmup, concurrency, [])
        done = 0
        while done < n:
            size = min(block, n - done)
            for name, send in senders.items():  # interleaved: drift hits every transport alike
                # This process is the floor or the transports' client (placed for it with --pin).
                with cpu.turn(f"{name} c{concurrency}", FLOOR if name == "floor" else SENDER) as turn:
                    walls[name] += await run_block(send, name, size, concurrency, turn.latencies)
                    turn.events = len(turn.latencies)
                latencies[name] += turn.latencies
            done += size
            print(f"  concurrency {concurrency}: {done}/{n}", file=sys.stderr, flush=True)
        rows += [(name, concurrency, latencies[name], walls[name]) for name in senders]
    return rows


def table(rows: list[tuple[str, int, list[float], float]]) -> str:
    floors = {c: (statistics.median(lat), percentile(lat, 95)) for name, c, lat, _ in rows if name == "floor"}
    header = (
        "| transport | concurrency | requests | p50 ms | p95 ms | p99 ms | req/s | p50/floor | p95/floor |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, concurrency, lat, wall in rows:
        p50, p95 = statistics.median(lat), percentile(lat, 95)
        floor = floors.get(concurrency)
        ratio50 = f"{p50 / floor[0]:.2f}x" if floor else "-"
        ratio95 = f"{p95 / floor[1]:.2f}x" if floor else "-"
        lines.append(
            f"| {name} | {concurrency} | {len(lat)} | {p50:.2f} | {p95:.2f} | {percentile(lat, 99):.2f} | "
            f"{len(lat) / wall:.0f} | {ratio50} | {ratio95} |"
        )
    return "\n".join(lines)


async def run(
    args: argparse.Namespace, env: dict[str, str], grpc_port: int, http_port: int, cpu: CpuMeter
) -> str:
    transports = args.transports.split(",")
    db = firestore.AsyncClient(project=env["GOOGLE_CLOUD_PROJECT"])
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as client:
        available = {
            "floor": floor_sender(db),
            "grpc": grpc_sender(pb_grpc.PointsServiceStub(channel)),
            "connect": connect_sender(client, f"http://127.0.0.1:{http_port}"),
        }
        senders = {name: available[name] for name in transports}
        levels = [int(c) for c in args.concurrency.split(",")]
        rows = await asyncio.wait_for(
            measure(senders, args.n, levels, args.warmup, args.block, cpu), args.deadline
        )
    await channel.close()
    db.close()
    return table(rows)


def start(code: str, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="measured credits per transport and level (300)")
    parser.add_argument("--concurrency", default="1,8", help="comma list of concurrency levels (1,8)")
    parser.add_argument(
        "--transports", default="floor,grpc,connect", help="comma list of floor, grpc, connect"
    )
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured credits per transport first (30)")
    parser.add_argument("--block", type=int, default=25, help="credits per interleaved block (25)")
    parser.add_argument("--deadline", type=float, default=600, help="seconds before the run gives up (600)")
    add_pin_option(parser)
    return parser.parse_args()


def stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        child.terminate()
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(15)
        if child.poll() is None:
            child.kill()
            child.wait(5)


def main() -> int:
    args = parse_args()
    placement = Placement.choose(args.pin, "points_bench")  # before anything starts: exits 2 if it cannot
    workdir = Path(tempfile.mkdtemp(prefix="points-bench-"))
    stack = EmulatorStack.start(project="bench", log_dir=workdir)
    os.environ.update(stack.env())
    grpc_port, http_port = free_port(), free_port()
    env = {
        **stack.env(),
        "GRPC_PORT": str(grpc_port),
        "POINTS_AUTH": "disabled",
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO"),
    }
    children: list[subprocess.Popen[bytes]] = []
    try:
        children.append(start(SERVE_GRPC, env, workdir / "grpc.log"))
        children.append(start(SERVE_CONNECT, env, workdir / "connect.log", str(http_port)))
        for port in (grpc_port, http_port):
            if not wait_port(port, 40):
                raise SystemExit(f"a server did not listen on {port}; logs in {workdir}")
        servers = {"grpc": children[0].pid, "connect": children[1].pid}
        cpu = CpuMeter(servers, emulator_pids(stack), placement)
        cpu.pin()
        print(f"running: n={args.n} per transport and level, concurrency {args.concurrency}", file=sys.stderr)
        result = asyncio.run(run(args, env, grpc_port, http_port, cpu))
    finally:
        stop(children)
        stack.stop()
        if placement is not None:
            placement.restore()
    print(
        f"\nCreditPoints, {args.n} credits per transport and level to distinct uids, interleaved blocks of "
        f"{args.block} (one run; both emulators, servers and client on this machine)\n"
    )
    print(result)
    print_cpu(cpu, ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
