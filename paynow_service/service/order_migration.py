"""Orders the app credited before cut-over, as `paynowOrders` documents (pure: no I/O).

Refunds and chargebacks name only the PayNow order id; they find what to reverse in
`paynowOrders/{order_id}`. The app credited orders without writing one, so
`paynow-service migrate orders` builds them from the app's own ledger entries. This
module decides, per order, what the command does; the scan and the writes are the
adapter's (adapters/app_ledger_scan.py), the output the entry point's.

Which of the app's entries credited an order (read with the one tolerant reader,
domain/ledger_reader.py `read_entry`):
- its wallet-ledger service (the app's sync webhook): `kind` purchase, or promo_credit
  naming an order, with `source.eventId` the PayNow order id and `source.orderId` its
  pretty id when it has one. Only `posted` entries count, and they change in place;
- its queue worker: `action: "credit"` with `pre`/`post` maps, id = the PayNow event id,
  `metadata.orderId` the PayNow order id. Assumption: the app's publisher put
  `data.order.id` (not the pretty id) in the message the worker copied it from.
Every other shape is not an order credit. The app's points-service entries are not
migrated, its subscription top-ups (action ids `{orderId}_first_cycle_{productId}`)
included: those are subscription credits, not the order's lines.

An order is written only when nothing about it needs a human (see `own_problem` and
`classify`): then a refund or chargeback reverses exactly what the app credited for it,
with `rev:{appEntryId}` entries against the app's own entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any, Literal

from paynow_service.domain.errors import InvalidRequestError
from paynow_service.domain.ledger import PAYNOW_NAMESPACE, LedgerEntry
from paynow_service.domain.ledger_reader import EPOCH, read_entry
from paynow_service.domain.ledger_rules import validate_entry_id
from paynow_service.hookspecs import CreditedEntry
from paynow_service.service.order_disputes import OrderRecord, order_fields

MIGRATED_FROM = "app"
# Wallet-ledger kinds that credit an order's points, and those that take an order back.
ORDER_CREDIT_KINDS = frozenset({"purchase", "promo_credit"})
ORDER_REVERSAL_KINDS = frozenset({"refund", "chargeback"})
# Order ids remembered per run to spot one order credited under two users (see SeenOrders).
SEEN_ORDERS_CAP = 1_000_000
SINCE_FORMAT = "YYYY-MM-DD or ISO 8601 with an offset (2026-01-31T00:00:00+00:00)"

Action = Literal["write", "skip", "ambiguous"]


@dataclass(frozen=True)
class AppCredit:
    """One of the app's ledger entries that credited (a line of) an order."""

    uid: str
    entry_id: str
    order_id: str
    points: int
    shape: str  # app_wallet_ledger or app_queue_worker (read_entry's name)
    status: str = "posted"  # the wallet-ledger's status; the queue worker's entries have none
    amount_problem: str = ""  # why the amount cannot be a credit ("" when it is a positive integer)
    product_id: str = ""
    customer_id: str = ""
    pretty_id: str = ""  # the app's `source.orderId` when it differs from the PayNow order id
    created_at: datetime | None = None  # None: the entry carries no timestamp


@dataclass(frozen=True)
class AppReversal:
    """A refund or chargeback in the app's wallet-ledger: the app took (part of) an order back itself."""

    entry_id: str
    kind: str
    order_id: str = ""  # source.eventId, when it says
    reversal_of: str = ""  # source.reversalOf, when it says


@dataclass(frozen=True)
class OrderCandidate:
    """One order as one user's entries show it."""

    order_id: str
    uid: str
    credits: tuple[AppCredit, ...]
    reversals: tuple[AppReversal, ...] = ()

    @property
    def entry_ids(self) -> list[str]:
        return [credit.entry_id for credit in self.credits]

    @property
    def points(self) -> int:
        return sum(credit.points for credit in self.credits)

    @property
    def latest_at(self) -> datetime | None:
        times = [credit.created_at for credit in self.credits if credit.created_at is not None]
        return max(times, default=None)

    @property
    def customer_id(self) -> str:
        return next((c.customer_id for c in self.credits if c.customer_id), "")

    @property
    def pretty_id(self) -> str:
        return next((c.pretty_id for c in self.credits if c.pretty_id), "")


