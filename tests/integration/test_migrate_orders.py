"""`paynow-service migrate orders` on the Firestore emulator, run as the real command.

Each test seeds its own project (the emulator keeps projects apart, so no other test's data is
scanned) with the app's history before cut-over: orders its sync webhook credited through the
wallet-ledger (one with two lines and a pretty id, one with a promo credit line), one its queue
worker credited, orders a human must look at (one under two users, one with a reversed entry, one
with the app's own refund), entries that credit no order (a spend, a promo credit, a subscription
top-up keyed by an order id, a reconciliation), the app's legacy top-level `ledger/{uid}/...`, a
refund that reached the service before migration and was parked, and an order this service
credited itself. Wallets are what the app left: the posted wallet-ledger amounts plus the chain of
the pre/post entries.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from paynow_loadtest.processes import CLI
from paynow_loadtest.wallet_audit import audit_wallet
from paynow_service import bootstrap
from paynow_service.adapters.emulators import EmulatorStack, free_port
from paynow_service.config import Settings
from paynow_service.domain.paynow import parse_webhook
from paynow_service.sample_webhooks import build_event, flake_id
from paynow_service.service.processing import Outcome
from tests.support.processes import run_cli
from tests.support.stack import PRODUCT, apply_topology, doc, ledger, stack_env, unique, write_catalog

pytestmark = pytest.mark.emulators

# PayNow order ids (flake ids) and the app's auto ids of its wallet-ledger entries.
O1, O2, O4, O5, O6, O7, O8, O9, O10, O11 = (
    f"4110000000000000{n:02d}" for n in (1, 2, 4, 5, 6, 7, 8, 9, 10, 11)
)
QUEUE_EVENT = "412000000000000005"  # the queue worker's entry id: the PayNow event id of O5
CUSTOMER_ALICE, CUSTOMER_BOB = "422000000000000001", "422000000000000002"
WL_A1, WL_A2 = "8fJ2kLq0WmZt4RbN1xYa", "9gK3lMr1XnAu5ScO2yZb"
WL_B1, WL_B2 = "Ab3Cd4Ef5Gh6Ij7Kl8Mn", "Bc4De5Fg6Hi7Jk8Lm9No"
WL_C1, WL_C2, WL_C3 = "Cd5Ef6Gh7Ij8Kl9Mn0Op", "De6Fg7Hi8Jk9Lm0No1Pq", "Ef7Gh8Ij9Kl0Mn1Op2Qr"
WL_D1, WL_E1, WL_F1, WL_G1 = (
    "Fg8Hi9Jk0Lm1No2Pq3Rs",
    "Gh9Ij0Kl1Mn2Op3Qr4St",
    "Hi0Jk1Lm2No3Pq4Rs5Tu",
    "Ij1Kl2Mn3Op4Qr5St6Uv",
)
ALICE, BOB, CAROL, DAVE, ERIN, FRANK, GINA = (
    f"u-{n}" for n in ("alice", "bob", "carol", "dave", "erin", "frank", "gina")
)
ENTRIES = 16  # under users/{uid}/ledger
NOT_ORDER_ENTRIES = 4  # alice's spend, carol's promo credit and subscription top-up, erin's reconciliation


def at(day: str, seconds: int = 0) -> datetime:
    return datetime.fromisoformat(f"{day}T12:00:00+00:00") + timedelta(seconds=seconds)


def purchase(
    order_id: str,
    amount: int,
    when: datetime,
    *,
    balance_after: int,
    kind: str = "purchase",
    status: str = "posted",
    pretty_id: str | None = None,
    customer: str = "",
    product: str = "app-product-gems",
) -> dict[str, Any]:
    """A credit of the app's wallet-ledger service, as its sync webhook wrote it for one order line."""
    return {
        "amount": amount,
        "balanceAfter": balance_after,
        "currency": "POINTS",
        "kind": kind,
        "status": status,
        "source": {
            "eventId": order_id,
            "orderId": pretty_id or order_id,
            "paynowCustomerId": customer,
            "productId": product,
            "productVersion": 2,
            "reversalOf": None,
            "reason": None,
        },
        "createdAt": when,
        "createdBy": "system:webhook",
    }


