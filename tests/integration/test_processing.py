"""The processing core on the real emulators: one transaction per event, exactly once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from paynow_service import bootstrap, hookimpl
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.adapters.firestore_transactions import FirestoreTransactions
from paynow_service.config import Settings
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.events import OrderLine, PaymentEvent
from paynow_service.domain.paynow import parse_webhook
from paynow_service.hookspecs import Credit
from paynow_service.sample_webhooks import build_event, flake_id
from tests.support.stack import (
    PLAN,
    PRODUCT,
    PROMO_PRODUCT,
    apply_topology,
    doc,
    ledger,
    pull,
    stack_env,
    unique,
)
from tests.support.stack import write_catalog as _write_catalog

PROJECT_KEY = "GOOGLE_CLOUD_PROJECT"


@pytest.fixture
async def container(emulators: EmulatorStack, tmp_path: Path) -> AsyncIterator[bootstrap.Container]:
    settings = Settings.from_env(stack_env(emulators.env(), _write_catalog(tmp_path)))
    apply_topology(settings)
    c = bootstrap.build_container(settings)
    yield c
    await c.aclose()


def event_of(payload: dict[str, Any]) -> PaymentEvent:
    now = int(time.time() * 1000)
    return parse_webhook(json.dumps(payload).encode(), received_at_ms=now, sent_at_ms=now)


def project(c: bootstrap.Container) -> str:
    return c.settings.google_cloud_project


async def test_order_is_credited_once(container: bootstrap.Container) -> None:
    uid = unique("u")
    payload = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT, quantity=3)
    event = event_of(payload)
    first = await container.core.process(event, component="test")
    assert first.status == "processed"
    assert first.points == 1500
    again = await container.core.process(event, component="test")
    assert again.status == "duplicate"
    wallet = doc(project(container), f"users/{uid}/wallet/points")
    assert wallet is not None
    assert wallet["paidBalance"] == 1500
    assert wallet["promoLots"] == []
    entries = ledger(project(container), uid)
    assert len(entries) == 1
    ((entry_id, entry),) = entries.items()
    assert entry_id == f"paynow:order:{event.order.order_id}:line:{event.order.lines[0].line_id}"  # type: ignore[union-attr]
    assert entry["amount"] == 1500
    record = doc(project(container), f"webhookEvents/{event.event_id}")
    assert record is not None
    assert record["status"] == "processed"
    assert record["result"]["points"] == 1500
    order = doc(project(container), f"paynowOrders/{event.order.order_id}")  # type: ignore[union-attr]
    assert order is not None
    assert order["uid"] == uid


async def test_same_order_under_a_new_event_id_is_not_credited_twice(container: bootstrap.Container) -> None:
    uid = unique("u")
    payload = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT)
    await container.core.process(event_of(payload), component="test")
    payload["event_id"] = flake_id()
    second = await container.core.process(event_of(payload), component="test")
    assert second.status == "processed"
    wallet = doc(project(container), f"users/{uid}/wallet/points")
    assert wallet is not None
    assert wallet["paidBalance"] == 500


async def test_concurrent_deliveries_credit_once(container: bootstrap.Container) -> None:
    uid = unique("u")
    event = event_of(build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT))
    outcomes = await asyncio.gather(*(container.core.process(event, component="test") for _ in range(5)))
    assert sorted(o.status for o in outcomes) == ["duplicate"] * 4 + ["processed"]
    wallet = doc(project(container), f"users/{uid}/wallet/points")
    assert wallet is not None
    assert wallet["paidBalance"] == 500


async def test_promo_product_and_subscription_line(container: bootstrap.Container) -> None:
    uid = unique("u")
    payload = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PROMO_PRODUCT, quantity=2)
    sub_line = dict(payload["body"]["lines"][0], id=flake_id(), product_id=PLAN, subscription_id=flake_id())
    payload["body"]["lines"].append(sub_line)
    outcome = await container.core.process(event_of(payload), component="test")
    assert outcome.status == "processed"
    wallet = doc(project(container), f"users/{uid}/wallet/points")
    assert wallet is not None
    assert (wallet["paidBalance"], wallet["promoBalance"]) == (0, 100)
    assert len(ledger(project(container), uid)) == 1  # the plan line is credited by subscription events only


async def test_unknown_product_is_dead_lettered_with_its_reason(container: bootstrap.Container) -> None:
    uid = unique("u")
    event = event_of(build_event("ON_ORDER_COMPLETED", uid=uid, product_id="999"))
    outcome = await container.core.process(event, component="test")
    assert outcome.status == "failed_terminal"
    assert outcome.reason == "unknown_product"
    record = doc(project(container), f"webhookEvents/{event.event_id}")
    assert record is not None
    assert record["status"] == "failed_terminal"
    assert record["failureReason"] == "unknown_product"
    messages = pull(container.settings, container.settings.pubsub_dlq_subscription, want=1)
    assert len(messages) == 1
    attributes = dict(messages[0].attributes)
    assert attributes["reason"] == "unknown_product"
    assert attributes["error_class"] == "terminal"
    assert attributes["event_id"] == event.event_id
    assert doc(project(container), f"users/{uid}/wallet/points") is None


async def test_unknown_user_is_terminal(container: bootstrap.Container) -> None:
    payload = build_event("ON_ORDER_COMPLETED", uid="", product_id=PRODUCT)
    payload["body"]["checkout"]["metadata"] = {}
    for line in payload["body"]["checkout"].get("lines") or []:
        line["metadata"] = {}
    outcome = await container.core.process(event_of(payload), component="test")
    assert outcome.status == "failed_terminal"
    assert outcome.reason == "user_not_found"


async def test_customer_mapping_credits_the_mapped_user(container: bootstrap.Container) -> None:
    uid, customer = unique("u"), flake_id()
    await container.core.process(
        event_of(build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT, customer_id=customer)),
        component="test",
    )
    mapping = doc(project(container), f"paynowCustomers/{customer}")
    assert mapping is not None
    assert mapping["uid"] == uid
    unmapped = build_event("ON_ORDER_COMPLETED", uid="", product_id=PRODUCT, customer_id=customer)
    unmapped["body"]["checkout"]["metadata"] = {}
    for line in unmapped["body"]["checkout"].get("lines") or []:
        line["metadata"] = {}
    outcome = await container.core.process(event_of(unmapped), component="test")
    assert outcome.status == "processed"
    wallet = doc(project(container), f"users/{uid}/wallet/points")
    assert wallet is not None
    assert wallet["paidBalance"] == 1000


async def test_subscription_cycles_credit_once_each(container: bootstrap.Container) -> None:
    uid, sub_id = unique("u"), flake_id()
    activated = event_of(
        build_event("ON_SUBSCRIPTION_ACTIVATED", uid=uid, product_id=PLAN, subscription_id=sub_id)
    )
    renewed = event_of(
        build_event(
            "ON_SUBSCRIPTION_RENEWED",
            uid=uid,
            product_id=PLAN,
            subscription_id=sub_id,
            billing_cycle_sequence=2,
        )
    )
    for event in (activated, renewed, renewed):
        await container.core.process(event, component="test")
    wallet = doc(project(container), f"users/{uid}/wallet/points")
    assert wallet is not None
    # Plans credit promo points by default (the app's default): one lot per cycle, 365 days.
    assert (wallet["paidBalance"], wallet["promoBalance"]) == (0, 2000)
    assert [lot["id"] for lot in wallet["promoLots"]] == [
        f"paynow:sub:{sub_id}:cycle:1",
        f"paynow:sub:{sub_id}:cycle:2",
    ]
    assert all(lot["amountRemaining"] == 1000 for lot in wallet["promoLots"])
    assert set(ledger(project(container), uid)) == {
        f"paynow:sub:{sub_id}:cycle:1",
        f"paynow:sub:{sub_id}:cycle:2",
    }
    sub = doc(project(container), f"users/{uid}/subscriptions/{sub_id}")
    assert sub is not None
    assert sub["cyclesCredited"] == 2
    assert sub["pointsPerCycle"] == 1000
    canceled = event_of(
        build_event(
            "ON_SUBSCRIPTION_CANCELED", uid=uid, product_id=PLAN, subscription_id=sub_id, status="canceled"
        )
    )
    await container.core.process(canceled, component="test")
    sub = doc(project(container), f"users/{uid}/subscriptions/{sub_id}")
    assert sub is not None
    assert sub["status"] == "canceled"
    assert sub["cyclesCredited"] == 2


async def test_refund_reverses_once_and_chargeback_won_recredits_once(container: bootstrap.Container) -> None:
    uid, order_id = unique("u"), flake_id()
    await container.core.process(
        event_of(
            build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT, order_id=order_id, quantity=2)
        ),
        component="test",
    )
    refund = event_of(
        build_event("ON_REFUND", uid=uid, product_id=PRODUCT, order_id=order_id, status="completed")
    )
    assert (await container.core.process(refund, component="test")).points == -1000
    again = event_of(
        build_event("ON_REFUND", uid=uid, product_id=PRODUCT, order_id=order_id, status="completed")
    )
    await container.core.process(again, component="test")
    wallet = doc(project(container), f"users/{uid}/wallet/points")
    assert wallet is not None
    assert wallet["paidBalance"] == 0
    entries = ledger(project(container), uid)
    assert sum(e["amount"] for e in entries.values()) == 0
    assert len(entries) == 2


async def test_refund_before_its_order_is_parked_on_the_order(container: bootstrap.Container) -> None:
    order_id = flake_id()
    refund = event_of(
        build_event("ON_REFUND", uid="x", product_id=PRODUCT, order_id=order_id, status="approved")
    )
    outcome = await container.core.process(refund, component="test")
    assert (outcome.status, outcome.decision.result if outcome.decision else None) == ("processed", "parked")
    record = doc(project(container), f"webhookEvents/{refund.event_id}")
    assert record is not None
    assert record["status"] == "parked"
    order = doc(project(container), f"paynowOrders/{order_id}")
    assert order is not None
    assert set(order["parked"]) == {refund.event_id}
    assert "uid" not in order  # not credited: a later refund parks too, the order applies them
    again = await container.core.process(refund, component="test")
    assert again.status == "duplicate"


async def test_chargeback_then_won_recredits_once(container: bootstrap.Container) -> None:
    uid, order_id = unique("u"), flake_id()
    await container.core.process(
        event_of(build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT, order_id=order_id)),
        component="test",
    )
    chargeback = build_event("ON_CHARGEBACK", uid=uid, product_id=PRODUCT, order_id=order_id)
    await container.core.process(event_of(chargeback), component="test")
    closed = build_event(
        "ON_CHARGEBACK_CLOSED", uid=uid, product_id=PRODUCT, order_id=order_id, chargeback_status="won"
    )
    closed["body"]["id"] = chargeback["body"]["id"]
    for _ in range(2):
        closed["event_id"] = flake_id()
        await container.core.process(event_of(closed), component="test")
    wallet = doc(project(container), f"users/{uid}/wallet/points")
    assert wallet is not None
    assert wallet["paidBalance"] == 500
    assert len(ledger(project(container), uid)) == 3


class DoubleTheFlagship:
    """An outside team's plugin: product PRODUCT is worth 777 a unit, whatever the catalog says."""

    @hookimpl
    def paynow_map_order_line(self, event: PaymentEvent, line: OrderLine, catalog: Catalog) -> Credit | None:
        return Credit(points=777 * line.quantity) if line.product_id == PRODUCT else None


