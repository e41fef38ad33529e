"""PointsCore with an in-memory ledger that applies the same pure rules as Firestore."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from paynow_service.domain.errors import EntryNotFoundError, InvalidRequestError, LedgerConflictError
from paynow_service.domain.ledger import Balance, EntryRequest, LedgerEntry, LedgerResult
from paynow_service.domain.ledger_rules import KeyRecord, LedgerState, plan, read_set
from paynow_service.service.points import CreditCommand, PointsCore, ReverseCommand


class MemoryLedger:
    def __init__(self) -> None:
        self.wallets: dict[str, Balance] = {}
        self.keys: dict[str, KeyRecord] = {}
        self.entries: dict[tuple[str, str], LedgerEntry] = {}
        self.order: list[LedgerEntry] = []

    async def apply(self, requests: Sequence[EntryRequest]) -> LedgerResult:
        needed = read_set(requests)
        state = LedgerState(
            wallets={u: self.wallets.get(u) for u in needed.uids},
            keys={k: self.keys.get(k) for k in needed.key_ids},
            entries={e: self.entries.get(e) for e in needed.entries},
        )
        planned = plan(requests, state, now=datetime.now(UTC), allow_negative_balance=True)
        for entry in planned.new_entries:
            self.entries[(entry.uid, entry.entry_id)] = entry
            self.order.append(entry)
        self.keys.update({key.entry_id: key for key, _ in planned.new_keys})
        self.wallets.update({uid: planned.balances[uid] for uid in planned.changed_wallets})
        return planned.result()

    async def get_balance(self, uid: str) -> Balance:
        return self.wallets.get(uid, Balance())

    async def list_ledger(self, uid: str, page_size: int, page_token: str) -> tuple[list[LedgerEntry], str]:
        mine = [e for e in reversed(self.order) if e.uid == uid]
        start = int(page_token or 0)
        rest = mine[start:]
        return rest[:page_size], str(start + page_size) if len(rest) > page_size else ""


@pytest.fixture
def ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture
def core(ledger: MemoryLedger) -> PointsCore:
    return PointsCore(ledger)


def credit_cmd(**kw: Any) -> CreditCommand:
    values: dict[str, Any] = {
        "caller": "svc@example.com",
        "uid": "u1",
        "amount": 100,
        "idempotency_key": "k1",
    }
    return CreditCommand(**{**values, **kw})


async def test_credit_namespaces_the_key_by_caller(core: PointsCore) -> None:
    result = await core.credit(credit_cmd(metadata={"campaign": "spring"}, source="shop", kind="promo"))
    entry = result.entry
    assert entry.entry_id == "api:svc@example.com:k1"
    assert (entry.kind, entry.amount, entry.source, entry.created_by) == (
        "promo",
        100,
        "shop",
        "svc@example.com",
    )
    assert entry.metadata == {"campaign": "spring", "idempotencyKey": "k1"}
    assert result.balance.promo == 100
    assert not result.replayed
    other = await core.credit(credit_cmd(caller="other@example.com"))
    assert other.entry.entry_id == "api:other@example.com:k1"
    assert not other.replayed


async def test_retry_is_a_replay_and_a_changed_retry_conflicts(core: PointsCore) -> None:
    first = await core.credit(credit_cmd())
    again = await core.credit(credit_cmd())
    assert again.replayed
    assert again.entry == first.entry
    assert again.balance.paid == 100
    with pytest.raises(LedgerConflictError):
        await core.credit(credit_cmd(amount=5))
    with pytest.raises(LedgerConflictError):
        await core.credit(credit_cmd(uid="u2"))


async def test_source_defaults_to_api(core: PointsCore) -> None:
    assert (await core.credit(credit_cmd())).entry.source == "api"


async def test_reverse_and_its_retry(core: PointsCore) -> None:
    credited = await core.credit(credit_cmd())
    cmd = ReverseCommand("svc@example.com", "u1", credited.entry.entry_id, "rev-key-1", reason="refund")
    reversed_ = await core.reverse(cmd)
    assert reversed_.entry.entry_id == f"rev:{credited.entry.entry_id}"
    assert reversed_.entry.amount == -100
    assert reversed_.entry.metadata["reason"] == "refund"
    assert reversed_.entry.metadata["idempotencyKey"] == "rev-key-1"
    assert reversed_.balance.paid == 0
    again = await core.reverse(cmd)
    assert again.replayed
    assert again.entry == reversed_.entry


async def test_a_second_reversal_under_another_key_or_caller_conflicts(core: PointsCore) -> None:
    credited = await core.credit(credit_cmd())
    await core.reverse(ReverseCommand("svc@example.com", "u1", credited.entry.entry_id, "a"))
    with pytest.raises(LedgerConflictError):
        await core.reverse(ReverseCommand("svc@example.com", "u1", credited.entry.entry_id, "b"))
    with pytest.raises(LedgerConflictError):
        await core.reverse(ReverseCommand("other@example.com", "u1", credited.entry.entry_id, "a"))


async def test_reverse_unknown_or_foreign_entry(core: PointsCore) -> None:
    with pytest.raises(EntryNotFoundError):
        await core.reverse(ReverseCommand("svc@example.com", "u1", "api:svc@example.com:nope", "k"))
    credited = await core.credit(credit_cmd(uid="u2"))
    with pytest.raises(EntryNotFoundError):
        await core.reverse(ReverseCommand("svc@example.com", "u1", credited.entry.entry_id, "k"))


@pytest.mark.parametrize(
    "kw",
    [
        {"uid": ""},
        {"uid": "a/b"},
        {"uid": "u" * 129},
        {"amount": 0},
        {"amount": -1},
        {"amount": 10**12 + 1},
        {"idempotency_key": ""},
        {"idempotency_key": "   "},
        {"idempotency_key": "k" * 201},
        {"idempotency_key": "a/b"},
        {"idempotency_key": "a\x00b"},
        {"kind": "unspecified"},
        {"source": "s" * 101},
        {"metadata": {"idempotencyKey": "forged"}},
        {"metadata": {"": "x"}},
        {"metadata": {"a.b": "x"}},
        {"metadata": {"k": "v" * 1025}},
        {"metadata": {f"k{i}": "v" for i in range(33)}},
        {"caller": ""},
    ],
)
async def test_invalid_credit_requests(core: PointsCore, ledger: MemoryLedger, kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        await core.credit(credit_cmd(**kw))
    assert not ledger.entries


async def test_limits_are_inclusive(core: PointsCore) -> None:
    result = await core.credit(credit_cmd(amount=10**12, idempotency_key="k" * 200, uid="u" * 128))
    assert result.balance.paid == 10**12


@pytest.mark.parametrize(
    "cmd",
    [
        ReverseCommand("svc@example.com", "u1", "", "k"),
        ReverseCommand("svc@example.com", "u1", "a/b", "k"),
        ReverseCommand("svc@example.com", "u1", "x" * 500, "k"),  # rev:{x} exceeds 500 bytes
        ReverseCommand("svc@example.com", "u1", "x", ""),
        ReverseCommand("svc@example.com", "u1", "x", "k", reason="r" * 501),
    ],
)
async def test_invalid_reverse_requests(core: PointsCore, cmd: ReverseCommand) -> None:
    with pytest.raises(InvalidRequestError):
        await core.reverse(cmd)


async def test_balance_and_pages(core: PointsCore) -> None:
    assert await core.balance("u1") == Balance()
    for i in range(3):
        await core.credit(credit_cmd(idempotency_key=f"k{i}", amount=i + 1))
    assert (await core.balance("u1")).paid == 6
    page = await core.ledger("u1", 2, "")
    assert [e.metadata["idempotencyKey"] for e in page.entries] == ["k2", "k1"]
    rest = await core.ledger("u1", 2, page.next_page_token)
    assert [e.metadata["idempotencyKey"] for e in rest.entries] == ["k0"]
    assert rest.next_page_token == ""
    assert len((await core.ledger("u1", 0, "")).entries) == 3  # 0: the default size
    assert len((await core.ledger("u1", 10_000, "")).entries) == 3  # coerced to the maximum
    with pytest.raises(InvalidRequestError):
        await core.ledger("u1", -1, "")
    with pytest.raises(InvalidRequestError):
        await core.balance("")