@dataclass(frozen=True)
class Verdict:
    """What the migration does with one order."""

    action: Action
    reason: str = ""
    merge: bool = False  # the document exists without a uid (parked events): merged so they stay
    parked: int = 0  # refunds and disputes parked on it, published by `sweep` once it is credited


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


def read_order_entry(uid: str, entry_id: str, data: Mapping[str, Any]) -> AppCredit | AppReversal | None:
    """The entry as an order credit or an order reversal of the app; None for anything else."""
    entry = read_entry(uid, entry_id, data)
    if entry.shape == "app_wallet_ledger":
        return _wallet_ledger_entry(entry)
    if entry.shape == "app_queue_worker":
        return _queue_worker_credit(entry)
    return None


def _wallet_ledger_entry(entry: LedgerEntry) -> AppCredit | AppReversal | None:
    kind = entry.action  # read_entry's `action` is the wallet-ledger's `kind` (it has no action of its own)
    source = entry.metadata  # the wallet-ledger's `source` ids
    order_id = _id(source.get("eventId"))
    if kind in ORDER_REVERSAL_KINDS:
        return AppReversal(entry.entry_id, kind, order_id, _id(source.get("reversalOf")))
    if kind not in ORDER_CREDIT_KINDS or not order_id:
        return None  # a promo credit without an order, an adjustment, a subscription renewal
    pretty = _id(source.get("orderId"))
    return AppCredit(
        uid=entry.uid,
        entry_id=entry.entry_id,
        order_id=order_id,
        points=entry.amount,
        shape=entry.shape,
        status=entry.status,
        amount_problem=_amount_problem(entry),
        product_id=_id(source.get("productId")),
        customer_id=_id(source.get("paynowCustomerId")),
        pretty_id=pretty if pretty != order_id else "",
        created_at=_time(entry),
    )


def _queue_worker_credit(entry: LedgerEntry) -> AppCredit | None:
    order_id = _id(entry.metadata.get("orderId"))
    if not order_id:
        return None
    return AppCredit(
        uid=entry.uid,
        entry_id=entry.entry_id,
        order_id=order_id,
        points=entry.amount,
        shape=entry.shape,
        status="posted",  # the queue worker's entries have no status: written once, never changed
        amount_problem=_amount_problem(entry),
        product_id=_id(entry.metadata.get("productId")),
        created_at=_time(entry),
    )


def _amount_problem(entry: LedgerEntry) -> str:
    # read_entry keeps an amount it cannot read as an integer in `unread` and counts it as 0.
    if "amount" in entry.unread:
        return f"amount of entry {entry.entry_id} is not an integer"
    if entry.amount <= 0:
        return f"amount of entry {entry.entry_id} is {entry.amount}, not positive"
    return ""


def _time(entry: LedgerEntry) -> datetime | None:
    return None if entry.created_at == EPOCH else entry.created_at  # EPOCH: no readable timestamp


def _id(value: object) -> str:
    if isinstance(value, bool):
        return ""
    return str(value) if isinstance(value, str | int) else ""


def user_orders(credits: Iterable[AppCredit], reversals: Iterable[AppReversal]) -> list[OrderCandidate]:
    """One user's order credits grouped by order id, each with the app's reversals of it; by order id."""
    by_order: dict[str, list[AppCredit]] = {}
    for credit in credits:
        by_order.setdefault(credit.order_id, []).append(credit)
    reversal_list = list(reversals)
    candidates = []
    for order_id in sorted(by_order):
        lines = sorted(by_order[order_id], key=lambda c: (c.created_at or EPOCH, c.entry_id))
        ids = {line.entry_id for line in lines}
        own = tuple(r for r in reversal_list if r.order_id == order_id or r.reversal_of in ids)
        candidates.append(OrderCandidate(order_id, lines[0].uid, tuple(lines), own))
    return candidates


