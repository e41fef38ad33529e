"""A log flood with a blocked stdout keeps the process's memory bounded (measured) and counts the drops.

`paynow-service serve` runs with its stdout on a pipe nobody reads: once the pipe's buffer is
full, its log writer blocks, as it does behind a stalled log agent. Then a flood of webhooks
that each log a line: signed events of another store ("Webhook received", then a sampled
"Webhook rejected - foreign_store"), with a burst of bad signatures first (sampled: 20 lines).
The process's RSS is read from /proc before, between and after two flood phases: once the
log queue is full, the second phase adds nothing. The drop counter is read on /metrics
(HTTP_ROUTES=webhook,metrics) and, once the pipe is drained, in the "Log lines dropped" line.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from paynow_loadtest.lean_http import LeanClient
from paynow_loadtest.processes import CLI, wait_port
from paynow_loadtest.webhook import signed_headers
from paynow_service.adapters.emulators import EmulatorStack, free_port
from paynow_service.entrypoints.webhook import PATH
from paynow_service.logs import DROP_REPORT_MESSAGE, LOG_QUEUE_LINES
from paynow_service.sample_webhooks import build_event
from tests.support.stack import PRODUCT, stack_env, unique, write_catalog

pytestmark = [pytest.mark.e2e, pytest.mark.emulators, pytest.mark.timeout(150)]

SECRET = "pn-test-secret-one"
OUR_STORE = "411486491630300001"
BAD_SIGNATURES = 300
WARM_UP = 1_000
PHASE = 15_000  # each phase alone overflows the queue: the second one must add no memory
CONCURRENCY = 32
PHASE_DEADLINE_S = 35  # bounded in time whatever the machine's speed
# An unbounded queue holds ~1 KB per line (logs.LOG_QUEUE_LINES): the second phase alone
# would add ~15 MB. Bounded, it adds only allocator noise.
SECOND_PHASE_GROWTH_MB = 8
TOTAL_GROWTH_MB = 60


class _Serve:
    """`paynow-service serve` with stdout on a pipe that is read only when `drain` is called."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.stderr_path = log_dir / "serve-stderr.log"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [*CLI, "serve"],
            env={**os.environ, **env, "PORT": str(self.port)},
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        (kb,) = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
        return int(kb) / 1024

    def drain(self) -> None:
        """Start reading stdout: the writer thread is unblocked."""

        def read() -> None:
            assert self.process.stdout is not None
            for raw in self.process.stdout:
                self.lines.append(raw.decode(errors="replace"))

        self._reader = threading.Thread(target=read, name="serve-stdout", daemon=True)
        self._reader.start()

    def entries(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    def stop(self) -> None:
        if self.process.poll() is None:
            if self._reader is None:
                self.drain()  # a blocked writer would hold the exit forever
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        if self._reader is not None:
            self._reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._stderr.close()


@pytest.fixture
def server(emulators: EmulatorStack, tmp_path: Path) -> Iterator[_Serve]:
    env = stack_env(
        emulators.env(),
        write_catalog(tmp_path),
        HTTP_ROUTES="webhook,metrics",
        PAYNOW_STORE_ID=OUR_STORE,
    )
    process = _Serve(env, tmp_path)
    try:
        if not wait_port(process.port, 40):
            raise RuntimeError(f"serve did not listen:\n{process.stderr_path.read_text()[-3000:]}")
        yield process
    finally:
        process.stop()


def _foreign_store_request() -> tuple[bytes, dict[str, str]]:
    """A correctly signed event of another store: logged, then refused before any Firestore call."""
    event = build_event("ON_ORDER_COMPLETED", uid=unique("u"), product_id=PRODUCT)
    event["body"]["store_id"] = "411486491630399999"
    body = json.dumps(event).encode()
    return body, signed_headers(SECRET, body)  # valid for the 300 s window: one signature serves the flood


async def _flood(base: str, count: int, body: bytes, headers: dict[str, str], expect: int) -> int:
    """Send `count` requests, CONCURRENCY at a time, for at most PHASE_DEADLINE_S; returns how many.

    The load tool's lean client: on two cores, httpx's own cost halved the flood's rate."""
    deadline = time.monotonic() + PHASE_DEADLINE_S
    left = count
    sent = 0
    client = LeanClient(base)

    async def worker() -> None:
        nonlocal left, sent
        while left > 0 and time.monotonic() < deadline:
            left -= 1
            status, answer = await asyncio.wait_for(client.request("POST", PATH, body, headers), 10)
            assert status == expect, answer
            sent += 1

    try:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    finally:
        client.close()
    return sent


def _dropped_on_metrics(base: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("paynow_log_lines_dropped_total "):
            return float(line.split()[1])
    raise AssertionError("paynow_log_lines_dropped_total is not on /metrics")


def _wait_until_quiet(server: _Serve, timeout: float = 30) -> None:
    """Until the writer has written what it held (no new line for half a second)."""
    deadline = time.monotonic() + timeout
    count = -1
    while len(server.lines) != count and time.monotonic() < deadline:
        count = len(server.lines)
        time.sleep(0.5)


def test_a_log_flood_with_a_blocked_stdout_keeps_memory_bounded_and_counts_drops(server: _Serve) -> None:
    base = f"http://127.0.0.1:{server.port}"
    url = f"{base}{PATH}"
    body, headers = _foreign_store_request()
    forged = {**headers, "PayNow-Signature": "Zm9yZ2Vk"}

    assert asyncio.run(_flood(base, BAD_SIGNATURES, body, forged, 401)) == BAD_SIGNATURES
    assert asyncio.run(_flood(base, WARM_UP, body, headers, 401)) == WARM_UP
    rss_start = server.rss_mb()
    first = asyncio.run(_flood(base, PHASE, body, headers, 401))
    rss_full = server.rss_mb()
    second = asyncio.run(_flood(base, PHASE, body, headers, 401))
    rss_end = server.rss_mb()
    dropped = _dropped_on_metrics(base)
    print(
        f"\nRSS {rss_start:.1f} MB after warm-up, {rss_full:.1f} MB after {first} more requests, "
        f"{rss_end:.1f} MB after {second} more; {dropped:.0f} lines dropped"
    )
    assert first + second > LOG_QUEUE_LINES, "the flood was too slow to fill the log queue"
    # Every flood request logs at least "Webhook received", and the writer has been blocked since
    # start: all but the queue's lines (and the pipe's ~64 KB) are dropped.
    assert dropped >= WARM_UP + first + second - LOG_QUEUE_LINES - 1_000
    assert rss_end - rss_full < SECOND_PHASE_GROWTH_MB
    assert rss_end - rss_start < TOTAL_GROWTH_MB

    server.drain()
    _wait_until_quiet(server)
    deadline = time.monotonic() + 30
    reported: list[dict[str, object]] = []
    while time.monotonic() < deadline and not reported:
        # The next line that finds room brings the drop report.
        httpx.post(url, content=body, headers=headers, timeout=10)
        time.sleep(0.2)
        reported = [e for e in server.entries() if e["message"] == DROP_REPORT_MESSAGE]
    assert reported, "no 'Log lines dropped' line once stdout was drained"
    assert sum(int(str(e["dropped"])) for e in reported) == _dropped_on_metrics(base) >= dropped
    assert all(e["severity"] == "WARNING" for e in reported)
    refused = [e for e in server.entries() if e["message"] == "Webhook rejected - invalid_signature"]
    assert len(refused) == 20  # the sampler's first 20 in the burst's interval; metrics counted all
    assert all(e["rejection_reason"] == "invalid_signature" for e in refused)
