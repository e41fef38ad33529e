"""Every row of docs/refunds-and-disputes.md end to end, in queue mode: signed webhooks to `serve`,
Pub/Sub, the pull worker, Firestore. The rows run side by side (each its own user and order);
within a row each event is sent once the one before it reached its final status (processed,
or parked when its order has not come yet), and `wait` rows hold their order back 15 and 60 s.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.cloud.firestore import AsyncClient

from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.state import FINAL_STATUSES
from paynow_loadtest.webhook import post_async
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.config import Settings
from tests.support.disputes_table import Case, Row, rows
from tests.support.processes import serve
from tests.support.stack import apply_topology, stack_env, write_catalog

pytestmark = [pytest.mark.emulators, pytest.mark.e2e, pytest.mark.timeout(280)]

SECRET = "pn-test-secret-one"
# The pull worker with the tests' refund plugin (one point back per refunded cent).
RUN_WORKER = (
    "import sys\n"
    "from paynow_service.config import Settings\n"
    "from paynow_service.entrypoints import pull_worker\n"
    "from tests.support.disputes_table import RefundByAmount\n"
    "sys.exit(pull_worker.run(Settings.from_env(), extra_plugins=(RefundByAmount(),)))\n"
)


class Stack:
    def __init__(self, emulators: EmulatorStack, tmp: Path) -> None:
        self.env = stack_env(emulators.env(), write_catalog(tmp), WEBHOOK_MODE="queue", HTTP_ROUTES="webhook")
        self.settings = Settings.from_env(self.env)
        apply_topology(self.settings)
        self.http = serve(self.env, tmp)
        self.worker = ServiceProcess("worker", self.env, tmp, argv=[sys.executable, "-c", RUN_WORKER])
        self.url = f"http://127.0.0.1:{self.http.port}/api/paynow/webhook"

    def stop(self) -> None:
        self.http.stop()
        self.worker.stop()


@pytest.fixture(scope="module")
def stack(emulators: EmulatorStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(emulators, tmp_path_factory.mktemp("disputes-e2e"))
    yield running
    running.stop()


async def play(stack: Stack, db: AsyncClient, http: httpx.AsyncClient, row: Row) -> str:
    """Send the row's events in order; '' when the wallet and the ledger end as the row says."""
    case = Case(row)
    for step in row.steps:
        payload = case.payload(step)
        if payload is None:
            await asyncio.sleep(float(step.split()[1]))
            continue
        body = json.dumps(payload, separators=(",", ":")).encode()
        for _ in range(20):  # PayNow retries anything but a 2xx
            if (await post_async(http, stack.url, body, SECRET)).status_code == 200:
                break
            await asyncio.sleep(0.5)
        else:
            return f"{step}: never accepted"
        status = await final_status(db, payload["event_id"])
        if status not in ("processed", "parked"):
            return f"{step}: ended {status}"
    wallet = (await db.document("users", case.uid, "wallet", "points").get()).to_dict() or {}
    balances = (wallet.get("paidBalance", 0), wallet.get("promoBalance", 0))
    entries = {snap.id async for snap in db.collection("users", case.uid, "ledger").stream()}
    problems = []
    if balances != (row.paid, row.promo):
        problems.append(f"balances {balances}, expected {(row.paid, row.promo)}")
    if entries != case.entry_ids():
        problems.append(f"entries {sorted(entries)}, expected {sorted(case.entry_ids())}")
    return "; ".join(problems)


async def final_status(db: AsyncClient, event_id: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    status = "missing"
    while time.monotonic() < deadline:
        status = str(((await db.document("webhookEvents", event_id).get()).to_dict() or {}).get("status"))
        if status in FINAL_STATUSES:
            return status
        await asyncio.sleep(0.2)
    return f"not final after {timeout_s:.0f} s ({status})"


async def test_every_row_of_the_table_in_queue_mode(stack: Stack, emulators: EmulatorStack) -> None:
    table = rows()
    db = AsyncClient(project=emulators.firestore.project)
    async with httpx.AsyncClient(timeout=15) as http:
        results = await asyncio.gather(*(play(stack, db, http, row) for row in table))
    failures = [f"row {row.number} ({row.case}): {r}" for row, r in zip(table, results, strict=True) if r]
    assert not failures, "\n".join(failures) + "\n" + stack.worker.logs()[-4000:]
    assert any(row.waits >= 60 for row in table)  # a refund a minute ahead of its order was applied