def passes_since(candidate: OrderCandidate, since: datetime | None) -> bool:
    """Without --since every order counts; with it, those whose latest credit is at or after it
    (an order without any timestamp counts as older than any date)."""
    if since is None:
        return True
    latest = candidate.latest_at
    return latest is not None and latest >= since


def own_problem(candidate: OrderCandidate, other_uid: str = "") -> str:
    """Why the app's entries of the order need a human ("" when they do not)."""
    where = f"uid={candidate.uid}"
    try:
        validate_entry_id(candidate.order_id, "order id")
    except InvalidRequestError as err:
        return f"{where}: {err}"
    if other_uid and other_uid != candidate.uid:
        return f"{where}: the order is also credited under uid={other_uid}"
    for credit in candidate.credits:
        if credit.status != "posted":
            return f"{where}: entry {credit.entry_id} is {credit.status or 'without status'}, not posted"
    if candidate.reversals:
        reversal = candidate.reversals[0]
        return f"{where}: the app recorded a {reversal.kind} of it (entry {reversal.entry_id})"
    for credit in candidate.credits:
        if credit.amount_problem:
            return f"{where}: {credit.amount_problem}"
    if len({credit.shape for credit in candidate.credits}) > 1 or _queue_worker_credits(candidate) > 1:
        # One order is one ORDER_COMPLETED event: credited by both of the app's paths, or by two
        # events of its queue worker, it was credited twice, and reversing both is not obviously right.
        return f"{where}: the app credited it more than once (entries {', '.join(candidate.entry_ids)})"
    return ""


def _queue_worker_credits(candidate: OrderCandidate) -> int:
    return sum(1 for credit in candidate.credits if credit.shape == "app_queue_worker")


def classify(
    candidate: OrderCandidate, existing: Mapping[str, Any] | None, *, other_uid: str = ""
) -> Verdict:
    """What to do with the order, given its `paynowOrders` document as it is now (None: missing).
    The write path calls it again inside the order's transaction with the document it read there."""
    problem = own_problem(candidate, other_uid)
    if problem:
        return Verdict("ambiguous", problem)
    if existing is None:
        return Verdict("write")
    entry_ids = [str(e) for e in existing.get("entryIds") or []]
    if any(entry_id.startswith(PAYNOW_NAMESPACE) for entry_id in entry_ids):
        return Verdict("skip", "credited by this service")
    uid = existing.get("uid")
    if uid and uid != candidate.uid:
        return Verdict("ambiguous", f"uid={candidate.uid}: paynowOrders names uid={uid}")
    if uid:
        if sorted(entry_ids) == sorted(candidate.entry_ids) and existing.get("points") == candidate.points:
            return Verdict("skip", "already migrated")
        return Verdict(
            "ambiguous",
            f"uid={candidate.uid}: paynowOrders holds entries={len(entry_ids)} "
            f"points={existing.get('points')}, the app's entries say "
            f"entries={len(candidate.credits)} points={candidate.points}",
        )
    parked = existing.get("parked")
    return Verdict("write", merge=True, parked=len(parked) if isinstance(parked, Mapping) else 0)


def order_document(candidate: OrderCandidate) -> dict[str, Any]:
    """The `paynowOrders/{order_id}` fields the refund and chargeback state machines read, in the
    state of an order just credited. The writer adds `migratedAt` and `updatedAt` (server time)."""
    credits = tuple(CreditedEntry(c.entry_id, c.points, c.product_id) for c in candidate.credits)
    record = OrderRecord(uid=candidate.uid, order_id=candidate.order_id, credits=credits)
    document: dict[str, Any] = {
        "uid": candidate.uid,
        "customerId": candidate.customer_id,
        "entryIds": candidate.entry_ids,
        "credits": [{"entryId": c.entry_id, "points": c.points, "productId": c.product_id} for c in credits],
        "points": candidate.points,
        **order_fields(record),
        "migratedFrom": MIGRATED_FROM,
    }
    if candidate.pretty_id:
        document["prettyId"] = candidate.pretty_id
    return document


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
