"""The ledger's pure rules: replays, conflicts, reversals, re-credits, running balances."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paynow_service.domain.errors import EntryNotFoundError, InvalidRequestError, LedgerConflictError
from paynow_service.domain.ledger import (
    Balance,
    EntryRequest,
    LedgerEntry,
    LotMove,
    Points,
    PromoLot,
    Wallet,
)
from paynow_service.domain.ledger_reader import read_entry
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
SOON = NOW + timedelta(days=10)
LATER = NOW + timedelta(days=100)
PAST = NOW - timedelta(days=3)


def credit(
    entry_id: str = "c1", uid: str = "u1", amount: int = 100, kind: Any = "paid", **kw: Any
) -> EntryRequest:
    kw.setdefault("source", "test")
    if kind == "promo":
        kw.setdefault("expires_at", LATER)
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


def lot(lot_id: str, amount: int, expires_at: datetime = LATER) -> PromoLot:
    return PromoLot(lot_id, amount, expires_at, "test")


class Store:
    """A dict 'database' that applies plans, to chain transactions in tests."""

    def __init__(self) -> None:
        self.wallets: dict[str, Wallet] = {}
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
            self.wallets[uid] = result.wallets[uid]
        return result

    def set_wallet(self, uid: str = "u1", paid: int = 0, *lots: PromoLot) -> None:
        """The wallet as another writer (the app's spend) left it."""
        ordered = tuple(sorted(lots, key=lambda x: x.expires_at))
        self.wallets[uid] = Wallet(
            paid=paid, lots=ordered, promo_stored=sum(x.amount_remaining for x in lots)
        )

    def ledger_sum(self, uid: str) -> Points:
        deltas = [e.delta or Points() for (u, _), e in self.entries.items() if u == uid]
        return Points(sum(d.paid for d in deltas), sum(d.promo for d in deltas))


@pytest.fixture
def store() -> Store:
    return Store()


def test_credit_to_a_new_wallet(store: Store) -> None:
    result = store.apply(credit(amount=250, metadata={"orderId": "o1"}))
    (outcome,) = result.outcomes
    entry = outcome.entry
    assert not outcome.replayed
    assert (entry.amount, entry.type, entry.channel, entry.action) == (250, "credit", "paid", "credit")
    assert (entry.pre, entry.post, entry.delta) == (Points(0, 0), Points(250, 0), Points(250, 0))
    assert entry.credit_lot is None
    assert entry.metadata == {"orderId": "o1"}
    assert entry.created_at == NOW
    assert result.balances["u1"] == Balance(paid=250, promo=0, updated_at=NOW)
    assert result.changed_wallets == {"u1"}
    assert result.new_keys[0][0] == KeyRecord("c1", "u1", 250, request_hash(credit(amount=250)))


def test_a_promo_credit_adds_a_lot_named_after_its_entry(store: Store) -> None:
    store.apply(credit("a", amount=10))
    result = store.apply(credit("b", amount=7, kind="promo", expires_at=SOON))
    entry = result.outcomes[0].entry
    assert (entry.channel, entry.pre, entry.post, entry.delta) == (
        "promo",
        Points(10, 0),
        Points(10, 7),
        Points(0, 7),
    )
    assert entry.credit_lot == LotMove("b", 7, SOON)
    wallet = result.wallets["u1"]
    assert wallet.lots == (PromoLot("b", 7, SOON, "test"),)
    assert (wallet.paid, wallet.promo_stored) == (10, 7)
    assert (result.balances["u1"].paid, result.balances["u1"].promo) == (10, 7)


def test_lots_stay_sorted_by_expiry_and_promo_balance_is_their_sum(store: Store) -> None:
    store.apply(credit("late", amount=5, kind="promo", expires_at=LATER))
    store.apply(credit("soon", amount=3, kind="promo", expires_at=SOON))
    wallet = store.wallets["u1"]
    assert [x.lot_id for x in wallet.lots] == ["soon", "late"]
    assert wallet.promo_stored == wallet.lots_sum == 8


def test_expired_lots_count_in_the_stored_balance_not_in_the_spendable_one(store: Store) -> None:
    store.set_wallet("u1", 0, lot("old", 4, PAST))
    result = store.apply(credit("b", amount=6, kind="promo"))
    assert result.wallets["u1"].promo_stored == 10  # never drop a lot: the app's spend does
    assert result.balances["u1"].promo == 6
    assert result.balances["u1"].promo_stored == 10


def test_a_promo_credit_needs_an_expiry_and_a_paid_one_takes_none() -> None:
    with pytest.raises(InvalidRequestError, match="expiry"):
        read_set([credit(kind="promo", expires_at=None)])
    with pytest.raises(InvalidRequestError, match="only a promo"):
        read_set([credit(expires_at=LATER)])
    with pytest.raises(InvalidRequestError, match="time zone"):
        read_set([credit(kind="promo", expires_at=datetime(2030, 1, 1))])


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
    [
        credit(uid="u2", amount=100),
        credit(amount=101),
        credit(amount=100, kind="promo"),
    ],
    ids=["other-uid", "other-amount", "other-kind"],
)
def test_same_id_with_another_request_conflicts(store: Store, changed: EntryRequest) -> None:
    store.apply(credit(amount=100))
    with pytest.raises(LedgerConflictError):
        store.apply(changed)