def points_entry(
    entry_id: str, kind: str, channel: str, amount: int, pre: tuple[int, int], when: datetime, **extra: Any
) -> dict[str, Any]:
    """An entry of the app's points service (a spend or a credit with its pre/post balances)."""
    sign = 1 if kind == "credit" else -1
    paid, promo = pre
    post = (paid + sign * amount, promo) if channel == "paid" else (paid, promo + sign * amount)
    return {
        "type": kind,
        "channel": channel,
        "amount": amount,
        "action": extra.pop("action", "shop.purchase"),
        "actionId": entry_id,
        "pre": {"paid": paid, "promo": promo},
        "post": {"paid": post[0], "promo": post[1]},
        "createdAt": when,
        "createdBy": extra.pop("created_by", "system"),
        "v": 1,
        **extra,
    }


def wallet(paid: int, lots: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    lots = lots or []
    created = at("2025-01-01")
    return {
        "paidBalance": paid,
        "promoBalance": sum(lot["amountRemaining"] for lot in lots),
        "promoLots": sorted(lots, key=lambda lot: lot["expiresAt"]),
        "createdAt": created,
        "updatedAt": created,
        "v": 1,
    }


def app_history() -> dict[str, dict[str, Any]]:
    """Document path -> data: the app's Firestore at cut-over (the parked refund is added by the service)."""
    lot_expiry = at("2027-01-01")
    promo_lot = {"id": "3f1c9a2e-5b7d-4c1a-9e8f-0a1b2c3d4e5f", "amountRemaining": 40, "expiresAt": lot_expiry}
    topup_lot = {
        "id": "7d2e4f6a-1b3c-4d5e-8f9a-0b1c2d3e4f5a",
        "amountRemaining": 1000,
        "expiresAt": lot_expiry,
    }
    topup_id = f"{O7}_first_cycle_app-plan-gold"
    return {
        # alice: an order of its queue worker (2025), a spend, an order of two lines with a pretty id.
        f"users/{ALICE}/ledger/{QUEUE_EVENT}": {
            "action": "credit",
            "kind": "paid",
            "amount": 250,
            "source": "paynow",
            "pre": {"paid": 0, "promo": 0},
            "post": {"paid": 250, "promo": 0},
            "metadata": {"orderId": O5, "productId": "app-product-pack", "quantity": 1},
            "createdAt": at("2025-06-01"),
        },
        f"users/{ALICE}/ledger/spend-7c1d": points_entry(
            "spend-7c1d", "debit", "paid", 100, (250, 0), at("2025-07-01"), consumedLots=[], created_by=ALICE
        ),
        f"users/{ALICE}/ledger/{WL_A1}": purchase(
            O1,
            300,
            at("2026-02-10"),
            balance_after=450,
            pretty_id="ABC-1001",
            customer=CUSTOMER_ALICE,
            product="app-product-gems-300",
        ),
        f"users/{ALICE}/ledger/{WL_A2}": purchase(
            O1,
            200,
            at("2026-02-10", 1),
            balance_after=650,
            pretty_id="ABC-1001",
            customer=CUSTOMER_ALICE,
            product="app-product-gems-200",
        ),
        f"users/{ALICE}/wallet/points": wallet(650),
        # The app's legacy top-level ledger: never migrated, even where it looks like an order credit.
        f"ledger/{ALICE}": {"balance": 650, "updatedAt": at("2025-01-01")},
        f"ledger/{ALICE}/ledger/legacy-1": purchase(O10, 999, at("2026-02-11"), balance_after=999),
        # bob: one order, its purchase line and its promo credit line.
        f"users/{BOB}/ledger/{WL_B1}": purchase(
            O2, 500, at("2026-02-12"), balance_after=500, customer=CUSTOMER_BOB
        ),
        f"users/{BOB}/ledger/{WL_B2}": purchase(
            O2, 50, at("2026-02-12", 1), balance_after=550, kind="promo_credit", customer=CUSTOMER_BOB
        ),
        f"users/{BOB}/wallet/points": wallet(550),
        # carol: a promo credit and a subscription top-up of its points service (not order credits),
        # an order the app refunded itself, and one whose entry it reversed in place.
        f"users/{CAROL}/ledger/app-credit-1": points_entry(
            "app-credit-1",
            "credit",
            "promo",
            40,
            (0, 0),
            at("2025-12-01"),
            action="credit.admin",
            creditLot={"lotId": promo_lot["id"], "amount": 40, "expiresAt": lot_expiry},
        ),
        f"users/{CAROL}/ledger/{topup_id}": points_entry(
            topup_id,
            "credit",
            "promo",
            1000,
            (0, 40),
            at("2026-01-05"),
            action="credit.subscription",
            creditLot={"lotId": topup_lot["id"], "amount": 1000, "expiresAt": lot_expiry},
        ),
        f"users/{CAROL}/ledger/{WL_C1}": purchase(O4, 400, at("2026-01-20"), balance_after=400),
        f"users/{CAROL}/ledger/{WL_C2}": {
            **purchase(O4, -400, at("2026-01-25"), balance_after=0, kind="refund"),
            "source": {"eventId": O4, "reversalOf": WL_C1, "reason": "refund"},
        },
        f"users/{CAROL}/ledger/{WL_C3}": purchase(
            O6, 300, at("2026-01-22"), balance_after=300, status="reversed"
        ),
        f"users/{CAROL}/wallet/points": wallet(0, [promo_lot, topup_lot]),
        # dave and erin: the same order credited to both (erin's comes second in the scan).
        f"users/{DAVE}/ledger/{WL_D1}": purchase(O8, 200, at("2026-02-01"), balance_after=200),
        f"users/{DAVE}/wallet/points": wallet(200),
        f"users/{ERIN}/ledger/{WL_E1}": purchase(O8, 200, at("2026-02-02"), balance_after=200),
        f"users/{ERIN}/ledger/reconcile-1": {
            "amount": -20,
            "kind": "reconcile_adjustment",
            "source": {"reason": "drift", "reportId": "r-2026-02-03"},
            "createdBy": "system:reconciliation",
            "balanceAfter": 180,
            "currency": "POINTS",
            "createdAt": at("2026-02-03"),
        },
        f"users/{ERIN}/wallet/points": wallet(180),
        # frank: an order whose refund reached the service first (parked by the seed).
        f"users/{FRANK}/ledger/{WL_F1}": purchase(O9, 500, at("2026-02-15"), balance_after=500),
        f"users/{FRANK}/wallet/points": wallet(500),
        # gina: an order this service credited itself (its paynowOrders names our own entry).
        f"users/{GINA}/ledger/{WL_G1}": purchase(O11, 300, at("2026-02-16"), balance_after=300),
        f"users/{GINA}/wallet/points": wallet(300),
        f"paynowOrders/{O11}": {
            "uid": GINA,
            "customerId": "",
            "entryIds": [f"paynow:order:{O11}:line:1"],
            "credits": [{"entryId": f"paynow:order:{O11}:line:1", "points": 300, "productId": PRODUCT}],
            "points": 300,
            "status": "credited",
        },
    }


@dataclass
class Stack:
    env: dict[str, str]
    container: bootstrap.Container

    @property
    def project(self) -> str:
        return self.env["GOOGLE_CLOUD_PROJECT"]

    def migrate(self, *args: str) -> tuple[int, list[str], str]:
        result = run_cli("migrate", "orders", *args, env=self.env)
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, result.stdout.splitlines(), result.stderr

    def orders(self) -> dict[str, dict[str, Any]]:
        client = firestore.Client(project=self.project)
        try:
            return {s.id: s.to_dict() or {} for s in client.collection("paynowOrders").stream()}
        finally:
            client.close()  # type: ignore[no-untyped-call]

    def wallet(self, uid: str) -> tuple[int, int]:
        data = doc(self.project, f"users/{uid}/wallet/points") or {}
        return data.get("paidBalance", 0), data.get("promoBalance", 0)

    async def process(
        self, event_type: str, order_id: str, *, event_id: str, body_id: str = "", **fields: Any
    ) -> Outcome:
        """One PayNow event of the order (`body_id`: the refund's or dispute's id) through the service's
        processing core, as the worker runs it."""
        payload = build_event(event_type, uid="", product_id=PRODUCT, order_id=order_id, **fields)
        payload["event_id"] = event_id
        payload["body"]["id"] = body_id or flake_id()
        now = int(time.time() * 1000)
        event = parse_webhook(json.dumps(payload).encode(), received_at_ms=now, sent_at_ms=now)
        return await self.container.core.process(event, component="test")


@pytest.fixture
async def stack(emulators: EmulatorStack, tmp_path: Path) -> AsyncIterator[Stack]:
    env = stack_env(emulators.env(), write_catalog(tmp_path), GOOGLE_CLOUD_PROJECT=unique("migrate"))
    settings = Settings.from_env(env)
    apply_topology(settings)
    container = bootstrap.build_container(settings)
    seeded = Stack(env, container)
    client = firestore.Client(project=seeded.project)
    try:
        batch = client.batch()
        for path, data in app_history().items():
            batch.set(client.document(path), data)
        batch.commit()
    finally:
        client.close()  # type: ignore[no-untyped-call]
    # The seed is what the app leaves: every wallet adds up in the app's model. The audit does not model
    # the app's reconciliation (it rewrites paid balances: erin's adjustment), and names carol's reversed
    # wallet-ledger entry as one without balances while rightly not counting it.
    for uid in (ALICE, BOB, CAROL, DAVE, FRANK, GINA):
        wallet_doc = doc(seeded.project, f"users/{uid}/wallet/points")
        problems = audit_wallet(uid, wallet_doc, ledger(seeded.project, uid)).problems
        assert [p for p in problems if not p.startswith(f"{CAROL}/{WL_C3}: ")] == [], uid
    # A refund of frank's order reached the service before the migration: parked on the order.
    parked = await seeded.process("ON_REFUND", O9, status="approved", event_id=PARKED_REFUND_EVENT)
    assert parked.decision is not None
    assert parked.decision.result == "parked"
    yield seeded
    await container.aclose()


PARKED_REFUND_EVENT = "413000000000000009"
LINES = [
    f"would write {O1} uid={ALICE} entries=2 points=500",
    f"would write {O5} uid={ALICE} entries=1 points=250",
    f"would write {O2} uid={BOB} entries=2 points=550",
    f"ambiguous {O4}: uid={CAROL}: the app recorded a refund of it (entry {WL_C2})",
    f"ambiguous {O6}: uid={CAROL}: entry {WL_C3} is reversed, not posted",
    f"would write {O8} uid={DAVE} entries=1 points=200",
    f"ambiguous {O8}: uid={ERIN}: the order is also credited under uid={DAVE}",
    f"would write {O9} uid={FRANK} entries=1 points=500 parked=1",
]
ENTRIES_SUMMARY = f"entries scanned {ENTRIES} (7 users), not order entries {NOT_ORDER_ENTRIES}"


async def test_a_dry_run_lists_the_orders_and_writes_nothing(stack: Stack) -> None:
    before = stack.orders()
    code, lines, _ = stack.migrate("--page-size", "3")  # pages end inside users and between them
    assert code == 0
    assert lines == [
        *LINES,
        "orders found 9, would write 5, skipped 1, ambiguous 3; 1 order has parked refunds or disputes: "
        f"`paynow-service sweep` publishes them once the order is credited; {ENTRIES_SUMMARY}",
    ]
    assert stack.orders() == before


async def test_apply_writes_the_orders_once(stack: Stack) -> None:
    code, lines, _ = stack.migrate("--apply", "--page-size", "2")
    assert code == 0
    assert lines == [
        *(line.replace("would write", "wrote") for line in LINES),
        "orders found 9, written 5, skipped 1, ambiguous 3; 1 order has parked refunds or disputes: "
        f"`paynow-service sweep` publishes them now that the order is credited; {ENTRIES_SUMMARY}",
    ]
    orders = stack.orders()
    assert set(orders) == {O1, O2, O5, O8, O9, O11}  # not the ambiguous ones, nor the legacy ledger's O10
    fresh = {
        "generation": 0,
        "reversals": {},
        "reversed": [],
        "reversedBy": "",
        "status": "credited",
        "refunds": {},
        "refundAmounts": {},
        "chargebacks": {},
        "migratedFrom": "app",
    }
    stamps = ("migratedAt", "updatedAt")
    for order in (O1, O2, O5, O8, O9):
        assert all(isinstance(orders[order].pop(stamp), datetime) for stamp in stamps), order
    assert orders[O1] == {
        **fresh,
        "uid": ALICE,
        "customerId": CUSTOMER_ALICE,
        "entryIds": [WL_A1, WL_A2],
        "credits": [
            {"entryId": WL_A1, "points": 300, "productId": "app-product-gems-300"},
            {"entryId": WL_A2, "points": 200, "productId": "app-product-gems-200"},
        ],
        "points": 500,
        "prettyId": "ABC-1001",
    }
    assert orders[O5] == {
        **fresh,
        "uid": ALICE,
        "customerId": "",
        "entryIds": [QUEUE_EVENT],
        "credits": [{"entryId": QUEUE_EVENT, "points": 250, "productId": "app-product-pack"}],
        "points": 250,
    }
    assert orders[O2] == {
        **fresh,
        "uid": BOB,
        "customerId": CUSTOMER_BOB,
        "entryIds": [WL_B1, WL_B2],
        "credits": [
            {"entryId": WL_B1, "points": 500, "productId": "app-product-gems"},
            {"entryId": WL_B2, "points": 50, "productId": "app-product-gems"},
        ],
        "points": 550,
    }
    assert (orders[O8]["uid"], orders[O8]["entryIds"], orders[O8]["points"]) == (DAVE, [WL_D1], 200)
    parked = orders[O9].pop("parked")
    assert list(parked) == [PARKED_REFUND_EVENT]  # merged: the parked refund stays for sweep
    assert isinstance(orders[O9].pop("parkedAt"), datetime)
    assert orders[O9] == {
        **fresh,
        "uid": FRANK,
        "customerId": "",
        "entryIds": [WL_F1],
        "credits": [{"entryId": WL_F1, "points": 500, "productId": "app-product-gems"}],
        "points": 500,
    }
    assert "migratedFrom" not in orders[O11]  # this service's own order is left as it was

    written = stack.orders()
    code, lines, _ = stack.migrate("--apply")
    assert code == 0
    assert lines == [
        f"ambiguous {O4}: uid={CAROL}: the app recorded a refund of it (entry {WL_C2})",
        f"ambiguous {O6}: uid={CAROL}: entry {WL_C3} is reversed, not posted",
        f"ambiguous {O8}: uid={ERIN}: the order is also credited under uid={DAVE}",
        f"orders found 9, written 0, skipped 6, ambiguous 3; {ENTRIES_SUMMARY}",
    ]
    assert stack.orders() == written


async def test_two_runs_at_once_write_each_order_once(stack: Stack) -> None:
    async def apply() -> tuple[int | None, str]:
        run = await asyncio.create_subprocess_exec(
            *CLI, "migrate", "orders", "--apply", "--page-size", "1",
            env={**os.environ, **stack.env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(run.communicate(), 60)
        assert b"Traceback" not in err, err
        return run.returncode, out.decode()

    outputs = await asyncio.gather(apply(), apply())
    assert [code for code, _ in outputs] == [0, 0], outputs
    wrote = sorted(line for _, out in outputs for line in out.splitlines() if line.startswith("wrote "))
    assert wrote == sorted(line.replace("would write", "wrote") for line in LINES if "would write" in line)
    counts = [re.search(r"written (\d+), skipped (\d+)", out.splitlines()[-1]) for _, out in outputs]
    written = [int(found.group(1)) for found in counts if found]
    skipped = [int(found.group(2)) for found in counts if found]
    assert sum(written) == 5  # each order by one run: the other found it written and skipped it
    assert [w + s for w, s in zip(written, skipped, strict=True)] == [6, 6]


async def test_since_picks_the_orders_credited_since_then(stack: Stack) -> None:
    code, lines, _ = stack.migrate("--since", "2026-02-01")
    assert code == 0
    assert lines == [
        f"would write {O1} uid={ALICE} entries=2 points=500",
        f"would write {O2} uid={BOB} entries=2 points=550",
        f"would write {O8} uid={DAVE} entries=1 points=200",
        f"ambiguous {O8}: uid={ERIN}: the order is also credited under uid={DAVE}",
        f"would write {O9} uid={FRANK} entries=1 points=500 parked=1",
        "orders found 6, would write 4, skipped 1, ambiguous 1; 1 order has parked refunds or disputes: "
        "`paynow-service sweep` publishes them once the order is credited; "
        f"orders before 2026-02-01T00:00:00+00:00 3; {ENTRIES_SUMMARY}",
    ]
    code, lines, _ = stack.migrate("--since", "2026-02-12T12:00:00.500+00:00")  # after bob's first line
    assert lines[:2] == [
        f"would write {O2} uid={BOB} entries=2 points=550",
        f"would write {O9} uid={FRANK} entries=1 points=500 parked=1",
    ]
    assert lines[2].startswith("orders found 3, would write 2, skipped 1, ambiguous 0")


async def test_refunds_and_chargebacks_reverse_migrated_orders_once(stack: Stack) -> None:
    code, _, _ = stack.migrate("--apply")
    assert code == 0
    assert stack.wallet(ALICE) == (650, 0)

    refund_id, refund_event = flake_id(), flake_id()
    refund = await stack.process("ON_REFUND", O1, status="approved", body_id=refund_id, event_id=refund_event)
    assert (refund.status, refund.points) == ("processed", -500)
    assert stack.wallet(ALICE) == (150, 0)
    entries = ledger(stack.project, ALICE)
    assert {i: entries[i]["amount"] for i in entries if i.startswith("rev:")} == {
        f"rev:{WL_A1}": -300,
        f"rev:{WL_A2}": -200,
    }
    assert entries[f"rev:{WL_A1}"]["metadata"]["reversalOf"] == WL_A1
    order = doc(stack.project, f"paynowOrders/{O1}") or {}
    assert (order["status"], order["reversedBy"]) == ("reversed", f"refund:{refund_id}")

    # The same delivery again, the same refund in a new event (approved, then completed), and another
    # refund of the order: nothing more is reversed.
    redelivered = await stack.process(
        "ON_REFUND", O1, status="approved", body_id=refund_id, event_id=refund_event
    )
    assert redelivered.status == "duplicate"
    later = [
        await stack.process("ON_REFUND", O1, status=status, body_id=body_id, event_id=flake_id())
        for status, body_id in (("approved", refund_id), ("completed", refund_id), ("approved", flake_id()))
    ]
    assert [(o.status, o.points) for o in later] == [("processed", 0)] * 3
    assert stack.wallet(ALICE) == (150, 0)
    assert sorted(i for i in ledger(stack.project, ALICE) if i.startswith("rev")) == sorted(
        [f"rev:{WL_A1}", f"rev:{WL_A2}"]
    )

    # The queue worker's order, by a chargeback: its entry (id = the PayNow event id) is reversed.
    chargeback = await stack.process("ON_CHARGEBACK", O5, body_id=flake_id(), event_id=flake_id())
    assert (chargeback.status, chargeback.points) == ("processed", -250)
    assert stack.wallet(ALICE) == (-100, 0)  # below zero: ALLOW_NEGATIVE_BALANCE
    assert ledger(stack.project, ALICE)[f"rev:{QUEUE_EVENT}"]["amount"] == -250

    # bob's order with a promo credit line: both lines come back (his wallet has no lots: from paid).
    bob = await stack.process("ON_REFUND", O2, status="completed", body_id=flake_id(), event_id=flake_id())
    assert bob.points == -550
    assert stack.wallet(BOB) == (0, 0)
    bob_entries = ledger(stack.project, BOB)
    assert (bob_entries[f"rev:{WL_B1}"]["amount"], bob_entries[f"rev:{WL_B2}"]["amount"]) == (-500, -50)

    # A refund of an ambiguous order is still parked: nothing was written for it.
    parked = await stack.process("ON_REFUND", O4, status="approved", body_id=flake_id(), event_id=flake_id())
    assert parked.decision is not None
    assert parked.decision.result == "parked"
    assert stack.wallet(CAROL) == (0, 1040)


def test_a_bad_since_is_a_usage_error() -> None:
    result = run_cli("migrate", "orders", "--since", "31/01/2026", env={})
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "--since" in lines[0]
    assert "YYYY-MM-DD or ISO 8601 with an offset" in lines[0]
    assert result.stdout == ""


def test_firestore_down_is_one_line_and_exit_1() -> None:
    env = {"FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{free_port()}", "FIRESTORE_TIMEOUT_S": "1"}
    env["GOOGLE_CLOUD_PROJECT"] = unique("down")
    result = run_cli("migrate", "orders", env=env, timeout=30)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("paynow-service migrate orders: Firestore failed: ")
    assert result.stdout == ""
