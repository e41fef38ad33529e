"""The tolerant reader: every ledger shape of the shared collection, and garbage, read without failing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paynow_service.domain.ledger import Points
from paynow_service.domain.ledger_reader import EPOCH, read_entry, read_wallet
from tests.support.ledger_shapes import reference_entries

NOW = datetime(2026, 12, 1, tzinfo=UTC)
SHAPES = reference_entries(NOW)


def read(entry_id: str):  # type: ignore[no-untyped-def]
    return read_entry("u1", entry_id, SHAPES[entry_id])


@pytest.mark.parametrize(
    ("entry_id", "shape", "amount", "entry_type", "channel"),
    [
        ("app-credit-1", "app_points", 40, "credit", "promo"),
        ("app-spend-1", "app_points", -15, "debit", "promo"),
        ("wl-purchase", "app_wallet_ledger", 500, "credit", "paid"),
        ("wl-refund", "app_wallet_ledger", -500, "debit", "paid"),
        ("wl-hold", "app_wallet_ledger", 100, "credit", "promo"),
        ("412345678901234567", "app_queue_worker", 250, "credit", "paid"),
        ("reconcile-1", "app_reconcile", -30, "debit", "paid"),
        ("paynow:order:o-old:line:l1", "service_v0", 250, "credit", "promo"),
        ("garbage-typed", "unknown", 0, "", ""),
        ("garbage-empty", "unknown", 0, "", ""),
    ],
)
def test_every_shape_is_recognised_with_its_signed_amount(
    entry_id: str, shape: str, amount: int, entry_type: str, channel: str
) -> None:
    entry = read(entry_id)
    assert (entry.shape, entry.amount, entry.type, entry.channel) == (shape, amount, entry_type, channel)


def test_the_apps_points_entries_keep_their_maps_and_lots() -> None:
    spend = read("app-spend-1")
    assert (spend.pre, spend.post, spend.delta) == (Points(0, 40), Points(0, 25), None)
    assert [(m.lot_id, m.amount) for m in spend.consumed_lots] == [("3f1c9a2e-uuid", 15)]
    credit = read("app-credit-1")
    assert credit.credit_lot is not None
    assert credit.credit_lot.lot_id == "3f1c9a2e-uuid"
    assert credit.is_credit
    assert not credit.is_reversal


def test_wallet_ledger_entries_keep_status_and_the_ids_of_their_source() -> None:
    entry = read("wl-purchase")
    assert entry.status == "posted"
    assert entry.metadata["eventId"] == "411111111111111111"
    assert entry.metadata["orderId"] == "ABC-123"
    assert read("wl-reversed").status == "reversed"
    assert read("reconcile-1").source == "drift"


def test_old_entries_of_this_service_read_their_integer_balances_by_kind() -> None:
    entry = read("paynow:order:o-old:line:l1")
    assert (entry.pre, entry.post, entry.kind) == (Points(0, 0), Points(0, 250), "promo")


def test_garbage_is_listed_with_what_it_has() -> None:
    entry = read("garbage-typed")
    assert entry.created_at == EPOCH
    assert (entry.pre, entry.delta, entry.consumed_lots, entry.metadata) == (None, None, (), {})
    assert entry.unread["amount"] == "lots"
    assert entry.unread["createdAt"] == "yesterday"
    assert entry.unread["weird"] == {"nested": [1, {"x": None}]}
    assert read("garbage-empty").unread == {}


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=5)
    | st.datetimes(timezones=st.just(UTC)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["amount", "type", "channel", "kind", "action", "pre", "post", "delta", "creditLot", "consumedLots",
          "source", "metadata", "createdAt", "status", "note", "balanceAfter"]  # fmt: skip


@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), values, max_size=8))
def test_the_reader_never_fails(data: dict[str, object]) -> None:
    entry = read_entry("u1", "e1", data)
    assert isinstance(entry.amount, int)
    assert entry.type in ("credit", "debit", "")


@given(st.dictionaries(st.sampled_from(["paidBalance", "promoBalance", "promoLots", "updatedAt"]), values))
def test_the_wallet_reader_never_fails_and_keeps_unreadable_lots(data: dict[str, object]) -> None:
    wallet = read_wallet(data)
    assert wallet is not None
    raw_lots = data.get("promoLots")
    if isinstance(raw_lots, list):
        assert len(wallet.lots) + len(wallet.foreign_lots) == len(raw_lots)


def test_a_wallet_written_by_the_app_reads_its_lots_by_expiry() -> None:
    soon, late = NOW + timedelta(days=1), NOW + timedelta(days=9)
    wallet = read_wallet(
        {
            "paidBalance": 10,
            "promoBalance": 12,
            "promoLots": [
                {"id": "b", "amountRemaining": 5, "expiresAt": late, "source": "x"},
                {"id": "a", "amountRemaining": 7, "expiresAt": soon, "source": "y"},
                {"id": "broken", "amountRemaining": 3},
            ],
        }
    )
    assert wallet is not None
    assert [lot.lot_id for lot in wallet.lots] == ["a", "b"]
    assert wallet.foreign_lots == ({"id": "broken", "amountRemaining": 3},)
    assert (wallet.promo_stored, wallet.lots_sum) == (12, 15)
    assert wallet.balance(NOW + timedelta(days=2)).promo == 5
