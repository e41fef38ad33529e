"""One run of `migrate orders`: its options, the users it has seen, its counts (no I/O).

What the app's entries say about its orders is domain/app_orders.py, what the run writes
for each is domain/migrated_orders.py; the scan and the writes are the adapter's
(adapters/app_ledger_scan.py), the output the entry point's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time

from paynow_service.domain.app_orders import (
    AppCredit,
    AppReversal,
    OrderCandidate,
    read_order_entry,
    user_orders,
)
from paynow_service.domain.migrated_orders import Verdict, classify, order_document

# What entrypoints/migrate_cli.py takes from here, wherever it lives.
__all__ = [
    "AppCredit",
    "AppReversal",
    "OrderCandidate",
    "SeenOrders",
    "Tally",
    "UserEntries",
    "Verdict",
    "classify",
    "order_document",
    "parse_since",
    "passes_since",
    "read_order_entry",
    "user_orders",
]

# Order ids remembered per run to spot one order credited under two users (see SeenOrders).
SEEN_ORDERS_CAP = 1_000_000
SINCE_FORMAT = "YYYY-MM-DD or ISO 8601 with an offset (2026-01-31T00:00:00+00:00)"


def parse_since(text: str) -> datetime:
    """`--since`: a date (midnight UTC) or an ISO 8601 time with its offset; ValueError otherwise."""
    try:
        if len(text) == len("YYYY-MM-DD"):
            return datetime.combine(datetime.strptime(text, "%Y-%m-%d").date(), time(), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: expected {SINCE_FORMAT}") from None
    if moment.tzinfo is None:
        raise ValueError(f"--since {text!r} has no offset: expected {SINCE_FORMAT}")
    return moment


def passes_since(candidate: OrderCandidate, since: datetime | None) -> bool:
    """Without --since every order counts; with it, those whose latest credit is at or after it
    (an order without any timestamp counts as older than any date)."""
    if since is None:
        return True
    latest = candidate.latest_at
    return latest is not None and latest >= since


@dataclass
class SeenOrders:
    """The first uid seen for each order id in this run, up to `cap` ids: the only way to spot one order
    under two users while reading one user at a time. Past the cap, new ids are not remembered and only
    the check against the existing `paynowOrders` document catches it."""

    cap: int = SEEN_ORDERS_CAP
    _first_uid: dict[str, str] = field(default_factory=dict)

    def other_uid(self, order_id: str, uid: str) -> str:
        """The uid the order was first seen under, when it is not `uid` ("" otherwise); remembers it."""
        first = self._first_uid.get(order_id)
        if first is None:
            if len(self._first_uid) < self.cap:
                self._first_uid[order_id] = uid
            return ""
        return first if first != uid else ""


@dataclass
class UserEntries:
    """One user's order entries, gathered while the scan is on that user."""

    uid: str
    credits: list[AppCredit] = field(default_factory=list)
    reversals: list[AppReversal] = field(default_factory=list)

    def add(self, item: AppCredit | AppReversal) -> None:
        if isinstance(item, AppCredit):
            self.credits.append(item)
        else:
            self.reversals.append(item)

    def orders(self) -> list[OrderCandidate]:
        return user_orders(self.credits, self.reversals)


@dataclass
class Tally:
    """The run's counts, for the progress lines and the summary."""

    apply: bool
    entries: int = 0  # ledger entries scanned under users/{uid}/ledger
    users: int = 0
    not_order_entries: int = 0
    older: int = 0  # orders before --since
    found: int = 0  # orders per user: one credited under two users counts once for each
    written: int = 0
    skipped: int = 0
    ambiguous: int = 0
    parked: int = 0  # orders written over parked refunds or disputes

    def count(self, verdict: Verdict) -> None:
        if verdict.action == "write":
            self.written += 1
            self.parked += int(verdict.parked > 0)
        elif verdict.action == "skip":
            self.skipped += 1
        else:
            self.ambiguous += 1

    def progress(self) -> str:
        return f"scanned {self.entries} entries, {self.users} users, {self.found} orders found"

    def summary(self, since: datetime | None) -> str:
        verb = "written" if self.apply else "would write"
        parts = [
            f"orders found {self.found}, {verb} {self.written}, skipped {self.skipped}, "
            f"ambiguous {self.ambiguous}"
        ]
        if self.parked:
            has = "order has" if self.parked == 1 else "orders have"
            when = "now that the order is credited" if self.apply else "once the order is credited"
            sweep = f"`paynow-service sweep` publishes them {when}"
            parts.append(f"{self.parked} {has} parked refunds or disputes: {sweep}")
        if since is not None:
            parts.append(f"orders before {since.isoformat()} {self.older}")
        parts.append(
            f"entries scanned {self.entries} ({self.users} users), not order entries {self.not_order_entries}"
        )
        return "; ".join(parts)
