"""A wallet and its ledger checked in the model of the app that spends the points.

The app and this service write the same wallets and ledgers (SPEC section 5). Whatever
wrote them, a wallet is sound when:
- `promoBalance` is the sum of its lots' `amountRemaining`, and no lot is negative or unreadable;
- per kind, the entries that carry `pre`/`post` maps add up (`post - pre`) to the wallet, with
  the app's wallet-ledger entries counted by signed `amount` when `posted`;
- those entries form one serial chain from an empty wallet: each `pre` is the last `post`;
- an entry of ours moves exactly its `delta` and its lots, and never drops a lot;
- a promo drop by the app's spend beyond the lots it consumed (`pre.promo - post.promo -
  Σ consumedLots`) is expiry: counted, never negative.
Entries are read with the service's own tolerant reader, as every reader of ours does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from paynow_service.domain.ledger import LedgerEntry, Points
from paynow_service.domain.ledger_reader import read_entry, read_wallet


@dataclass
class WalletAudit:
    uid: str
    problems: list[str] = field(default_factory=list)
    total: int = 0  # paid + promoBalance
    spent: int = 0  # points the app's spends took (their amounts)
    expired: int = 0  # promo points the app's spends dropped as expired
    entries: int = 0


def _diff(a: Points, b: Points) -> Points:
    return Points(a.paid - b.paid, a.promo - b.promo)


def audit_wallet(
    uid: str, wallet_doc: Mapping[str, Any] | None, ledger: Mapping[str, Mapping[str, Any]]
) -> WalletAudit:
    audit = WalletAudit(uid)
    wallet = read_wallet(wallet_doc)
    entries = [read_entry(uid, entry_id, data) for entry_id, data in ledger.items()]
    audit.entries = len(entries)
    if wallet is None:
        if entries:
            audit.problems.append(f"{uid}: {len(entries)} ledger entries but no wallet")
        return audit
    audit.total = wallet.paid + wallet.promo_stored
    if wallet.promo_stored != wallet.lots_sum:
        audit.problems.append(f"{uid}: promoBalance {wallet.promo_stored} != lots' sum {wallet.lots_sum}")
    if wallet.foreign_lots:
        audit.problems.append(f"{uid}: unreadable lots {list(wallet.foreign_lots)[:3]}")
    negative = [lot.lot_id for lot in wallet.lots if lot.amount_remaining < 0]
    if negative:
        audit.problems.append(f"{uid}: negative lots {negative}")
    paid = promo = 0
    mapped: list[LedgerEntry] = []
    for entry in entries:
        if entry.pre is not None and entry.post is not None:
            mapped.append(entry)
            change = _diff(entry.post, entry.pre)
            paid, promo = paid + change.paid, promo + change.promo
            _check_entry(audit, entry, change)
        elif entry.shape == "app_wallet_ledger" and entry.status == "posted":
            paid += entry.amount
        elif entry.shape != "unknown":
            audit.problems.append(f"{uid}/{entry.entry_id}: a {entry.shape} entry without pre/post balances")
    if (paid, promo) != (wallet.paid, wallet.promo_stored):
        audit.problems.append(
            f"{uid}: wallet paid {wallet.paid} promo {wallet.promo_stored},"
            f" entries add up to paid {paid} promo {promo}"
        )
    broken = _chain(mapped)
    if broken:
        audit.problems.append(f"{uid}: {broken}")
    return audit


def _check_entry(audit: WalletAudit, entry: LedgerEntry, change: Points) -> None:
    where = f"{audit.uid}/{entry.entry_id}"
    consumed = sum(move.amount for move in entry.consumed_lots)
    if entry.type == "debit" and entry.shape == "app_points":
        audit.spent += -entry.amount
        dropped = -change.promo - consumed
        if dropped < 0:
            audit.problems.append(f"{where}: promo fell by {-change.promo} but {consumed} came from lots")
        audit.expired += max(dropped, 0)
        if change.total + dropped != entry.amount:
            audit.problems.append(f"{where}: a spend of {-entry.amount} moved {-(change.total + dropped)}")
    if entry.shape != "service":
        return
    if entry.delta != change:
        audit.problems.append(f"{where}: delta {entry.delta} but post - pre is {change}")
    if entry.amount != change.total:
        audit.problems.append(f"{where}: amount {entry.amount} but it moved {change.total}")
    if change.promo < 0 and consumed != -change.promo:
        audit.problems.append(f"{where}: took {-change.promo} promo but lists {consumed} from lots")
    if change.promo > 0 and (entry.credit_lot is None or entry.credit_lot.amount != change.promo):
        audit.problems.append(f"{where}: added {change.promo} promo without a lot of that amount")


def _chain(entries: list[LedgerEntry]) -> str:
    """'' when the entries form one chain pre -> post from an empty wallet, else what breaks it."""
    remaining = sorted(entries, key=lambda e: (e.created_at, e.entry_id))
    current = Points()
    while remaining:
        nxt = next((e for e in remaining if e.pre == current), None)
        if nxt is None:
            return f"no entry continues from {current} ({len(remaining)} left, e.g. {remaining[0].entry_id})"
        assert nxt.post is not None
        current = nxt.post
        remaining.remove(nxt)
    return ""