def test_the_expiry_is_part_of_a_promo_request(store: Store) -> None:
    store.apply(credit(amount=100, kind="promo", expires_at=LATER))
    assert store.apply(credit(amount=100, kind="promo", expires_at=LATER)).outcomes[0].replayed
    with pytest.raises(LedgerConflictError):
        store.apply(credit(amount=100, kind="promo", expires_at=SOON))


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
    assert (entry.entry_id, entry.action, entry.type, entry.channel, entry.amount) == (
        "rev:c1",
        "reversal",
        "debit",
        "paid",
        -100,
    )
    assert (entry.pre, entry.post, entry.delta) == (Points(100, 0), Points(0, 0), Points(-100, 0))
    assert entry.metadata["reversalOf"] == "c1"
    assert entry.note == "reversal of c1"
    assert result.balances["u1"].paid == 0


def test_a_promo_reversal_takes_its_own_lot_first(store: Store) -> None:
    store.apply(credit("soon", amount=30, kind="promo", expires_at=SOON))
    store.apply(credit("c1", amount=40, kind="promo"))
    entry = store.apply(reverse("c1")).outcomes[0].entry
    assert (entry.channel, entry.amount, entry.delta) == ("promo", -40, Points(0, -40))
    assert entry.consumed_lots == (LotMove("c1", 40, LATER),)
    assert [(x.lot_id, x.amount_remaining) for x in store.wallets["u1"].lots] == [("soon", 30), ("c1", 0)]
    assert store.wallets["u1"].promo_stored == 30


def test_a_promo_reversal_then_takes_other_unexpired_lots_by_expiry_then_paid(store: Store) -> None:
    store.apply(credit("c1", amount=100, kind="promo"))
    # The user spent 70 of the lot; other lots: one expired, two live.
    store.set_wallet(
        "u1", 50, lot("c1", 30), lot("gone", 9, PAST), lot("late", 20, LATER), lot("soon", 15, SOON)
    )
    entry = store.apply(reverse("c1")).outcomes[0].entry
    assert entry.consumed_lots == (
        LotMove("c1", 30, LATER),
        LotMove("soon", 15, SOON),
        LotMove("late", 20, LATER),
    )
    assert (entry.delta, entry.channel) == (Points(-35, -65), "paid")
    wallet = store.wallets["u1"]
    assert {x.lot_id: x.amount_remaining for x in wallet.lots} == {"gone": 9, "soon": 0, "late": 0, "c1": 0}
    assert (wallet.paid, wallet.promo_stored) == (15, 9)


def test_a_paid_reversal_takes_paid_then_unexpired_lots_then_goes_negative(store: Store) -> None:
    store.apply(credit("c1", amount=100))
    store.set_wallet("u1", 30, lot("soon", 20, SOON), lot("late", 10, LATER))
    entry = store.apply(reverse("c1")).outcomes[0].entry
    assert entry.delta == Points(-70, -30)
    assert entry.consumed_lots == (LotMove("soon", 20, SOON), LotMove("late", 10, LATER))
    assert (store.wallets["u1"].paid, store.wallets["u1"].promo_stored) == (-40, 0)


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
    store.set_wallet("u1", 20)  # the user spent 80 elsewhere
    result = store.apply(reverse("a"))
    outcome = result.outcomes[0]
    assert (outcome.entry.amount, outcome.entry.pre, outcome.entry.post, outcome.shortfall) == (
        -100,
        Points(20, 0),
        Points(-80, 0),
        0,
    )


def test_negative_balance_refused_stops_at_paid_plus_unexpired_promo(store: Store) -> None:
    store.apply(credit("a", amount=100))
    store.set_wallet("u1", 20, lot("p", 15), lot("old", 50, PAST))
    result = store.apply(reverse("a"), allow_negative=False)
    outcome = result.outcomes[0]
    assert (outcome.entry.amount, outcome.entry.delta, outcome.shortfall) == (-35, Points(-20, -15), 65)
    assert outcome.entry.metadata["shortfall"] == 65
    assert outcome.entry.metadata["requestedAmount"] == 100
    assert store.wallets["u1"].paid == 0
    assert {x.lot_id: x.amount_remaining for x in store.wallets["u1"].lots} == {"old": 50, "p": 0}
    replay = store.apply(reverse("a"), allow_negative=False).outcomes[0]
    assert replay.replayed
    assert replay.shortfall == 65


