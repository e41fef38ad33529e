"""Every row of docs/refunds-and-disputes.md through the processing core, on the Firestore emulator.

Events go one after the other (a `wait` costs nothing here); the wallet and the ledger at
the end must be the row's. The same rows run end to end in tests/e2e/test_disputes_e2e.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest

from paynow_service import bootstrap
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.config import Settings
from paynow_service.domain.paynow import parse_webhook
from tests.support.disputes_table import Case, RefundByAmount, Row, rows
from tests.support.stack import apply_topology, doc, ledger, stack_env, write_catalog

pytestmark = pytest.mark.emulators


@pytest.fixture(scope="module")
async def container(
    emulators: EmulatorStack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[bootstrap.Container]:
    settings = Settings.from_env(
        stack_env(emulators.env(), write_catalog(tmp_path_factory.mktemp("disputes")))
    )
    apply_topology(settings)
    c = bootstrap.build_container(settings, extra_plugins=(RefundByAmount(),))
    yield c
    await c.aclose()


def test_the_table_has_every_case_the_contract_names() -> None:
    table = rows()
    assert [row.number for row in table] == list(range(1, len(table) + 1))
    steps = " ".join(" ".join(row.steps) for row in table)
    for needed in (
        "wait 15",
        "wait 60",
        "approved 200",
        "order+plan",
        "closed d1 lost",
        "rev2:",
        "recredit2:",
    ):
        assert needed in steps or any(needed in e for row in table for e in row.entries), needed


@pytest.mark.parametrize("row", rows(), ids=lambda row: f"{row.number}-{row.case}")
async def test_row(container: bootstrap.Container, row: Row) -> None:
    case = Case(row)
    project = container.settings.google_cloud_project
    for step in row.steps:
        payload = case.payload(step)
        if payload is None:
            continue
        now = int(time.time() * 1000)
        event = parse_webhook(json.dumps(payload).encode(), received_at_ms=now, sent_at_ms=now)
        outcome = await container.core.process(event, component="test")
        assert outcome.status == "processed", (step, outcome)
    wallet = doc(project, f"users/{case.uid}/wallet/points") or {}
    assert (wallet.get("paidBalance", 0), wallet.get("promoBalance", 0)) == (row.paid, row.promo)
    assert set(ledger(project, case.uid)) == case.entry_ids()
    order = doc(project, f"paynowOrders/{case.order_id}") or {}
    assert "parked" not in order, order.get("parked")
