"""What `reconcile` can find, and what an operator does about each kind (docs/reconciliation.md).

A `Finding` names ids only (uid, event, order, entry) and a short detail of numbers and
statuses: no PII. Kinds are `drift` (something is wrong and counts toward the exit code
and `driftCount`) or `notice` (listed so nothing is hidden, but history rather than
damage: an entry of a shape we cannot read, the app's own reconciliation adjustments).
Only two kinds are repaired by `--fix`: `paid_drift` and `promo_drift`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PAID_DRIFT = "paid_drift"
PROMO_DRIFT = "promo_drift"
PROMO_LEDGER_DRIFT = "promo_ledger_drift"
NEGATIVE_LOT = "negative_lot"
UNREADABLE_LOT = "unreadable_lot"
WALLET_MISSING = "wallet_missing"
REVERSAL_DUPLICATE = "reversal_duplicate"
OVER_REVERSED = "over_reversed"
REVERSAL_WITHOUT_ORIGINAL = "reversal_without_original"
ENTRY_WITHOUT_EVENT = "entry_without_event"
EVENT_WITHOUT_ENTRIES = "event_without_entries"
ORDER_CREDIT_MISSING = "order_credit_missing"
ORDER_REVERSAL_MISSING = "order_reversal_missing"
REVERSAL_NOT_ON_ORDER = "reversal_not_on_order"
RECREDIT_NOT_ON_ORDER = "recredit_not_on_order"
ORDER_STATE_MISMATCH = "order_state_mismatch"
STALE_PARKED = "stale_parked"
PARKED_ON_CREDITED_ORDER = "parked_on_credited_order"
APP_UNFINISHED = "app_unfinished"
APP_QUEUED = "app_queued"
STRANDED_QUEUED = "stranded_queued"
DLQ_BACKLOG = "dlq_backlog"
UNKNOWN_ENTRY = "unknown_entry"
ENTRY_WITHOUT_BALANCES = "entry_without_balances"
APP_RECONCILIATION_ENTRY = "app_reconciliation_entry"

FIXABLE = frozenset({PAID_DRIFT, PROMO_DRIFT})
NOTICES = frozenset({UNKNOWN_ENTRY, ENTRY_WITHOUT_BALANCES, APP_RECONCILIATION_ENTRY})

# What an operator does about each kind: the reports print it beside the counts.
ACTIONS: dict[str, str] = {
    PAID_DRIFT: "`--fix` writes one `reconcile:{report}:{uid}:paid` entry so the ledger explains the "
    "wallet; then find who moved `paidBalance` without an entry (a hand edit, the app's reconciliation "
    "left on) and, if the points were not meant, take them back with an entry of your own.",
    PROMO_DRIFT: "`--fix` sets `promoBalance` to the sum of the lots (the app's spend fails with "
    "`Inconsistent promo balance` until then); nothing else changes.",
    PROMO_LEDGER_DRIFT: "The lots do not add up to the ledger's promo chain: a lot was edited, added or "
    "dropped by hand. Compare `promoLots` with the entries' `creditLot`/`consumedLots`; not fixed "
    "automatically (which lot is wrong is a human call).",
    NEGATIVE_LOT: "A lot below zero: no writer of ours or the app's makes one. Set it back from the "
    "entries that moved it, in the same write as `promoBalance`.",
    UNREADABLE_LOT: "A `promoLots` item without a numeric `amountRemaining` or a Timestamp `expiresAt`: "
    "kept as it is by every writer; repair it by hand from its credit entry.",
    WALLET_MISSING: "Ledger entries move points but the user has no wallet: restore "
    "`users/{uid}/wallet/points` from a backup or the ledger's last `post`.",
    REVERSAL_DUPLICATE: "An entry was reversed more often than it was re-credited (a refund applied twice, "
    "by hand or by a second writer): re-credit the extra reversal with an entry of its own.",
    OVER_REVERSED: "Reversals took back more than the credit gave: re-credit the difference.",
    REVERSAL_WITHOUT_ORIGINAL: "A reversal of ours names a credit that is not in the user's ledger: "
    "find the credit (another user? deleted?) before anything else.",
    ENTRY_WITHOUT_EVENT: "An entry of ours names a PayNow event that is missing, not processed or that "
    "does not list it, or names none (while events are kept): check the event in PayNow and whether "
    "the entry was written by hand.",
    EVENT_WITHOUT_ENTRIES: "A processed event's entries are missing from the ledger: the points were "
    "never there or were deleted; re-drive the event from PayNow after restoring its record, or credit "
    "by hand.",
    ORDER_CREDIT_MISSING: "`paynowOrders` lists a credit that is not in the user's ledger: its refunds "
    "would fail; check the order (migrated from the app?) and the entry.",
    ORDER_REVERSAL_MISSING: "The order counts a reversal whose entry is missing: the refund was recorded "
    "but its points never taken back; reverse by hand or restore the entry.",
    REVERSAL_NOT_ON_ORDER: "A reversal entry exists beyond what the order counts (a refund applied twice, "
    "or a reversal written by hand): re-credit it, or bring the order's `reversals` in line.",
    RECREDIT_NOT_ON_ORDER: "A re-credit exists that the order's state does not allow: check the order's "
    "refunds and disputes before taking it back.",
    ORDER_STATE_MISMATCH: "The order says it is reversed by a refund or dispute whose own status does not "
    "reverse (failed, canceled, won), or counts more reversals of an entry than of the order: compare "
    "its refunds and disputes with PayNow before changing anything.",
    STALE_PARKED: "A refund or dispute parked longer than PARK_MAX_HOURS: run `paynow-service sweep` "
    "(it dead-letters it as `order_not_credited`); then decide with the DLQ.",
    PARKED_ON_CREDITED_ORDER: "A refund or dispute waits on an order that is credited now (migrated): run "
    "`paynow-service sweep`, which queues it again for the worker.",
    APP_UNFINISHED: "The app's webhook may have credited part of this order before cut-over: compare its "
    "lines with the user's ledger and credit what is missing by hand.",
    APP_QUEUED: "The app recorded this event queued and never credited it: re-send it from PayNow (a new "
    "delivery is taken over by this service and credited once).",
    STRANDED_QUEUED: "An event recorded but not processed: `paynow-service sweep` publishes events never "
    "published; one published long ago and still queued points at the worker or the subscription.",
    DLQ_BACKLOG: "Dead letters are waiting: `paynow-service dlq list`, then `dlq replay` what can be "
    "processed now.",
    UNKNOWN_ENTRY: "An entry of a shape no reader knows: listed only, it counts toward no balance.",
    ENTRY_WITHOUT_BALANCES: "An entry of a known writer without `pre`/`post` balances: listed only.",
    APP_RECONCILIATION_ENTRY: "An adjustment by the app's own reconciliation (it rewrites `paidBalance`): "
    "make sure RECONCILIATION_ENABLED=0 on the app.",
}


@dataclass(frozen=True)
class Finding:
    kind: str
    uid: str = ""
    event_id: str = ""
    order_id: str = ""
    entry_id: str = ""
    detail: str = ""
    amount: int = 0  # the drift a fix moves (paid_drift: wallet minus ledger)
    fixed: bool = False

    @property
    def is_drift(self) -> bool:
        return self.kind not in NOTICES

    @property
    def fixable(self) -> bool:
        return self.kind in FIXABLE

    def to_map(self) -> dict[str, Any]:
        """The finding as the reports and `reconcileReports` store it (ids only)."""
        out: dict[str, Any] = {"kind": self.kind, "uid": self.uid}
        for name, value in (
            ("eventId", self.event_id),
            ("orderId", self.order_id),
            ("entryId", self.entry_id),
        ):
            if value:
                out[name] = value
        out.update(detail=self.detail, fixed=self.fixed)
        return out

    @classmethod
    def from_map(cls, data: dict[str, Any]) -> Finding:
        return cls(
            kind=str(data.get("kind", "")),
            uid=str(data.get("uid", "")),
            event_id=str(data.get("eventId", "")),
            order_id=str(data.get("orderId", "")),
            entry_id=str(data.get("entryId", "")),
            detail=str(data.get("detail", "")),
            fixed=bool(data.get("fixed")),
        )