async def test_third_party_plugin_changes_one_products_points(
    emulators: EmulatorStack, tmp_path: Path
) -> None:
    settings = Settings.from_env(stack_env(emulators.env(), _write_catalog(tmp_path)))
    apply_topology(settings)
    c = bootstrap.build_container(settings, extra_plugins=(DoubleTheFlagship(),))
    try:
        uid = unique("u")
        payload = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT, quantity=2)
        promo = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PROMO_PRODUCT)
        assert (await c.core.process(event_of(payload), component="test")).points == 1554
        assert (
            await c.core.process(event_of(promo), component="test")
        ).points == 50  # built-in still maps others
    finally:
        await c.aclose()
    amounts = sorted(e["amount"] for e in ledger(settings.google_cloud_project, uid).values())
    assert amounts == [50, 1554]


async def test_refunds_of_one_users_orders_take_that_users_wallet_lock(
    container: bootstrap.Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refund names only its order (its ordering key is `event:<id>`), yet it changes the user's
    wallet: its transaction must queue behind that user's others in this process, not race them."""
    uid, order_ids = unique("u"), [flake_id() for _ in range(8)]
    for order_id in order_ids:
        order = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT, order_id=order_id)
        assert (await container.core.process(event_of(order), component="test")).status == "processed"
    refunds = [
        event_of(build_event("ON_REFUND", uid=uid, product_id=PRODUCT, order_id=o, status="completed"))
        for o in order_ids
    ]
    assert all(r.uid == "" and r.resolved_ordering_key() == f"event:{r.event_id}" for r in refunds)
    running = peak = 0
    real_run = FirestoreTransactions.run

    async def watched(self: FirestoreTransactions, keys: Any, fn: Any, **options: Any) -> Any:
        async def work(tx: Any) -> Any:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                return await fn(tx)
            finally:
                running -= 1

        return await real_run(self, keys, work, **options)

    monkeypatch.setattr(FirestoreTransactions, "run", watched)
    outcomes = await asyncio.gather(*(container.core.process(r, component="test") for r in refunds))
    assert [o.status for o in outcomes] == ["processed"] * len(refunds)
    assert peak == 1  # one transaction at a time on the user's wallet
    wallet = doc(project(container), f"users/{uid}/wallet/points")
    assert wallet is not None
    assert wallet["paidBalance"] == 0
    assert len(ledger(project(container), uid)) == 2 * len(order_ids)
