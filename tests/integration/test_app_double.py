"""AppDouble (the app's points code) against the Firestore emulator, quirks included."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud.firestore import AsyncClient

from paynow_loadtest.app_double import AppDouble, AppError
from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.adapters.firestore_ledger import FirestoreLedger
from paynow_service.domain.ledger import EntryRequest
from tests.conftest import PROJECT
from tests.support.stack import unique

DAY = timedelta(days=1)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
async def db(emulators: EmulatorStack) -> AsyncClient:
    return AsyncClient(project=PROJECT)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(db: AsyncClient, clock: Clock) -> AppDouble:
    return AppDouble(db, clock=clock, backoff_initial_s=0.05)


async def doc(db: AsyncClient, *path: str) -> dict[str, Any] | None:
    snap = await db.document(*path).get()
    return snap.to_dict() if snap.exists else None


async def wallet(db: AsyncClient, uid: str) -> dict[str, Any]:
    found = await doc(db, "users", uid, "wallet", "points")
    assert found is not None
    return found


async def entries(db: AsyncClient, uid: str) -> dict[str, dict[str, Any]]:
    return {s.id: s.to_dict() or {} for s in await db.collection("users", uid, "ledger").get()}


def without_time(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "createdAt"}


async def test_credit_paid_and_promo_write_the_apps_shapes(
    db: AsyncClient, app: AppDouble, clock: Clock
) -> None:
    uid = unique("u")
    paid = await app.credit(uid, "paid", 100, "purchase", "c-paid")
    assert without_time(paid) == {
        "type": "credit", "channel": "paid", "amount": 100, "action": "credit.purchase", "actionId": "c-paid",
        "pre": {"paid": 0, "promo": 0}, "post": {"paid": 100, "promo": 0}, "createdBy": uid, "v": 1,
    }  # fmt: skip
    assert paid["createdAt"] == clock.now
    late, early = clock.now + 30 * DAY, clock.now + 5 * DAY
    promo = await app.credit(uid, "promo", 30, "bonus", "c-late", expires_at=late)
    await app.credit(uid, "promo", 20, "bonus", "c-early", expires_at=early)
    lot_id = promo["creditLot"]["lotId"]
    assert str(uuid.UUID(lot_id)) == lot_id
    assert promo["creditLot"] == {"lotId": lot_id, "amount": 30, "expiresAt": late}
    assert (promo["channel"], promo["action"]) == ("promo", "credit.bonus")
    assert (promo["pre"], promo["post"]) == ({"paid": 100, "promo": 0}, {"paid": 100, "promo": 30})
    stored = await wallet(db, uid)
    assert (stored["paidBalance"], stored["promoBalance"], stored["v"]) == (100, 50, 1)
    assert [(lot["amountRemaining"], lot["expiresAt"], lot["source"]) for lot in stored["promoLots"]] == [
        (20, early, "bonus"),
        (30, late, "bonus"),
    ]
    assert stored["promoLots"][1]["id"] == lot_id
    ledger = await entries(db, uid)
    assert ledger["c-late"] == promo
    assert "creditLot" not in ledger["c-paid"]
    # Idempotent on the action id: the stored entry comes back and nothing moves.
    assert await app.credit(uid, "paid", 100, "purchase", "c-paid") == ledger["c-paid"]
    assert (await wallet(db, uid))["paidBalance"] == 100
    assert len(await entries(db, uid)) == 3


async def test_promo_credit_without_expiry_is_refused(db: AsyncClient, app: AppDouble) -> None:
    uid = unique("u")
    with pytest.raises(AppError) as caught:
        await app.credit(uid, "promo", 10, "bonus", "c1")
    assert caught.value.code == "PROMO_REQUIRES_EXPIRY"
    assert await doc(db, "users", uid, "wallet", "points") is None
    assert await entries(db, uid) == {}


async def test_spend_takes_unexpired_lots_first_and_drops_expired_ones(
    db: AsyncClient, app: AppDouble, clock: Clock
) -> None:
    uid = unique("u")
    start = clock.now
    await app.credit(uid, "paid", 100, "purchase", "paid")
    lot = {}
    for name, amount, days in (("a", 10, 5), ("b", 20, 2), ("c", 15, 30), ("d", 7, 1)):
        credited = await app.credit(uid, "promo", amount, "bonus", name, expires_at=start + days * DAY)
        lot[name] = credited["creditLot"]["lotId"]
    clock.advance(3 * DAY)  # lots b and d (27 points) are now expired
    first = await app.spend(uid, 12, "unlock", "s1")
    assert without_time(first) == {
        "type": "debit", "channel": "promo", "amount": 12, "action": "unlock", "actionId": "s1",
        "pre": {"paid": 100, "promo": 52}, "post": {"paid": 100, "promo": 13},
        "consumedLots": [{"lotId": lot["a"], "amount": 10}, {"lotId": lot["c"], "amount": 2}],
        "createdBy": uid, "v": 1,
    }  # fmt: skip
    stored = await wallet(db, uid)
    assert [(x["id"], x["amountRemaining"]) for x in stored["promoLots"]] == [(lot["c"], 13)]
    assert (stored["paidBalance"], stored["promoBalance"]) == (100, 13)
    # The expired points vanished with no entry of their own: only the spend's promo drop shows them.
    consumed = sum(move["amount"] for move in first["consumedLots"])
    assert first["pre"]["promo"] - first["post"]["promo"] - consumed == 27
    assert set(await entries(db, uid)) == {"paid", "a", "b", "c", "d", "s1"}
    second = await app.spend(uid, 20, "unlock", "s2")
    assert (second["channel"], second["consumedLots"]) == ("paid", [{"lotId": lot["c"], "amount": 13}])
    assert (second["pre"], second["post"]) == ({"paid": 100, "promo": 13}, {"paid": 93, "promo": 0})
    stored = await wallet(db, uid)
    assert (stored["paidBalance"], stored["promoBalance"], stored["promoLots"]) == (93, 0, [])


async def test_lots_above_promo_balance_fail_the_spend(db: AsyncClient, app: AppDouble, clock: Clock) -> None:
    uid = unique("u")
    await app.credit(uid, "promo", 10, "bonus", "c1", expires_at=clock.now + 9 * DAY)
    await db.document("users", uid, "wallet", "points").update({"promoBalance": 4, "paidBalance": 50})
    before = await wallet(db, uid)
    with pytest.raises(AppError, match="Inconsistent promo balance") as caught:
        await app.spend(uid, 5, "unlock", "s1")
    assert caught.value.code == "INCONSISTENT_PROMO_BALANCE"
    assert await wallet(db, uid) == before
    assert set(await entries(db, uid)) == {"c1"}


async def test_promo_balance_without_a_lot_is_erased_by_the_next_spend(
    db: AsyncClient, app: AppDouble, clock: Clock
) -> None:
    uid = unique("u")
    await app.credit(uid, "promo", 10, "bonus", "c1", expires_at=clock.now + 9 * DAY)
    await db.document("users", uid, "wallet", "points").update({"promoBalance": 14})  # 4 points with no lot
    entry = await app.spend(uid, 3, "unlock", "s1")
    assert (entry["pre"], entry["post"]) == ({"paid": 0, "promo": 14}, {"paid": 0, "promo": 7})
    assert (await wallet(db, uid))["promoBalance"] == 7


async def test_insufficient_points_leave_the_wallet_untouched(
    db: AsyncClient, app: AppDouble, clock: Clock
) -> None:
    uid = unique("u")
    await app.credit(uid, "paid", 5, "purchase", "c1")
    await app.credit(uid, "promo", 3, "bonus", "c2", expires_at=clock.now + DAY)
    clock.advance(2 * DAY)  # 8 points stored, 5 spendable
    before = await wallet(db, uid)
    with pytest.raises(AppError) as caught:
        await app.spend(uid, 6, "unlock", "s1")
    assert caught.value.code == "INSUFFICIENT_POINTS"
    assert await wallet(db, uid) == before
    assert set(await entries(db, uid)) == {"c1", "c2"}
    # A missing wallet reads as zeros: refused, and nothing is written.
    fresh = unique("u")
    with pytest.raises(AppError) as caught:
        await app.spend(fresh, 1, "unlock", "s1")
    assert caught.value.code == "INSUFFICIENT_POINTS"
    assert await doc(db, "users", fresh, "wallet", "points") is None
    assert await entries(db, fresh) == {}


async def test_spend_is_idempotent_on_its_action_id(db: AsyncClient, app: AppDouble, clock: Clock) -> None:
    uid = unique("u")
    await app.credit(uid, "paid", 50, "purchase", "c1")
    first = await app.spend(uid, 20, "unlock", "s1")
    clock.advance(DAY)
    again = await app.spend(uid, 20, "unlock", "s1")
    other_cost = await app.spend(uid, 35, "unlock", "s1")  # the stored entry wins, whatever the cost
    assert again == first == other_cost
    assert (await wallet(db, uid))["paidBalance"] == 30
    assert set(await entries(db, uid)) == {"c1", "s1"}


async def test_preview_counts_expired_lots_and_get_wallet_writes(
    db: AsyncClient, app: AppDouble, clock: Clock
) -> None:
    uid = unique("u")
    empty = await app.preview_spend(uid, 5)
    assert empty == {
        "pre": {"paid": 0, "promo": 0}, "post": {"paid": -5, "promo": 0}, "fromPromo": 0, "fromPaid": 5,
        "ok": False,
    }  # fmt: skip
    user = await doc(db, "users", uid)
    assert user == {"uid": uid, "createdAt": clock.now, "updatedAt": clock.now, "status": "active"}
    assert await wallet(db, uid) == {
        "paidBalance": 0, "promoBalance": 0, "promoLots": [], "createdAt": clock.now, "updatedAt": clock.now,
        "v": 1,
    }  # fmt: skip
    await app.credit(uid, "paid", 5, "purchase", "c1")
    await app.credit(uid, "promo", 10, "bonus", "c2", expires_at=clock.now + DAY)
    clock.advance(2 * DAY)
    preview = await app.preview_spend(uid, 12)
    assert preview == {
        "pre": {"paid": 5, "promo": 10}, "post": {"paid": 3, "promo": 0}, "fromPromo": 10, "fromPaid": 2,
        "ok": True,
    }  # fmt: skip
    with pytest.raises(AppError) as caught:  # the spend itself skips the expired lot
        await app.spend(uid, 12, "unlock", "s1")
    assert caught.value.code == "INSUFFICIENT_POINTS"
    assert (await app.get_wallet(uid))["paidBalance"] == 5


async def test_get_ledger_is_newest_first_with_a_cursor(app: AppDouble, clock: Clock) -> None:
    uid = unique("u")
    for i in range(3):
        await app.credit(uid, "paid", i + 1, "purchase", f"c{i}")
        clock.advance(timedelta(seconds=1))
    await app.spend(uid, 4, "unlock", "s1")
    page = await app.get_ledger(uid, limit=3)
    assert [(e["id"], e["actionId"], e["amount"]) for e in page] == [
        ("s1", "s1", 4),
        ("c2", "c2", 3),
        ("c1", "c1", 2),
    ]
    assert [e["id"] for e in await app.get_ledger(uid, limit=3, cursor="c1")] == ["c0"]
    assert [e["id"] for e in await app.get_ledger(uid)] == ["s1", "c2", "c1", "c0"]


async def test_concurrent_spends_beside_the_service_keep_the_total_exact(db: AsyncClient) -> None:
    # The emulator locks pessimistically: these transactions abort each other, and only retries save them.
    retried: list[BaseException] = []
    app = AppDouble(db, attempts=10, on_retry=retried.append)
    uid = unique("u")
    await app.credit(uid, "paid", 100, "purchase", "c0")
    ours = FirestoreLedger(db, timeout_s=10)
    credits = [EntryRequest(f"{uid}:k{i}", uid, "credit", 5, "test") for i in range(4)]
    results = await asyncio.gather(
        *(app.spend(uid, 10, "unlock", f"s{i}") for i in range(8)),
        *(ours.apply([request]) for request in credits),
        return_exceptions=True,
    )
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert retried, "no contention: the test proves nothing"
    spends = results[:8]
    assert all(isinstance(s, dict) and s["pre"]["paid"] - s["post"]["paid"] == 10 for s in spends)
    assert (await wallet(db, uid))["paidBalance"] == 100 + 4 * 5 - 8 * 10
    ledger = await entries(db, uid)
    assert len(ledger) == 1 + 8 + 4
    assert sum(e["amount"] for e in ledger.values() if e.get("type") == "debit") == 80
