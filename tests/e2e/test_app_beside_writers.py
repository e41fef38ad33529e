"""Every writer of ours beside the app that spends the points, on the same wallets, at the same time.

The app's points code (loadtool/paynow_loadtest/app_double.py) spends and credits while the service
writes: the webhook in sync mode, the push worker, the pull worker (queue mode), and
PointsService's credit and reverse over Connect; orders of paid and promo products,
promo subscription cycles, refunds and their failures (re-credits), chargebacks and
won disputes. A seeded schedule decides what runs beside what (Firestore serialises the
transactions); each writer is followed by a spend of its user. After every write of ours
the wallet's `promoBalance` must equal its lots and no lot may be negative; at the end the
app spends everything spendable, and every wallet must hold exactly what the events, the
API calls and the app's own writes put in, less what the app spent and what expired
(loadtool/paynow_loadtest/invariants.py, in the app's model).
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud.firestore import AsyncClient

from paynow_loadtest.app_double import INSUFFICIENT_POINTS, AppDouble, AppError
from paynow_loadtest.events import EventFactory, PlannedEvent
from paynow_loadtest.expectation import Expectation, Expected
from paynow_loadtest.invariants import check
from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.state import FINAL_STATUSES, read_state
from paynow_loadtest.webhook import post_async
from paynow_service.adapters.emulators import EmulatorStack, free_port
from paynow_service.adapters.pubsub_infra import InfraOverrides
from paynow_service.config import Settings
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.ledger import recredit_entry_id, reversal_entry_id
from paynow_service.domain.ledger_reader import read_wallet
from paynow_service.sample_webhooks import build_event, flake_id
from tests.support.processes import serve
from tests.support.stack import (
    CATALOG,
    FAST,
    PRODUCT,
    PROMO_PRODUCT,
    apply_topology,
    stack_env,
    unique,
    write_catalog,
)

pytestmark = [pytest.mark.emulators, pytest.mark.e2e, pytest.mark.timeout(280)]

SECRET = "pn-test-secret-one"
WRITERS = (
    "order_paid", "order_promo", "subscription", "refund", "refund_failed", "chargeback", "chargeback_won",
    "api_credit_paid", "api_credit_promo", "api_reverse",
)  # fmt: skip


class Service:
    """`serve` with the webhook and PointsService (Connect), and the mode's worker, as real processes."""

    def __init__(self, emulators: EmulatorStack, tmp: Path, mode: str) -> None:
        self.env = stack_env(
            emulators.env(),
            write_catalog(tmp, CATALOG),
            WEBHOOK_MODE="sync" if mode == "sync" else "queue",
            HTTP_ROUTES="webhook,points",
            LOG_LEVEL="WARNING",
        )
        self.settings = Settings.from_env(self.env)
        push_port = free_port() if mode == "push" else 0
        push = f"http://127.0.0.1:{push_port}/api/tasks/paynow/process" if mode == "push" else None
        overrides = InfraOverrides(
            ack_deadline_s=FAST.ack_deadline_s, min_backoff_s=FAST.min_backoff_s,
            max_backoff_s=FAST.max_backoff_s, push_endpoint=push, pull=mode == "pull",
        )  # fmt: skip
        apply_topology(self.settings, overrides)
        self.processes: list[ServiceProcess] = [serve(self.env, tmp)]
        self.base = f"http://127.0.0.1:{self.processes[0].port}"
        if mode == "push":
            env = {**self.env, "HTTP_ROUTES": "push", "PORT": str(push_port)}
            self.processes.append(ServiceProcess("serve", env, tmp, port=push_port).wait_ready())
        elif mode == "pull":
            self.processes.append(ServiceProcess("worker", self.env, tmp))

    def logs(self) -> str:
        return "\n".join(p.logs()[-3000:] for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@dataclass
class OrderFlow:
    """An order and how far its one undo flow (refund, or chargeback) has gone."""

    planned: PlannedEvent
    undo: str  # "refund" or "chargeback"
    step: int = 0  # 0 credited, 1 reversed, 2 re-credited
    busy: bool = False  # a step is on its way: the next one waits for it, as PayNow's would
    first: dict[str, Any] = field(default_factory=dict)  # the refund or chargeback event


@dataclass
class World:
    service: Service
    http: httpx.AsyncClient
    db: AsyncClient
    app: AppDouble
    factory: EventFactory
    expectation: Expectation = field(default_factory=Expectation)
    orders: dict[str, list[OrderFlow]] = field(default_factory=dict)  # uid -> its orders
    api_credits: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # uid -> (entry, amount)
    writes: int = 0
    spends: int = 0
    problems: list[str] = field(default_factory=list)

    async def webhook(self, event: dict[str, Any], expected: Expected) -> None:
        self.expectation.add(expected)
        response = await post_async(self.http, f"{self.service.base}/api/paynow/webhook", event, SECRET)
        assert response.status_code == 200, response.text
        self.expectation.accept(expected.event_id)
        await self.wait_final(expected.event_id)
        await self.audit(expected.uid, f"after {expected.kind} {expected.event_id}")

    async def wait_final(self, event_id: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            snap = await self.db.document("webhookEvents", event_id).get()
            if (snap.to_dict() or {}).get("status") in FINAL_STATUSES:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"event {event_id} not processed within {timeout_s} s:\n{self.service.logs()}")

    async def points(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.service.base}/paynow.points.v1.PointsService/{method}"
        response = await self.http.post(url, json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def audit(self, uid: str, when: str) -> None:
        """After a write of ours: promoBalance is the sum of the lots, and no lot is negative."""
        self.writes += 1
        wallet = read_wallet((await self.db.document("users", uid, "wallet", "points").get()).to_dict())
        if wallet is None:
            return
        if wallet.promo_stored != wallet.lots_sum:
            self.problems.append(
                f"{uid} {when}: promoBalance {wallet.promo_stored} != lots {wallet.lots_sum}"
            )
        if any(lot.amount_remaining < 0 for lot in wallet.lots) or wallet.foreign_lots:
            self.problems.append(f"{uid} {when}: lots {wallet.lots} {wallet.foreign_lots}")

    async def spend(self, uid: str, cost: int) -> None:
        action_id = unique("spend")
        try:
            await self.app.spend(uid, cost, "shop.purchase", action_id)
            self.expectation.spend(action_id, uid, cost, spent=True)
            self.spends += 1
        except AppError as err:
            if err.code != INSUFFICIENT_POINTS:  # an inconsistent wallet: we broke it
                self.problems.append(f"{uid}: the app's spend of {cost} failed {err.code}: {err}")
            self.expectation.spend(action_id, uid, cost, spent=False)


# ---- the writers ----------------------------------------------------------------------------------


async def order(world: World, uid: str, rng: random.Random, product: str, undo: str = "") -> None:
    planned = world.factory.order(uid, product_id=product)
    await world.webhook(planned.event, planned.expected)
    world.orders.setdefault(uid, []).append(OrderFlow(planned, undo or rng.choice(("refund", "chargeback"))))


async def subscription(world: World, uid: str, rng: random.Random) -> None:
    planned = world.factory.subscription(uid)
    await world.webhook(planned.event, planned.expected)


async def undo(world: World, uid: str, rng: random.Random, kind: str, step: int) -> bool:
    """Advance the undo flow of one of the user's orders from `step`. When none is there, take the user
    one step towards it (an order to undo, or its first step) and answer False: try again later."""
    mine = [f for f in world.orders.get(uid, []) if f.undo == kind and not f.busy]
    flows = [f for f in mine if f.step == step]
    if not flows:
        if step == 1 and any(f.step == 0 for f in mine):
            await undo(world, uid, rng, kind, 0)
        elif not any(f.busy for f in world.orders.get(uid, []) if f.undo == kind):
            await order(world, uid, rng, rng.choice((PRODUCT, PROMO_PRODUCT)), undo=kind)
        return False
    flow = rng.choice(flows)
    flow.busy = True  # claimed before the await: no other op takes this flow meanwhile
    planned = flow.planned
    entry, points = planned.credit_entry, planned.credit_points
    if step == 0:
        event_type = "ON_REFUND" if kind == "refund" else "ON_CHARGEBACK"
        event = world.factory.refund(planned).event if kind == "refund" else _chargeback(world, planned)
        event["event_type"] = event_type
        flow.first = event
        entries = {reversal_entry_id(entry): -points}
    else:
        event = copy.deepcopy(flow.first)
        event["event_id"] = flake_id()
        if kind == "refund":
            event["body"]["status"] = "failed"
        else:
            event["event_type"] = "ON_CHARGEBACK_CLOSED"
            event["body"]["status"], event["body"]["chargeback_status"] = "closed", "won"
        entries = {recredit_entry_id(entry): points}
    await world.webhook(event, Expected(event["event_id"], f"{kind}:{step}", uid, "processed", entries))
    flow.step, flow.busy = step + 1, False
    return True


def _chargeback(world: World, planned: PlannedEvent) -> dict[str, Any]:
    return build_event(
        "ON_CHARGEBACK", uid=planned.expected.uid, product_id=planned.product_id, order_id=planned.order_id,
        quantity=planned.quantity, price=planned.price,
    )  # fmt: skip


async def api_credit(world: World, uid: str, rng: random.Random, kind: str, seconds: int = 0) -> None:
    amount = rng.randint(5, 300)
    body: dict[str, Any] = {"uid": uid, "amount": str(amount), "idempotencyKey": unique("k"), "kind": kind}
    if kind == "KIND_PROMO":  # some lots expire during the run: the app's spends drop them
        seconds = seconds or rng.choice((2, 4, 3600))
        body["expiresAt"] = (
            (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
        )
    entry = (await world.points("CreditPoints", body))["entry"]
    world.expectation.write(entry["entryId"], uid, amount)
    world.api_credits.setdefault(uid, []).append((entry["entryId"], amount))
    await world.audit(uid, f"after CreditPoints {kind}")


async def api_reverse(world: World, uid: str, rng: random.Random) -> bool:
    credits = world.api_credits.get(uid) or []
    if not credits:
        return False
    entry_id, amount = credits.pop(rng.randrange(len(credits)))
    body = {"uid": uid, "originalEntryId": entry_id, "idempotencyKey": unique("r")}
    reversal = (await world.points("ReversePoints", body))["entry"]
    assert int(reversal["amount"]) == -amount  # negative balances allowed: always the whole credit
    world.expectation.write(reversal["entryId"], uid, -amount)
    await world.audit(uid, "after ReversePoints")
    return True


async def app_credit(world: World, uid: str, rng: random.Random) -> None:
    amount, action_id = rng.randint(5, 100), unique("app-credit")
    expires = datetime.now(UTC) + timedelta(days=rng.choice((1, 30)))
    await world.app.credit(uid, "promo", amount, "admin", action_id, expires_at=expires)
    world.expectation.write(action_id, uid, amount)


async def write(world: World, writer: str, uid: str, rng: random.Random) -> bool:
    """One write of `writer` for `uid`; False when it had nothing to act on (no order to refund ...)."""
    match writer:
        case "order_paid":
            await order(world, uid, rng, PRODUCT)
        case "order_promo":
            await order(world, uid, rng, PROMO_PRODUCT)
        case "subscription":
            await subscription(world, uid, rng)
        case "refund" | "chargeback":
            return await undo(world, uid, rng, writer, 0)
        case "refund_failed":
            return await undo(world, uid, rng, "refund", 1)
        case "chargeback_won":
            return await undo(world, uid, rng, "chargeback", 1)
        case "api_credit_paid":
            await api_credit(world, uid, rng, "KIND_PAID")
        case "api_credit_promo":
            await api_credit(world, uid, rng, "KIND_PROMO")
        case "api_reverse":
            return await api_reverse(world, uid, rng)
    return True


def schedule(rng: random.Random, users: list[str], waves: int) -> list[list[tuple[str, str]]]:
    """Waves of (operation, uid) run side by side. Every writer appears, each followed by a spend of its
    user in the next wave; the rest is a random mix of writes, the app's spends and its own credits."""
    plan: list[list[tuple[str, str]]] = [[] for _ in range(waves)]
    for round_ in range(2):
        for writer in WRITERS:
            wave = rng.randrange(waves - 1) if round_ else WRITERS.index(writer) % (waves - 1)
            uid = rng.choice(users)
            plan[wave].append((writer, uid))
            plan[wave + 1].append(("spend", uid))
    for wave in plan:
        for _ in range(rng.randint(0, 3)):
            op = rng.choices(("spend", "app_credit", *WRITERS), weights=(6, 2, *([1] * len(WRITERS))))[0]
            wave.append((op, rng.choice(users)))
    return plan


@pytest.fixture(params=["sync", "push", "pull"])
async def world(
    request: pytest.FixtureRequest, emulators: EmulatorStack, tmp_path: Path
) -> AsyncIterator[World]:
    service = Service(emulators, tmp_path, request.param)
    db = AsyncClient(project=emulators.firestore.project)
    retries: list[BaseException] = []
    app = AppDouble(db, attempts=12, backoff_initial_s=0.2, backoff_max_s=2.0, on_retry=retries.append)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            yield World(
                service, http, db, app, EventFactory(Catalog.from_toml(CATALOG), rng=random.Random(3))
            )
    finally:
        service.stop()


async def test_every_writer_beside_the_apps_spends_loses_no_point(world: World) -> None:
    rng = random.Random(20261202)
    users = [unique("app-side") for _ in range(3)]
    operations: dict[str, Callable[[str], Awaitable[Any]]] = {
        "spend": lambda uid: world.spend(uid, rng.randint(1, 400)),
        "app_credit": lambda uid: app_credit(world, uid, rng),
        **{w: (lambda uid, w=w: write(world, w, uid, rng)) for w in WRITERS},
    }
    ran: dict[str, int] = {}
    waves = schedule(rng, users, waves=12)
    async with asyncio.timeout(200):
        n = 0
        while n < len(waves) and n < 24:  # a write with nothing to act on yet comes back in the next wave
            results = await asyncio.gather(*(operations[op](uid) for op, uid in waves[n]))
            again = [
                (op, uid) for (op, uid), result in zip(waves[n], results, strict=True) if result is False
            ]
            for op, _uid in waves[n]:
                ran[op] = ran.get(op, 0) + ((op, _uid) not in again)
            if again and n + 1 == len(waves):
                waves.append([])
            if again:
                waves[n + 1].extend(again)
            n += 1
        for uid in users:  # a lot that expires unspent: the app's next spend drops it
            await api_credit(world, uid, rng, "KIND_PROMO", seconds=1)
        await asyncio.sleep(4.5)  # every short-lived lot is past its expiry now
        spent_out = []
        for uid in users:  # the app spends everything spendable: nothing may be missing
            balance = await world.points("GetBalance", {"uid": uid})
            paid, promo = int(balance.get("paidBalance", 0)), int(balance.get("promoBalance", 0))
            if paid >= 0 and paid + promo > 0:
                action_id = unique("spend-all")
                await world.app.spend(uid, paid + promo, "shop.purchase", action_id)  # raises if short
                world.expectation.spend(action_id, uid, paid + promo, spent=True)
                spent_out.append(uid)
    assert not world.problems, "\n".join(world.problems)
    assert all(ran.get(w, 0) >= 1 for w in WRITERS), ran  # every writer wrote at least once
    assert world.spends >= 10
    report = check(
        world.expectation, read_state(world.service.settings.google_cloud_project, world.expectation), []
    )
    assert report.ok, report.summary() + "\n" + world.service.logs()
    print(f"\n{ran}\nwrites of ours audited: {world.writes}\n{report.summary()}")
    if spent_out:
        assert report.points_expired > 0, report.summary()
    for uid in spent_out:  # spent out: nothing left behind, and the app's spend dropped every empty lot
        wallet = read_wallet((await world.db.document("users", uid, "wallet", "points").get()).to_dict())
        assert wallet is not None
        assert (wallet.paid, wallet.promo_stored, wallet.lots) == (0, 0, ()), wallet
