"""Helpers shared by the benchmarks in this folder: one open-loop driver, a paid credit's ledger
entry as the floors write it, a JSON log's tail, and the benchmark protocol's options and CPU table.
The percentile, the webhook floor's record and message, the service's processes and the CPU meter
come from the load tool (`paynow_loadtest`: results, floor, processes, cpu).

The protocol (docs/performance.md): every bench samples each process's CPU (its service's, itself as
the sender or the floor, each emulator) at the start and end of every measured turn
(`paynow_loadtest.cpu.CpuMeter`) and prints CPU ms per event beside its latencies; `--pin` pins the
service's processes on CPU 0, the emulators and the sender on CPU 1, the floor on CPU 0 in its turns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from paynow_loadtest.cpu import CpuMeter, commit, cpu_table
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.adapters.pubsub_infra import PubSubInfra
from paynow_service.adapters.pubsub_topology import desired_topology
from paynow_service.config import Settings

PIN_HELP = (
    "pinned mode: the service's processes on CPU 0, the emulators and this sender on CPU 1, the floor "
    "on CPU 0 in its turns (needs 2 CPUs: else it exits 2); default: unpinned"
)


def add_pin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pin", action="store_true", help=PIN_HELP)


# The service's tracing in a bench (docs/performance.md, "Tracing overhead"): spans written to a file
# in the run's work directory (never Cloud Trace: no network), at the default ratio or every trace.
TRACING = {
    "off": {},
    "default": {"OTEL_EXPORTER": "file"},
    "full": {"OTEL_EXPORTER": "file", "TRACE_SAMPLE_RATIO": "1"},
}


def add_env_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracing",
        choices=tuple(TRACING),
        default="off",
        help="the service's tracing: off (OTEL_EXPORTER=none), default (spans to a file at the default "
        "TRACE_SAMPLE_RATIO), full (every trace); default: off",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for the service's processes (repeatable; after --tracing's)",
    )


def service_env(args: argparse.Namespace, workdir: Path) -> dict[str, str]:
    """The environment `--tracing` and `--env` add to the service's processes."""
    env = dict(TRACING[args.tracing])
    if env:
        env["TRACE_FILE"] = str(workdir / "spans.jsonl")
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--env {item!r}: use KEY=VALUE")
        env[key] = value
    return env


def print_cpu(meter: CpuMeter, checkout: Path) -> None:
    """The CPU ms per event table of a bench's measured turns, with its mode and the commit."""
    print(f"\n{meter.result()['mode']}, commit {commit(checkout)}\n")
    print("\n".join(cpu_table(meter.result())))


class LogTail:
    """A service's JSON log lines, read incrementally."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""

    def lines(self) -> list[dict[str, Any]]:
        with open(self._path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        out = []
        for raw in complete:
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, dict):
                    out.append(line)
        return out


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


def start_emulators(prefix: str, catalog: str) -> tuple[EmulatorStack, Path, Path]:
    """Both emulators for one bench run, their env exported to this process: (stack, work dir, catalog)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    stack = EmulatorStack.start(project="bench", log_dir=workdir)
    os.environ.update(stack.env())
    catalog_path = workdir / "catalog.toml"
    catalog_path.write_text(catalog)
    return stack, workdir, catalog_path


def apply_topology(settings: Settings) -> None:
    infra = PubSubInfra(settings)
    try:
        infra.apply(desired_topology(settings))
    finally:
        infra.close()


def emulator_pids(stack: EmulatorStack) -> dict[str, int]:
    """The emulators' processes, for the CPU meter."""
    return {"firestore": stack.firestore.pid, "pubsub": stack.pubsub.pid}
