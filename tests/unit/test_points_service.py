"""PointsCore with an in-memory ledger that applies the same pure rules as Firestore."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from paynow_service.domain.errors import EntryNotFoundError, InvalidRequestError, LedgerConflictError
from paynow_service.domain.ledger import (
    Balance,
    EntryRequest,
    LedgerEntry,
    LedgerResult,
    LotMove,
    PromoLot,
    Wallet,
)
from paynow_service.domain.ledger_rules import KeyRecord, LedgerState, plan, read_set
from paynow_service.service.points import CreditCommand, PointsCore, ReverseCommand

NOW = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
EXPIRES = NOW + timedelta(days=30)


class MemoryLedger:
    """The ledger port on dicts: stored wallets (paid + promo lots), keys and entries, changed
    only through `ledger_rules.plan`, read back like FirestoreLedger (balances at `now`)."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now
        self.wallets: dict[str, Wallet] = {}
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
        planned = plan(requests, state, now=self.now, allow_negative_balance=True)
        for entry in planned.new_entries:
            self.entries[(entry.uid, entry.entry_id)] = entry
            self.order.append(entry)
        self.keys.update({key.entry_id: key for key, _ in planned.new_keys})
        self.wallets.update({uid: planned.wallets[uid] for uid in planned.changed_wallets})
        return planned.result()

    async def get_balance(self, uid: str) -> Balance:
        wallet = self.wallets.get(uid)
        return wallet.balance(self.now) if wallet is not None else Balance()

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
    result = await core.credit(
        credit_cmd(metadata={"campaign": "spring"}, source="shop", kind="promo", expires_at=EXPIRES)
    )
    entry = result.entry
    assert entry.entry_id == "api:svc@example.com:k1"
    assert (entry.kind, entry.amount, entry.source, entry.created_by) == (
        "promo",
        100,
        "shop",
        "svc@example.com",
    )
    assert entry.metadata == {"campaign": "spring", "idempotencyKey": "k1"}
    assert (entry.action, entry.note) == ("api.credit", "api credit")
    assert entry.credit_lot == LotMove("api:svc@example.com:k1", 100, EXPIRES)
    assert result.balance.promo == 100
    assert result.balance.lots == (PromoLot("api:svc@example.com:k1", 100, EXPIRES, "shop"),)
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
    assert (reversed_.entry.type, reversed_.entry.action) == ("debit", "api.reverse")
    assert reversed_.entry.note == f"api reversal of {credited.entry.entry_id}"
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
        {"kind": "promo"},  # a promo credit needs expires_at: its points go into a lot
        {"kind": "promo", "expires_at": datetime(2026, 3, 1)},  # no time zone
        {"expires_at": EXPIRES},  # a paid credit has no expiry
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


async def test_promo_credit_without_expires_at_is_refused(core: PointsCore, ledger: MemoryLedger) -> None:
    with pytest.raises(InvalidRequestError, match="expires_at"):
        await core.credit(credit_cmd(kind="promo"))
    assert not ledger.entries
    assert not ledger.wallets


async def test_paid_credit_with_expires_at_is_refused(core: PointsCore, ledger: MemoryLedger) -> None:
    with pytest.raises(InvalidRequestError, match="expires_at"):
        await core.credit(credit_cmd(kind="paid", expires_at=EXPIRES))
    assert not ledger.entries


async def test_expires_at_is_part_of_the_request(core: PointsCore) -> None:
    first = await core.credit(credit_cmd(kind="promo", expires_at=EXPIRES))
    again = await core.credit(credit_cmd(kind="promo", expires_at=EXPIRES))
    assert again.replayed
    assert again.entry == first.entry
    assert again.balance.promo == 100  # the lot was added once
    with pytest.raises(LedgerConflictError):
        await core.credit(credit_cmd(kind="promo", expires_at=EXPIRES + timedelta(days=1)))
    with pytest.raises(LedgerConflictError):
        await core.credit(credit_cmd(kind="paid"))  # the same key, now without a lot


async def test_promo_balance_counts_unexpired_lots_only(core: PointsCore, ledger: MemoryLedger) -> None:
    await core.credit(credit_cmd(kind="promo", expires_at=EXPIRES, idempotency_key="a"))
    await core.credit(
        credit_cmd(kind="promo", amount=7, expires_at=NOW + timedelta(days=1), idempotency_key="b")
    )
    await core.credit(credit_cmd(amount=5, idempotency_key="c"))
    now = await core.balance("u1")
    assert (now.paid, now.promo, now.promo_stored) == (5, 107, 107)
    assert [(lot.amount_remaining, lot.expires_at) for lot in now.lots] == [
        (7, NOW + timedelta(days=1)),  # earliest expiry first
        (100, EXPIRES),
    ]
    ledger.now = NOW + timedelta(days=2)
    later = await core.balance("u1")
    assert (later.paid, later.promo, later.promo_stored) == (5, 100, 107)  # the expired lot stays stored


async def test_reverse_a_promo_credit_empties_its_lot(core: PointsCore) -> None:
    credited = await core.credit(credit_cmd(kind="promo", expires_at=EXPIRES))
    reversed_ = await core.reverse(ReverseCommand("svc@example.com", "u1", credited.entry.entry_id, "r"))
    assert reversed_.entry.amount == -100
    assert reversed_.entry.consumed_lots == (LotMove(credited.entry.entry_id, 100, EXPIRES),)
    assert (reversed_.balance.paid, reversed_.balance.promo) == (0, 0)


@pytest.mark.parametrize(
    "original",
    ["paynow:order:o1:line:l1", "paynow:order:o1:extra:bonus", "paynow:sub:s1:cycle:1"],
)
async def test_reverse_of_a_paynow_entry_is_refused(
    core: PointsCore, ledger: MemoryLedger, original: str
) -> None:
    # The entry exists, as the event worker wrote it: only its order's refund or chargeback moves it.
    await ledger.apply(
        [EntryRequest(entry_id=original, uid="u1", action="credit", amount=100, source="paynow")]
    )
    before = dict(ledger.entries)
    with pytest.raises(InvalidRequestError, match="PayNow"):
        await core.reverse(ReverseCommand("svc@example.com", "u1", original, "k"))
    assert ledger.entries == before
    assert (await core.balance("u1")).paid == 100
