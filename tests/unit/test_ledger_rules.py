"""The ledger's pure rules: replays, conflicts, reversals, re-credits, running balances."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paynow_service.domain.errors import EntryNotFoundError, InvalidRequestError, LedgerConflictError
from paynow_service.domain.ledger import Balance, EntryRequest, LedgerEntry
from paynow_service.domain.ledger_rules import (
    KeyRecord,
    LedgerPlan,
    LedgerState,
    plan,
    read_set,
    request_hash,
    validate_entry_id,
    validate_uid,
)

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
EARLIER = NOW - timedelta(days=1)


def credit(
    entry_id: str = "c1", uid: str = "u1", amount: int = 100, kind: Any = "paid", **kw: Any
) -> EntryRequest:
    kw.setdefault("source", "test")
    return EntryRequest(entry_id=entry_id, uid=uid, action="credit", amount=amount, kind=kind, **kw)


def reverse(original: str, uid: str = "u1", amount: int | None = None) -> EntryRequest:
    return EntryRequest(
        entry_id=f"rev:{original}",
        uid=uid,
        action="reversal",
        amount=amount,
        source="test",
        reversal_of=original,
    )


def recredit(original: str, uid: str = "u1", amount: int | None = None) -> EntryRequest:
    return EntryRequest(
        entry_id=f"recredit:{original}",
        uid=uid,
        action="credit",
        amount=amount,
        source="test",
        reversal_of=original,
    )


class Store:
    """A dict 'database' that applies plans, to chain transactions in tests."""

    def __init__(self) -> None:
        self.wallets: dict[str, Balance] = {}
        self.keys: dict[str, KeyRecord] = {}
        self.entries: dict[tuple[str, str], LedgerEntry] = {}

    def state(self, requests: Sequence[EntryRequest]) -> LedgerState:
        needed = read_set(requests)
        return LedgerState(
            wallets={u: self.wallets.get(u) for u in needed.uids},
            keys={k: self.keys.get(k) for k in needed.key_ids},
            entries={e: self.entries.get(e) for e in needed.entries},
        )

    def apply(self, *requests: EntryRequest, allow_negative: bool = True, now: datetime = NOW) -> LedgerPlan:
        result = plan(requests, self.state(requests), now=now, allow_negative_balance=allow_negative)
        for entry in result.new_entries:
            self.entries[(entry.uid, entry.entry_id)] = entry
        for key, _request in result.new_keys:
            self.keys[key.entry_id] = key
        for uid in result.changed_wallets:
            self.wallets[uid] = result.balances[uid]
        return result

    def ledger_sum(self, uid: str, kind: str) -> int:
        return sum(e.amount for (u, _), e in self.entries.items() if u == uid and e.kind == kind)


@pytest.fixture
def store() -> Store:
    return Store()


def test_credit_to_a_new_wallet(store: Store) -> None:
    result = store.apply(credit(amount=250, metadata={"orderId": "o1"}))
    (outcome,) = result.outcomes
    assert not outcome.replayed
    assert outcome.entry.amount == 250
    assert (outcome.entry.pre, outcome.entry.post) == (0, 250)
    assert outcome.entry.metadata == {"orderId": "o1"}
    assert outcome.entry.created_at == NOW
    assert result.balances["u1"] == Balance(paid=250, promo=0, updated_at=NOW)
    assert result.changed_wallets == {"u1"}
    assert result.new_keys[0][0] == KeyRecord("c1", "u1", 250, request_hash(credit(amount=250)))


def test_promo_and_paid_balances_are_separate(store: Store) -> None:
    store.apply(credit("a", amount=10))
    result = store.apply(credit("b", amount=7, kind="promo"))
    entry = result.outcomes[0].entry
    assert (entry.kind, entry.pre, entry.post) == ("promo", 0, 7)
    assert result.balances["u1"].paid == 10
    assert result.balances["u1"].promo == 7


def test_same_request_is_a_replay_without_writes(store: Store) -> None:
    first = store.apply(credit(amount=100))
    later = NOW + timedelta(minutes=5)
    again = store.apply(
        credit(amount=100, metadata={"other": "metadata is not part of the request"}), now=later
    )
    assert again.outcomes[0].replayed
    assert again.outcomes[0].entry == first.outcomes[0].entry
    assert again.new_entries == ()
    assert again.new_keys == ()
    assert again.changed_wallets == frozenset()
    assert again.balances["u1"] == Balance(paid=100, promo=0, updated_at=NOW)


@pytest.mark.parametrize(
    "changed",
    [credit(uid="u2", amount=100), credit(amount=101), credit(amount=100, kind="promo")],
    ids=["other-uid", "other-amount", "other-kind"],
)
def test_same_id_with_another_request_conflicts(store: Store, changed: EntryRequest) -> None:
    store.apply(credit(amount=100))
    with pytest.raises(LedgerConflictError):
        store.apply(changed)


def test_key_without_hash_compares_with_the_entry(store: Store) -> None:
    store.apply(credit(amount=100))
    store.keys["c1"] = KeyRecord("c1", "u1", 100, None)
    assert store.apply(credit(amount=100)).outcomes[0].replayed
    with pytest.raises(LedgerConflictError):
        store.apply(credit(amount=5))


def test_entry_without_key_is_still_a_replay_or_conflict(store: Store) -> None:
    store.apply(credit(amount=100))
    store.keys.clear()
    assert store.apply(credit(amount=100)).outcomes[0].replayed
    with pytest.raises(LedgerConflictError):
        store.apply(credit(amount=99))


def test_key_without_entry_is_reported(store: Store) -> None:
    store.apply(credit(amount=100))
    store.entries.clear()
    with pytest.raises(LedgerConflictError, match="without its ledger entry"):
        store.apply(credit(amount=100))


def test_full_reversal(store: Store) -> None:
    store.apply(credit(amount=100))
    result = store.apply(reverse("c1"))
    entry = result.outcomes[0].entry
    assert (entry.entry_id, entry.action, entry.amount, entry.pre, entry.post) == (
        "rev:c1",
        "reversal",
        -100,
        100,
        0,
    )
    assert entry.metadata["reversalOf"] == "c1"
    assert result.balances["u1"].paid == 0


def test_reversal_takes_the_kind_of_the_original(store: Store) -> None:
    store.apply(credit(amount=40, kind="promo"))
    entry = store.apply(reverse("c1")).outcomes[0].entry
    assert (entry.kind, entry.amount, entry.post) == ("promo", -40, 0)


def test_partial_reversal_either_sign(store: Store) -> None:
    store.apply(credit(amount=100))
    assert store.apply(reverse("c1", amount=30)).outcomes[0].entry.amount == -30
    other = Store()
    other.apply(credit(amount=100))
    assert other.apply(reverse("c1", amount=-30)).outcomes[0].entry.amount == -30


def test_reversal_cannot_take_more_than_the_original(store: Store) -> None:
    store.apply(credit(amount=100))
    with pytest.raises(InvalidRequestError):
        store.apply(reverse("c1", amount=101))


def test_reversal_happens_once(store: Store) -> None:
    store.apply(credit(amount=100))
    first = store.apply(reverse("c1"))
    again = store.apply(reverse("c1"))
    assert again.outcomes[0].replayed
    assert again.outcomes[0].entry == first.outcomes[0].entry
    assert again.balances["u1"].paid == 0
    with pytest.raises(LedgerConflictError):
        store.apply(reverse("c1", amount=50))


def test_reversal_of_a_missing_entry_or_another_users_entry(store: Store) -> None:
    with pytest.raises(EntryNotFoundError):
        store.apply(reverse("nope"))
    store.apply(credit(amount=100, uid="u2"))
    with pytest.raises(EntryNotFoundError):
        store.apply(reverse("c1", uid="u1"))


def test_a_reversal_cannot_be_reversed(store: Store) -> None:
    store.apply(credit(amount=100))
    store.apply(reverse("c1"))
    with pytest.raises(InvalidRequestError):
        store.apply(reverse("rev:c1"))


def test_negative_balance_allowed(store: Store) -> None:
    store.apply(credit("a", amount=100))
    store.wallets["u1"] = Balance(paid=20, promo=0, updated_at=EARLIER)  # the user spent 80 elsewhere
    result = store.apply(reverse("a"))
    outcome = result.outcomes[0]
    assert (outcome.entry.amount, outcome.entry.pre, outcome.entry.post, outcome.shortfall) == (
        -100,
        20,
        -80,
        0,
    )


def test_negative_balance_refused_records_the_shortfall(store: Store) -> None:
    store.apply(credit("a", amount=100))
    store.wallets["u1"] = Balance(paid=20, promo=0, updated_at=EARLIER)
    result = store.apply(reverse("a"), allow_negative=False)
    outcome = result.outcomes[0]
    assert (outcome.entry.amount, outcome.entry.post, outcome.shortfall) == (-20, 0, 80)
    assert outcome.entry.metadata["shortfall"] == 80
    assert outcome.entry.metadata["requestedAmount"] == 100
    replay = store.apply(reverse("a"), allow_negative=False).outcomes[0]
    assert replay.replayed
    assert replay.shortfall == 80


def test_reversal_at_zero_writes_an_empty_entry_to_happen_once(store: Store) -> None:
    store.apply(credit("a", amount=100))
    store.wallets["u1"] = Balance(paid=0, promo=0, updated_at=EARLIER)
    outcome = store.apply(reverse("a"), allow_negative=False).outcomes[0]
    assert (outcome.entry.amount, outcome.shortfall) == (0, 100)
    assert store.apply(reverse("a"), allow_negative=False).outcomes[0].replayed


def test_recredit_after_reversal_once(store: Store) -> None:
    store.apply(credit(amount=100))
    store.apply(reverse("c1"))
    result = store.apply(recredit("c1"))
    entry = result.outcomes[0].entry
    assert (entry.entry_id, entry.action, entry.amount, entry.post) == ("recredit:c1", "credit", 100, 100)
    assert entry.metadata["recreditOf"] == "c1"
    assert store.apply(recredit("c1")).outcomes[0].replayed
    assert store.wallets["u1"].paid == 100


def test_recredit_gives_back_only_what_was_taken(store: Store) -> None:
    store.apply(credit(amount=100))
    store.wallets["u1"] = Balance(paid=30, promo=0, updated_at=EARLIER)
    store.apply(reverse("c1"), allow_negative=False)
    assert store.apply(recredit("c1")).outcomes[0].entry.amount == 30


def test_recredit_needs_a_reversal(store: Store) -> None:
    store.apply(credit(amount=100))
    with pytest.raises(EntryNotFoundError):
        store.apply(recredit("c1"))


def test_a_recredit_can_be_reversed_again(store: Store) -> None:
    store.apply(credit(amount=100))
    store.apply(reverse("c1"))
    store.apply(recredit("c1"))
    entry = store.apply(reverse("recredit:c1")).outcomes[0].entry
    assert (entry.amount, entry.post) == (-100, 0)


def test_running_balance_inside_one_batch(store: Store) -> None:
    store.apply(credit("seed", amount=5))
    result = store.apply(credit("a", amount=10), credit("b", amount=20, uid="u2"), credit("c", amount=1))
    posts = [(o.entry.uid, o.entry.pre, o.entry.post) for o in result.outcomes]
    assert posts == [("u1", 5, 15), ("u2", 0, 20), ("u1", 15, 16)]
    assert result.balances["u1"].paid == 16
    assert result.balances["u2"].paid == 20
    assert result.changed_wallets == {"u1", "u2"}


def test_batch_sees_its_own_entries(store: Store) -> None:
    result = store.apply(credit("a", amount=10), reverse("a"), recredit("a"))
    assert [o.entry.amount for o in result.outcomes] == [10, -10, 10]
    assert result.balances["u1"].paid == 10


def test_duplicate_inside_a_batch_is_a_replay_and_a_changed_duplicate_conflicts(store: Store) -> None:
    result = store.apply(credit("a", amount=10), credit("a", amount=10))
    assert [o.replayed for o in result.outcomes] == [False, True]
    assert len(result.new_entries) == 1
    assert result.balances["u1"].paid == 10
    with pytest.raises(LedgerConflictError):
        Store().apply(credit("a", amount=10), credit("a", amount=11))


def test_a_conflict_fails_the_whole_batch(store: Store) -> None:
    store.apply(credit("taken", amount=1, uid="u2"))
    with pytest.raises(LedgerConflictError):
        store.apply(credit("fresh", amount=5), credit("taken", amount=1))
    assert ("u1", "fresh") not in store.entries


def test_mixed_replay_and_new_entry(store: Store) -> None:
    store.apply(credit("a", amount=10))
    result = store.apply(credit("a", amount=10), credit("b", amount=3))
    assert [o.replayed for o in result.outcomes] == [True, False]
    assert result.outcomes[1].entry.pre == 10
    assert result.balances["u1"] == Balance(paid=13, promo=0, updated_at=NOW)


@pytest.mark.parametrize(
    "request_",
    [
        credit(uid=""),
        credit(uid="a/b"),
        credit(uid="x" * 129),
        credit(uid="__x__"),
        credit(entry_id=""),
        credit(entry_id="a/b"),
        credit(entry_id="é" * 251),
        credit(entry_id=".."),
        credit(entry_id="a\nb"),
        credit(amount=0),
        credit(amount=-5),
        credit(amount=2**63),
        credit(kind="gold"),
        EntryRequest("c1", "u1", "credit", None, "test"),
        EntryRequest("c1", "u1", "credit", True, "test"),  # bool is not an amount
        EntryRequest("c1", "u1", "spend", 5, "test"),  # type: ignore[arg-type]
        EntryRequest("rev:c1", "u1", "reversal", None, "test"),  # no reversal_of
        EntryRequest("other", "u1", "reversal", None, "test", reversal_of="c1"),  # id not rev:{original}
        EntryRequest("rev:c1", "u1", "reversal", 0, "test", reversal_of="c1"),
        EntryRequest(
            "again:c1", "u1", "credit", None, "test", reversal_of="c1"
        ),  # id not recredit:{original}
        EntryRequest("recredit:c1", "u1", "credit", -1, "test", reversal_of="c1"),
        EntryRequest("c1", "u1", "credit", 5, "test", metadata={1: "x"}),  # type: ignore[dict-item]
    ],
)
def test_invalid_requests(store: Store, request_: EntryRequest) -> None:
    with pytest.raises(InvalidRequestError):
        store.apply(request_)


def test_empty_batch_is_invalid() -> None:
    with pytest.raises(InvalidRequestError):
        read_set([])


def test_ids_and_uids_at_the_limits() -> None:
    assert validate_uid("u" * 128)
    assert validate_entry_id("paynow:order:1:line:2")
    assert validate_entry_id("é" * 250)  # 500 bytes
    assert validate_entry_id("api:svc@example.iam.gserviceaccount.com:key-1")


def test_a_missing_read_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="lacks documents"):
        plan([credit()], LedgerState({}, {}, {}), now=NOW, allow_negative_balance=True)


def test_read_set_names_originals_and_reversals() -> None:
    needed = read_set([credit("a"), reverse("b"), recredit("c", uid="u2")])
    assert needed.uids == ("u1", "u2")
    assert needed.key_ids == ("a", "rev:b", "recredit:c")
    assert set(needed.entries) == {
        ("u1", "a"), ("u1", "rev:b"), ("u1", "b"), ("u2", "recredit:c"), ("u2", "rev:c")
    }  # fmt: skip


def test_hash_ignores_source_and_metadata_but_not_the_amount() -> None:
    base = credit(amount=5)
    assert request_hash(base) == request_hash(credit(amount=5, metadata={"x": 1}, source="elsewhere"))
    assert request_hash(base) != request_hash(credit(amount=6))
    assert request_hash(reverse("c1")) == request_hash(reverse("c1"))
    assert request_hash(reverse("c1", amount=5)) == request_hash(reverse("c1", amount=-5))
    assert request_hash(reverse("c1")) != request_hash(reverse("c1", amount=5))


operations = st.lists(
    st.tuples(st.sampled_from(["credit", "reverse", "recredit"]), st.integers(0, 5), st.integers(1, 1000)),
    max_size=25,
)


@given(ops=operations, allow_negative=st.booleans())
def test_wallet_always_equals_the_sum_of_its_entries(
    ops: list[tuple[str, int, int]], allow_negative: bool
) -> None:
    store = Store()
    for op, n, amount in ops:
        request = {
            "credit": credit(f"c{n}", amount=amount),
            "reverse": reverse(f"c{n}"),
            "recredit": recredit(f"c{n}"),
        }
        try:
            store.apply(request[op], allow_negative=allow_negative)
        except (EntryNotFoundError, LedgerConflictError, InvalidRequestError):
            continue
        wallet = store.wallets["u1"]
        assert wallet.paid == store.ledger_sum("u1", "paid")
        if not allow_negative:
            assert wallet.paid >= 0