def test_reversal_at_zero_writes_an_empty_entry_to_happen_once(store: Store) -> None:
    store.apply(credit("a", amount=100))
    store.set_wallet("u1", 0)
    outcome = store.apply(reverse("a"), allow_negative=False).outcomes[0]
    assert (outcome.entry.amount, outcome.shortfall) == (0, 100)
    assert store.apply(reverse("a"), allow_negative=False).outcomes[0].replayed


def test_recredit_after_reversal_once(store: Store) -> None:
    store.apply(credit(amount=100))
    store.apply(reverse("c1"))
    result = store.apply(recredit("c1"))
    entry = result.outcomes[0].entry
    assert (entry.entry_id, entry.type, entry.action, entry.amount, entry.post) == (
        "recredit:c1",
        "credit",
        "recredit",
        100,
        Points(100, 0),
    )
    assert entry.metadata["recreditOf"] == "c1"
    assert store.apply(recredit("c1")).outcomes[0].replayed
    assert store.wallets["u1"].paid == 100


def test_recredit_gives_the_promo_part_back_as_a_new_lot_with_the_original_expiry(store: Store) -> None:
    store.apply(credit("c1", amount=100, kind="promo", expires_at=SOON))
    store.set_wallet("u1", 50, lot("c1", 60, SOON))  # 40 spent
    store.apply(reverse("c1"))  # 60 from the lot, 40 from paid
    entry = store.apply(recredit("c1")).outcomes[0].entry
    assert (entry.amount, entry.delta, entry.channel) == (100, Points(40, 60), "paid")
    assert entry.credit_lot == LotMove("recredit:c1", 60, SOON)
    wallet = store.wallets["u1"]
    assert wallet.paid == 50
    assert {x.lot_id: (x.amount_remaining, x.expires_at) for x in wallet.lots} == {
        "c1": (0, SOON),
        "recredit:c1": (60, SOON),
    }
    assert wallet.promo_stored == 60


def test_recredit_gives_back_only_what_was_taken(store: Store) -> None:
    store.apply(credit(amount=100))
    store.set_wallet("u1", 30)
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
    assert (entry.amount, entry.post) == (-100, Points(0, 0))


def test_entries_of_other_writers_are_reversed_by_what_they_say(store: Store) -> None:
    # A credit written by the app's points service (positive amount, its own lot id).
    app_credit = read_entry(
        "u1",
        "app-1",
        {"type": "credit", "channel": "promo", "amount": 25, "creditLot": {"lotId": "uuid-1", "amount": 25}},
    )
    store.entries[("u1", "app-1")] = app_credit
    store.set_wallet("u1", 0, lot("uuid-1", 25))
    entry = store.apply(reverse("app-1")).outcomes[0].entry
    assert entry.consumed_lots == (LotMove("uuid-1", 25, LATER),)
    spend = read_entry("u1", "spend-1", {"type": "debit", "channel": "paid", "amount": 5, "pre": {"paid": 5}})
    store.entries[("u1", "spend-1")] = spend
    with pytest.raises(InvalidRequestError, match="not a credit"):
        store.apply(reverse("spend-1"))


def test_running_balance_inside_one_batch(store: Store) -> None:
    store.apply(credit("seed", amount=5))
    result = store.apply(credit("a", amount=10), credit("b", amount=20, uid="u2"), credit("c", amount=1))
    posts = [(o.entry.uid, o.entry.pre.paid, o.entry.post.paid) for o in result.outcomes]  # type: ignore[union-attr]
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
    assert result.outcomes[1].entry.pre == Points(10, 0)
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
        ("u1", "a"), ("u1", "rev:b"), ("u1", "b"), ("u2", "recredit:c"), ("u2", "rev:c"), ("u2", "c")
    }  # fmt: skip


def test_hash_ignores_source_and_metadata_but_not_the_amount() -> None:
    base = credit(amount=5)
    assert request_hash(base) == request_hash(credit(amount=5, metadata={"x": 1}, source="elsewhere"))
    assert request_hash(base) != request_hash(credit(amount=6))
    assert request_hash(reverse("c1")) == request_hash(reverse("c1"))
    assert request_hash(reverse("c1", amount=5)) == request_hash(reverse("c1", amount=-5))
    assert request_hash(reverse("c1")) != request_hash(reverse("c1", amount=5))


operations = st.lists(
    st.tuples(
        st.sampled_from(["credit", "promo", "reverse", "recredit", "spend", "time"]),
        st.integers(0, 5),
        st.integers(1, 1000),
    ),
    max_size=30,
)


