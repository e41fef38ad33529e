"""One wallet against its ledger, per kind (SPEC section 5), and the entry that repairs paid drift.

Every entry is read with the tolerant reader (domain/ledger_reader.py), whoever wrote it:
- entries with `pre`/`post` maps count by `post - pre`, per kind (a spend's promo drop beyond
  its `consumedLots` is expiry: it left the lots too, so it is counted, never doubled);
- the app's wallet-ledger entries count by signed `amount` when `posted` (paid);
- everything else is listed (a notice), never counted and never a failure.
The paid sum must be `paidBalance`; the promo sum must be the lots' sum, and `promoBalance`
the lots' sum too. Reversals are grouped by the credit they undo: more reversals than
re-credits plus one is a refund applied twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from paynow_service.domain import reconcile_findings as rf
from paynow_service.domain.ledger import PAYNOW_NAMESPACE, LedgerEntry, Points, Wallet
from paynow_service.domain.ledger_reader import as_int, read_entry, read_wallet
from paynow_service.domain.reconcile_findings import Finding

ACTION_RECONCILE = "reconcile"
CREATED_BY = "paynow-service:reconcile"


def paid_fix_entry_id(report_id: str, uid: str) -> str:
    """The idempotency key of a report's paid fix for one user."""
    return f"reconcile:{report_id}:{uid}:paid"


