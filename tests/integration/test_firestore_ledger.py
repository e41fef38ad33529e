"""FirestoreLedger against the Firestore emulator: exactly-once under concurrency, replays, reversals."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud.firestore import AsyncClient, AsyncTransaction

from paynow_service.adapters.emulators import EmulatorStack
from paynow_service.adapters.firestore_ledger import FirestoreLedger
from paynow_service.adapters.firestore_transactions import FirestoreTransactions
from paynow_service.domain.errors import (
    ContentionError,
    EntryNotFoundError,
    InvalidRequestError,
    LedgerConflictError,
    StorageUnavailableError,
)
from paynow_service.domain.ledger import EntryRequest, LedgerResult, Points
from tests.conftest import PROJECT
from tests.support.stack import unique


@pytest.fixture
async def db(emulators: EmulatorStack) -> AsyncClient:
    return AsyncClient(project=PROJECT)


@pytest.fixture
def ledger(db: AsyncClient) -> FirestoreLedger:
    return FirestoreLedger(db, timeout_s=10)


# Entry ids are global (ledgerKeys): each test's ids carry its uid so tests never collide.
def credit(key: str, uid: str, amount: int = 10, kind: Any = "paid") -> EntryRequest:
    expires_at = datetime.now(UTC) + timedelta(days=365) if kind == "promo" else None
    return EntryRequest(
        entry_id=f"{uid}:{key}",
        uid=uid,
        action="credit",
        amount=amount,
        source="test",
        kind=kind,
        expires_at=expires_at,
    )


def reverse(key: str, uid: str, amount: int | None = None) -> EntryRequest:
    return EntryRequest(f"rev:{uid}:{key}", uid, "reversal", amount, "test", reversal_of=f"{uid}:{key}")


def recredit(key: str, uid: str) -> EntryRequest:
    return EntryRequest(f"recredit:{uid}:{key}", uid, "credit", None, "test", reversal_of=f"{uid}:{key}")


async def doc(db: AsyncClient, *path: str) -> dict[str, Any] | None:
    snap = await db.document(*path).get()
    return snap.to_dict() if snap.exists else None


async def count_entries(db: AsyncClient, uid: str) -> int:
    return len(await db.collection("users", uid, "ledger").get())


async def test_fifty_concurrent_credits_to_one_wallet(db: AsyncClient, ledger: FirestoreLedger) -> None:
    uid = unique("u")
    results = await asyncio.gather(*(ledger.apply([credit(f"k{i}", uid, amount=i + 1)]) for i in range(50)))
    assert not any(r.outcomes[0].replayed for r in results)
    expected = sum(range(1, 51))
    assert (await ledger.get_balance(uid)).paid == expected
    assert await count_entries(db, uid) == 50
    # Serialised per wallet: every entry's pre is the post of another, and the chain ends at the total.
    posts = sorted(r.outcomes[0].entry.post.paid for r in results)  # type: ignore[union-attr]
    assert posts[-1] == expected
    assert len(set(posts)) == 50


async def test_fifty_concurrent_credits_with_one_key(db: AsyncClient, ledger: FirestoreLedger) -> None:
    uid = unique("u")
    results = await asyncio.gather(*(ledger.apply([credit("same", uid, amount=7)]) for _ in range(50)))
    assert sum(not r.outcomes[0].replayed for r in results) == 1
    entries = [r.outcomes[0].entry for r in results]
    assert all(e == entries[0] for e in entries)
    assert (await ledger.get_balance(uid)).paid == 7
    assert await count_entries(db, uid) == 1


async def test_two_processes_contending_still_apply_exactly_once(db: AsyncClient) -> None:
    # Two ledgers stand for two processes: no shared lock, so Firestore's own locking and our retries decide.
    uid = unique("u")
    first, second = FirestoreLedger(db), FirestoreLedger(db)
    jobs = [(first if i % 2 else second).apply([credit(f"k{i}", uid, amount=1)]) for i in range(6)]
    await asyncio.gather(*jobs)
    assert (await first.get_balance(uid)).paid == 6
    assert await count_entries(db, uid) == 6


async def test_documents_match_the_data_model(db: AsyncClient, ledger: FirestoreLedger) -> None:
    uid = unique("u")
    entry_id = f"paynow:order:{uid}:line:2"
    request = EntryRequest(entry_id, uid, "credit", 500, "paynow", metadata={"orderId": "1"})
    await ledger.apply([request])
    wallet = await doc(db, "users", uid, "wallet", "points")
    assert wallet is not None
    assert wallet["promoLots"] == []
    assert wallet["v"] == 1
    assert (wallet["paidBalance"], wallet["promoBalance"]) == (500, 0)
    assert {"createdAt", "updatedAt"} <= wallet.keys()
    user = await doc(db, "users", uid)
    assert user is not None
    assert (user["uid"], user["status"]) == (uid, "active")
    entry = await doc(db, "users", uid, "ledger", entry_id)
    assert entry is not None
    fields = ("type", "channel", "action", "actionId", "amount", "source", "pre", "post", "after", "delta")
    assert {k: entry[k] for k in (*fields, "createdBy", "v")} == {
        "type": "credit", "channel": "paid", "action": "credit", "actionId": entry_id, "amount": 500,
        "source": "paynow", "pre": {"paid": 0, "promo": 0}, "post": {"paid": 500, "promo": 0},
        "after": {"paid": 500, "promo": 0}, "delta": {"paid": 500, "promo": 0},
        "createdBy": "paynow-service", "v": 1,
    }  # fmt: skip
    assert entry["metadata"] == {"orderId": "1"}
    assert "creditLot" not in entry
    key = await doc(db, "ledgerKeys", entry_id)
    assert key is not None
    assert (key["uid"], key["amount"]) == (uid, 500)
    assert len(key["requestHash"]) == 64


async def test_existing_wallet_keeps_its_promo_lots(db: AsyncClient, ledger: FirestoreLedger) -> None:
    uid = unique("u")
    expiry = datetime.now(UTC) + timedelta(days=30)
    app_lot = {"id": "3f1c-uuid", "amountRemaining": 5, "expiresAt": expiry, "source": "admin"}
    unreadable = {"amount": 4, "expiresAt": "2030-01-01"}  # not the app's shape: kept as it is
    await db.document("users", uid, "wallet", "points").set(
        {"paidBalance": 3, "promoBalance": 5, "promoLots": [app_lot, unreadable], "v": 1}
    )
    result = await ledger.apply([credit("c", uid, amount=2)])
    assert result.outcomes[0].entry.pre == Points(3, 5)
    wallet = await doc(db, "users", uid, "wallet", "points")
    assert wallet is not None
    assert (wallet["paidBalance"], wallet["promoBalance"], wallet["promoLots"]) == (
        5,
        5,
        [app_lot, unreadable],
    )


async def test_a_promo_credit_writes_a_lot_the_app_can_spend(
    db: AsyncClient, ledger: FirestoreLedger
) -> None:
    uid = unique("u")
    expiry = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    request = EntryRequest(f"{uid}:p", uid, "credit", 250, "promo-week", kind="promo", expires_at=expiry)
    await ledger.apply([request])
    wallet = await doc(db, "users", uid, "wallet", "points")
    assert wallet is not None
    assert wallet["promoBalance"] == 250
    assert wallet["promoLots"] == [
        {"id": f"{uid}:p", "amountRemaining": 250, "expiresAt": expiry, "source": "promo-week"}
    ]
    entry = await doc(db, "users", uid, "ledger", f"{uid}:p")
    assert entry is not None
    assert (entry["channel"], entry["delta"]) == ("promo", {"paid": 0, "promo": 250})
    assert entry["creditLot"] == {"lotId": f"{uid}:p", "amount": 250, "expiresAt": expiry}
    balance = await ledger.get_balance(uid)
    assert (balance.promo, balance.promo_stored, [lot.lot_id for lot in balance.lots]) == (
        250,
        250,
        [f"{uid}:p"],
    )


async def test_conflicting_replay_is_rejected(db: AsyncClient, ledger: FirestoreLedger) -> None:
    uid, other = unique("u"), unique("u")
    await ledger.apply([credit("k", uid, amount=10)])
    assert (await ledger.apply([credit("k", uid, amount=10)])).outcomes[0].replayed
    with pytest.raises(LedgerConflictError):
        await ledger.apply([credit("k", uid, amount=11)])
    with pytest.raises(LedgerConflictError):
        await ledger.apply([EntryRequest(f"{uid}:k", other, "credit", 10, "test")])
    assert (await ledger.get_balance(uid)).paid == 10
    assert await doc(db, "users", other, "wallet", "points") is None


async def test_reversal_is_applied_once(ledger: FirestoreLedger) -> None:
    uid = unique("u")
    await ledger.apply([credit("c", uid, amount=100)])
    first = await ledger.apply([reverse("c", uid)])
    assert first.outcomes[0].entry.amount == -100
    again = await ledger.apply([reverse("c", uid)])
    assert again.outcomes[0].replayed
    assert again.outcomes[0].entry == first.outcomes[0].entry
    with pytest.raises(LedgerConflictError):
        await ledger.apply([reverse("c", uid, amount=10)])
    with pytest.raises(EntryNotFoundError):
        await ledger.apply([reverse("missing", uid)])
    assert (await ledger.get_balance(uid)).paid == 0


async def test_recredit_once(ledger: FirestoreLedger) -> None:
    uid = unique("u")
    with pytest.raises(EntryNotFoundError):
        await ledger.apply([credit("c", uid, amount=40), recredit("c", uid)])
    await ledger.apply([credit("c", uid, amount=40), reverse("c", uid)])
    result = await ledger.apply([recredit("c", uid)])
    assert result.outcomes[0].entry.amount == 40
    assert (await ledger.apply([recredit("c", uid)])).outcomes[0].replayed
    assert (await ledger.get_balance(uid)).paid == 40


async def test_multi_entry_transaction_is_all_or_nothing(db: AsyncClient, ledger: FirestoreLedger) -> None:
    uid, other = unique("u"), unique("u")
    taken = EntryRequest(f"taken-{other}", other, "credit", 1, "test")
    await ledger.apply([taken])
    batch = [
        credit("fresh-1", uid, amount=5),
        credit("fresh-2", uid, amount=6),
        EntryRequest(f"taken-{other}", uid, "credit", 1, "test"),
    ]
    with pytest.raises(LedgerConflictError):
        await ledger.apply(batch)
    assert await doc(db, "users", uid, "ledger", f"{uid}:fresh-1") is None
    assert await doc(db, "ledgerKeys", f"{uid}:fresh-1") is None
    assert await doc(db, "users", uid, "wallet", "points") is None
    assert await doc(db, "users", uid) is None


@pytest.mark.parametrize("allow_negative", [True, False])
async def test_negative_balance_setting(db: AsyncClient, allow_negative: bool) -> None:
    ledger = FirestoreLedger(db, allow_negative_balance=allow_negative)
    uid = unique("u")
    await ledger.apply([credit("a", uid, amount=100), credit("b", uid, amount=30, kind="promo")])
    await db.document("users", uid, "wallet", "points").update({"paidBalance": 25})  # the user spent 75
    outcome = (await ledger.apply([reverse("a", uid)])).outcomes[0]
    balance = await ledger.get_balance(uid)
    # Paid first, then the unexpired promo lot, then (if allowed) below zero.
    if allow_negative:
        assert (outcome.entry.amount, outcome.shortfall, balance.paid, balance.promo) == (-100, 0, -45, 0)
    else:
        assert (outcome.entry.amount, outcome.shortfall, balance.paid, balance.promo) == (-55, 45, 0, 0)
        assert (await ledger.apply([reverse("a", uid)])).outcomes[0].shortfall == 45
    assert outcome.entry.delta == (Points(-70, -30) if allow_negative else Points(-25, -30))


async def test_worker_style_transaction_with_its_own_reads_and_writes(
    db: AsyncClient, ledger: FirestoreLedger
) -> None:
    uid, event = unique("u"), unique("evt")
    requests = [credit(f"{event}:1", uid, amount=3), credit(f"{event}:2", uid, amount=4)]

    async def process(tx: AsyncTransaction) -> LedgerResult:
        # AsyncTransaction.get() is broken in google-cloud-firestore 2.34 (awaits a generator): use get_all.
        seen = [s async for s in db.get_all([db.document("webhookEvents", event)], transaction=tx)]
        reads = await ledger.read_phase(tx, requests)
        result = ledger.write_phase(tx, reads, requests)
        tx.set(db.document("webhookEvents", event), {"status": "processed", "seenBefore": seen[0].exists})
        return result

    result = await FirestoreTransactions(db).run({uid}, process)
    assert result.balances[uid].paid == 7
    assert await doc(db, "webhookEvents", event) == {"status": "processed", "seenBefore": False}


async def test_balance_and_ledger_pages(ledger: FirestoreLedger) -> None:
    uid = unique("u")
    assert (await ledger.get_balance(uid)).paid == 0
    assert await ledger.list_ledger(uid, 10, "") == ([], "")
    for i in range(5):
        await ledger.apply([credit(f"k{i}", uid, amount=1)])
    seen: list[str] = []
    token = ""
    while True:
        page, token = await ledger.list_ledger(uid, 2, token)
        seen += [e.entry_id for e in page]
        if not token:
            break
    assert seen == [f"{uid}:k{i}" for i in (4, 3, 2, 1, 0)]
    with pytest.raises(InvalidRequestError):
        await ledger.list_ledger(uid, 2, "not-a-token")
    _, foreign = await ledger.list_ledger(uid, 1, "")
    with pytest.raises(InvalidRequestError):
        await ledger.list_ledger(unique("u"), 1, foreign)


async def test_invalid_ids_never_reach_firestore(ledger: FirestoreLedger) -> None:
    with pytest.raises(InvalidRequestError):
        await ledger.apply([credit("a/b", unique("u"))])
    with pytest.raises(InvalidRequestError):
        await ledger.get_balance("a/b")


async def test_contention_is_retried_then_reported(db: AsyncClient) -> None:
    transactions = FirestoreTransactions(db, max_attempts=3)
    calls = 0

    async def always_aborted(tx: AsyncTransaction) -> None:
        nonlocal calls
        calls += 1
        raise gexc.Aborted("Transaction lock timeout")

    with pytest.raises(ContentionError):
        await transactions.run({unique("u")}, always_aborted)
    assert calls == 3


async def test_unavailable_firestore_is_a_storage_error(emulators: EmulatorStack, db: AsyncClient) -> None:
    ledger = FirestoreLedger(db, timeout_s=1.0)
    uid = unique("u")
    emulators.firestore.pause()
    try:
        with pytest.raises(StorageUnavailableError):
            await ledger.apply([credit("k", uid)])
        with pytest.raises(StorageUnavailableError):
            await ledger.get_balance(uid)
    finally:
        emulators.firestore.resume()
    assert (await ledger.apply([credit("k", uid)])).balances[uid].paid == 10


async def test_outage_inside_a_transaction_is_bounded(emulators: EmulatorStack, db: AsyncClient) -> None:
    # The rollback after the timeout cannot reach Firestore either: it must not hold the caller.
    transactions = FirestoreTransactions(db, timeout_s=1.0)
    ledger = FirestoreLedger(db, transactions=transactions, timeout_s=1.0)
    requests = [credit("k", unique("u"))]

    async def pause_before_commit(tx: AsyncTransaction) -> LedgerResult:
        reads = await ledger.read_phase(tx, requests)
        emulators.firestore.pause()
        return ledger.write_phase(tx, reads, requests)

    started = time.monotonic()
    try:
        with pytest.raises(StorageUnavailableError):
            await transactions.run({requests[0].uid}, pause_before_commit)
    finally:
        emulators.firestore.resume()
    assert time.monotonic() - started < 3