def app_spend(wallet: Wallet, cost: int, now: datetime) -> Wallet | None:
    """The app's spend in miniature: unexpired lots by expiry, then paid; drops empty and expired lots."""
    remaining, lots = cost, []
    for item in wallet.lots:
        take = min(remaining, item.amount_remaining) if item.spendable(now) else 0
        remaining -= take
        if item.amount_remaining - take > 0 and item.spendable(now):
            lots.append(PromoLot(item.lot_id, item.amount_remaining - take, item.expires_at, item.source))
    if remaining > wallet.paid:
        return None
    kept = tuple(lots)
    return Wallet(paid=wallet.paid - remaining, lots=kept, promo_stored=sum(x.amount_remaining for x in kept))


@given(ops=operations, allow_negative=st.booleans())
def test_wallet_stays_the_sum_of_its_lots_and_no_lot_goes_negative(
    ops: list[tuple[str, int, int]], allow_negative: bool
) -> None:
    store = Store()
    now = NOW
    for op, n, amount in ops:
        if op == "time":
            now += timedelta(days=amount // 10)
            continue
        if op == "spend":
            spent = app_spend(store.wallets.get("u1") or Wallet(), amount, now)
            if spent is not None:
                store.wallets["u1"] = spent
            continue
        expiry = now + timedelta(days=1 + amount % 60)
        request = {
            "credit": credit(f"c{n}", amount=amount),
            "promo": credit(f"c{n}", amount=amount, kind="promo", expires_at=expiry),
            "reverse": reverse(f"c{n}"),
            "recredit": recredit(f"c{n}"),
        }
        before = store.wallets.get("u1") or Wallet()
        try:
            result = store.apply(request[op], allow_negative=allow_negative, now=now)
        except (EntryNotFoundError, LedgerConflictError, InvalidRequestError):
            continue
        wallet = store.wallets.get("u1") or Wallet()
        assert wallet.promo_stored == wallet.lots_sum
        assert all(x.amount_remaining >= 0 for x in wallet.lots)
        assert [x.expires_at for x in wallet.lots] == sorted(x.expires_at for x in wallet.lots)
        for outcome in result.outcomes:
            if not outcome.replayed:  # every point moved is in the entry: pre + delta = post
                entry = outcome.entry
                assert entry.pre == Points(before.paid, before.lots_sum)
                assert entry.post == Points(wallet.paid, wallet.lots_sum)
                assert entry.delta == Points(wallet.paid - before.paid, wallet.lots_sum - before.lots_sum)
                assert (
                    sum(m.amount for m in entry.consumed_lots) == -entry.delta.promo
                    if entry.delta.promo < 0
                    else True
                )
        if not allow_negative:
            assert wallet.paid >= 0


def gen(action: str, original: str, generation: int, uid: str = "u1") -> EntryRequest:
    if action == "reversal":
        entry_id = f"rev{generation}:{original}" if generation > 1 else f"rev:{original}"
        return EntryRequest(
            entry_id, uid, "reversal", None, "test", reversal_of=original, generation=generation
        )
    entry_id = f"recredit{generation}:{original}" if generation > 1 else f"recredit:{original}"
    return EntryRequest(entry_id, uid, "credit", None, "test", reversal_of=original, generation=generation)


def test_generations_alternate_reversal_and_recredit(store: Store) -> None:
    store.apply(credit("c1", amount=100, kind="promo", expires_at=SOON))
    with pytest.raises(EntryNotFoundError):  # reversal 2 needs re-credit 1
        store.apply(gen("reversal", "c1", 2))
    store.apply(gen("reversal", "c1", 1))
    store.apply(gen("credit", "c1", 1))
    second = store.apply(gen("reversal", "c1", 2)).outcomes[0].entry
    # The points live in re-credit 1's lot now: the second reversal takes them from there.
    assert (second.entry_id, second.amount) == ("rev2:c1", -100)
    assert second.consumed_lots == (LotMove("recredit:c1", 100, SOON),)
    third = store.apply(gen("credit", "c1", 2)).outcomes[0].entry
    assert (third.entry_id, third.credit_lot) == ("recredit2:c1", LotMove("recredit2:c1", 100, SOON))
    assert store.wallets["u1"].lots_sum == 100
    assert store.apply(gen("reversal", "c1", 2)).outcomes[0].replayed


@pytest.mark.parametrize(
    "request_",
    [
        EntryRequest("rev:c1", "u1", "reversal", None, "t", reversal_of="c1", generation=2),  # id says 1
        EntryRequest("rev2:c1", "u1", "reversal", None, "t", reversal_of="c1", generation=0),
        EntryRequest("c9", "u1", "credit", 5, "t", generation=2),  # a plain credit has no generation
        EntryRequest("recredit3:c1", "u1", "credit", None, "t", reversal_of="c1", generation=2),
    ],
)
def test_generation_mismatches_are_invalid(request_: EntryRequest) -> None:
    with pytest.raises(InvalidRequestError):
        read_set([request_])