@dataclass(frozen=True)
class UserDocs:
    """One user's wallet document (None: none) and every entry of their ledger, as stored."""

    uid: str
    wallet: dict[str, Any] | None
    entries: list[tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class FixOutcome:
    paid_fixed: bool = False  # the paid entry was written by this fix
    promo_fixed: bool = False  # promoBalance was set to the lots' sum by this fix


@dataclass(frozen=True)
class EventRef:
    """An entry of ours that names the PayNow event that wrote it."""

    entry_id: str
    event_id: str
    created_at: datetime


@dataclass
class WalletAudit:
    uid: str
    wallet: Wallet | None
    ledger: Points = field(default_factory=Points)  # what the entries add up to, per kind
    entries: int = 0
    findings: list[Finding] = field(default_factory=list)
    event_refs: list[EventRef] = field(default_factory=list)
    has_fix: set[str] = field(default_factory=set)  # reconcile entries already written (ids)

    @property
    def paid_drift(self) -> int:
        """paidBalance minus the ledger's paid sum (0 without a wallet)."""
        return self.wallet.paid - self.ledger.paid if self.wallet is not None else 0

    @property
    def promo_drift(self) -> int:
        """The lots' sum minus the stored promoBalance (0 without a wallet)."""
        return self.wallet.lots_sum - self.wallet.promo_stored if self.wallet is not None else 0


def audit_wallet(
    uid: str, wallet_doc: Mapping[str, Any] | None, entries: Iterable[tuple[str, Mapping[str, Any]]]
) -> WalletAudit:
    """The findings of one user: balances per kind, lots, reversals; never raises on any shape."""
    wallet = read_wallet(wallet_doc)
    if wallet is not None and wallet_doc is not None and as_int(wallet_doc.get("promoBalance")) is None:
        wallet = replace(wallet, promo_stored=0)  # missing or not a number: the app's spend reads 0
    audit = WalletAudit(uid, wallet)
    paid = promo = 0
    read: list[LedgerEntry] = []
    for entry_id, data in entries:
        entry = read_entry(uid, entry_id, data)
        read.append(entry)
        audit.entries += 1
        if entry.action == ACTION_RECONCILE:
            audit.has_fix.add(entry_id)
        if entry.pre is not None and entry.post is not None:
            paid += entry.post.paid - entry.pre.paid
            promo += entry.post.promo - entry.pre.promo
        elif entry.shape == "app_wallet_ledger":
            paid += entry.amount if entry.status == "posted" else 0
        else:
            audit.findings.append(_notice(entry))
        if entry.shape == "service":
            _event_ref(audit, entry)
    audit.ledger = Points(paid=paid, promo=promo)
    audit.findings.extend(_balances(audit))
    audit.findings.extend(reversal_findings(uid, read))
    return audit


def _event_ref(audit: WalletAudit, entry: LedgerEntry) -> None:
    """Remember the event an entry of ours names; one of a PayNow event that names none is a finding."""
    event_id = entry.metadata.get("eventId")
    if isinstance(event_id, str) and event_id:
        audit.event_refs.append(EventRef(entry.entry_id, event_id, entry.created_at))
        return
    original = _undone(entry, "reversalOf", "rev") or _undone(entry, "recreditOf", "recredit")
    if entry.entry_id.startswith(PAYNOW_NAMESPACE) or original.startswith(PAYNOW_NAMESPACE):
        detail = "an entry of a PayNow event that names no event"
        audit.findings.append(
            Finding(rf.ENTRY_WITHOUT_EVENT, uid=audit.uid, entry_id=entry.entry_id, detail=detail)
        )


def _notice(entry: LedgerEntry) -> Finding:
    if entry.shape == "unknown":
        kind, what = rf.UNKNOWN_ENTRY, "an entry of no known shape"
    elif entry.shape == "app_reconcile":
        kind, what = rf.APP_RECONCILIATION_ENTRY, f"the app's reconciliation moved {entry.amount}"
    else:
        kind, what = rf.ENTRY_WITHOUT_BALANCES, f"a {entry.shape} entry without pre/post balances"
    return Finding(kind, uid=entry.uid, entry_id=entry.entry_id, detail=what)


def _balances(audit: WalletAudit) -> list[Finding]:
    uid, wallet, ledger = audit.uid, audit.wallet, audit.ledger
    if wallet is None:
        if ledger != Points():
            detail = f"no wallet; the ledger adds up to paid {ledger.paid} promo {ledger.promo}"
            return [Finding(rf.WALLET_MISSING, uid=uid, detail=detail)]
        return []
    found: list[Finding] = []
    if audit.promo_drift:
        detail = f"promoBalance {wallet.promo_stored}, lots add up to {wallet.lots_sum}"
        found.append(Finding(rf.PROMO_DRIFT, uid=uid, detail=detail, amount=audit.promo_drift))
    if audit.paid_drift:
        detail = f"paidBalance {wallet.paid}, ledger adds up to {ledger.paid} (drift {audit.paid_drift:+d})"
        found.append(Finding(rf.PAID_DRIFT, uid=uid, detail=detail, amount=audit.paid_drift))
    if wallet.lots_sum != ledger.promo:
        detail = f"lots add up to {wallet.lots_sum}, the ledger's promo chain to {ledger.promo}"
        found.append(Finding(rf.PROMO_LEDGER_DRIFT, uid=uid, detail=detail))
    for lot in wallet.lots:
        if lot.amount_remaining < 0:
            detail = f"lot amountRemaining {lot.amount_remaining}"
            found.append(Finding(rf.NEGATIVE_LOT, uid=uid, entry_id=lot.lot_id, detail=detail))
    if wallet.foreign_lots:
        detail = f"{len(wallet.foreign_lots)} promoLots item(s) without a number and an expiry"
        found.append(Finding(rf.UNREADABLE_LOT, uid=uid, detail=detail))
    return found


def _undone(entry: LedgerEntry, key: str, prefix: str) -> str:
    """The entry id `entry` reverses (key reversalOf) or re-credits (key recreditOf), else ""."""
    named = entry.metadata.get(key)
    if isinstance(named, str) and named:
        return named
    head, sep, rest = entry.entry_id.partition(":")
    if sep and head.startswith(prefix) and (head == prefix or head[len(prefix) :].isdigit()):
        return rest
    return ""


def reversal_findings(uid: str, entries: Iterable[LedgerEntry]) -> list[Finding]:
    """Each credit's reversals against its re-credits: at most one more reversal than re-credits,
    and never more points taken back than given."""
    by_id = {e.entry_id: e for e in entries}
    reversals: dict[str, list[LedgerEntry]] = {}
    recredits: dict[str, list[LedgerEntry]] = {}
    for entry in by_id.values():
        if entry.shape == "app_wallet_ledger" and entry.status != "posted":
            continue
        if entry.amount < 0 and (original := _undone(entry, "reversalOf", "rev")):
            reversals.setdefault(original, []).append(entry)
        elif entry.amount > 0 and (original := _undone(entry, "recreditOf", "recredit")):
            recredits.setdefault(original, []).append(entry)
    found: list[Finding] = []
    for original, taken in sorted(reversals.items()):
        given = recredits.get(original, [])
        credit = by_id.get(original)
        ids = ",".join(sorted(e.entry_id for e in taken))
        if len(taken) - len(given) > 1:
            detail = f"{len(taken)} reversals ({ids}) but {len(given)} re-credit(s)"
            found.append(Finding(rf.REVERSAL_DUPLICATE, uid=uid, entry_id=original, detail=detail))
        if credit is None:
            if any(e.shape == "service" for e in taken) and original.startswith(PAYNOW_NAMESPACE):
                detail = f"reversed by {ids}, not in this ledger"
                found.append(Finding(rf.REVERSAL_WITHOUT_ORIGINAL, uid=uid, entry_id=original, detail=detail))
            continue
        net = -sum(e.amount for e in taken) - sum(e.amount for e in given)
        if credit.amount > 0 and net > credit.amount:
            detail = f"credited {credit.amount}, reversals net of re-credits took {net}"
            found.append(Finding(rf.OVER_REVERSED, uid=uid, entry_id=original, detail=detail))
    return found


def paid_fix_entry(audit: WalletAudit, report_id: str, now: datetime) -> LedgerEntry | None:
    """The entry that makes the ledger's paid chain end at `paidBalance`: it moves the paid chain by
    the drift (pre = the chain's end, post = the wallet); the wallet's balances stay what users see
    and spend. None when there is no paid drift or no wallet."""
    wallet, drift = audit.wallet, audit.paid_drift
    if wallet is None or drift == 0:
        return None
    entry_id = paid_fix_entry_id(report_id, audit.uid)
    promo = wallet.lots_sum
    return LedgerEntry(
        entry_id=entry_id,
        uid=audit.uid,
        amount=drift,
        type="credit" if drift > 0 else "debit",
        channel="paid",
        action=ACTION_RECONCILE,
        source=ACTION_RECONCILE,
        metadata={"reportId": report_id, "walletPaid": wallet.paid, "ledgerPaid": audit.ledger.paid},
        created_at=now,
        created_by=CREATED_BY,
        pre=Points(paid=wallet.paid - drift, promo=promo),
        post=Points(paid=wallet.paid, promo=promo),
        delta=Points(paid=drift),
        note=f"reconcile {report_id}",
    )
