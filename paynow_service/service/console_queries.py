"""The operator console's reads: search, one event's timeline, a wallet and its ledger, the report.

Reads only, over small ports (the Firestore reads of adapters/console_reads.py, the ledger's
listing); the DLQ's pages and actions are service/console_dlq.py. What an event did is read
from its record (`result.entryIds`), its order (`paynowOrders`) and the other events of that
order; ids only, never PII.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from paynow_service.domain.events import PaymentEvent
from paynow_service.domain.ids import is_document_id
from paynow_service.domain.ledger import LedgerEntry, PromoLot, Wallet

SEARCH_LIMIT = 50
LEDGER_PAGE = 100
ORDER_ENTRY_PREFIX = "paynow:order:"  # domain/ledger.py order_line_entry_id
FAILED_STATUSES = frozenset({"failed_terminal", "dead_lettered"})


class StoredEventView(Protocol):
    @property
    def event_id(self) -> str: ...
    @property
    def fields(self) -> dict[str, Any]: ...
    @property
    def event(self) -> PaymentEvent | None: ...


class ConsoleReadsPort(Protocol):
    async def event(self, event_id: str) -> StoredEventView | None: ...
    async def events_where(self, name: str, value: str, limit: int) -> Sequence[StoredEventView]: ...
    async def order(self, order_id: str) -> dict[str, Any] | None: ...
    async def customer_uid(self, customer_id: str) -> str: ...
    async def user_exists(self, uid: str) -> bool: ...
    async def wallet(self, uid: str) -> Wallet | None: ...
    async def entries(self, uid: str, entry_ids: Sequence[str]) -> list[LedgerEntry]: ...
    async def latest_report(self) -> dict[str, Any] | None: ...


class LedgerListingPort(Protocol):
    async def list_ledger(
        self, uid: str, page_size: int, page_token: str
    ) -> tuple[list[LedgerEntry], str]: ...


@dataclass(frozen=True)
class EventSummary:
    event_id: str
    event_type: str
    status: str
    order_id: str
    customer_id: str
    uid: str
    received_at: dt.datetime | None
    failure_reason: str

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES


@dataclass(frozen=True)
class Step:
    """One line of a timeline: what happened, when, and whether it is done, failed or not yet."""

    name: str
    state: str  # done, failed, waiting, skipped
    at: dt.datetime | None = None
    detail: str = ""


@dataclass(frozen=True)
class OrderView:
    order_id: str
    uid: str
    status: str
    points: int
    credits: list[dict[str, Any]]
    reversed: list[dict[str, Any]]
    refunds: dict[str, str]
    chargebacks: dict[str, dict[str, Any]]
    parked: list[dict[str, Any]]  # {eventId, type, parkedAt}


@dataclass(frozen=True)
class Timeline:
    summary: EventSummary
    steps: list[Step]
    what: dict[str, Any]  # the event's ids and amounts (decoded from its record)
    result: dict[str, Any]
    entries: list[LedgerEntry]
    order: OrderView | None
    related: list[EventSummary]  # the other events of its order: refunds, disputes


@dataclass
class SearchResult:
    query: str
    events: list[EventSummary] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    matched_by: list[str] = field(default_factory=list)  # event id, order id, customer id, uid

    @property
    def empty(self) -> bool:
        return not (self.events or self.users or self.orders)


@dataclass(frozen=True)
class LotView:
    lot: PromoLot
    expired: bool


@dataclass(frozen=True)
class WalletView:
    uid: str
    exists: bool
    paid: int
    promo_spendable: int
    promo_stored: int
    lots_sum: int
    lots: list[LotView]
    foreign_lots: list[Any]
    updated_at: dt.datetime | None
    entries: list[LedgerEntry]
    next_page_token: str

    @property
    def promo_mismatch(self) -> bool:
        """`promoBalance` must be the sum of every lot: the app's spend fails otherwise."""
        return self.promo_stored != self.lots_sum


def summary_of(stored: StoredEventView) -> EventSummary:
    fields, event = stored.fields, stored.event
    result = fields.get("result") if isinstance(fields.get("result"), Mapping) else {}
    return EventSummary(
        event_id=stored.event_id,
        event_type=_text(fields.get("eventType") or fields.get("rawEventType")) or _attr(event, "event_type"),
        status=_text(fields.get("status")),
        order_id=_text(fields.get("orderId")) or (order_id_of(event) if event else ""),
        customer_id=_text(fields.get("customerId")) or _attr(event, "customer_id"),
        uid=_text((result or {}).get("uid")) or _attr(event, "uid"),
        received_at=_time(fields.get("receivedAt")),
        failure_reason=_text(fields.get("failureReason")),
    )


def order_id_of(event: PaymentEvent) -> str:
    """The order an event belongs to: its own, or the one its refund or chargeback names."""
    for part in (event.order, event.refund, event.chargeback):
        if part is not None:
            return part.order_id
    return ""


class ConsoleQueries:
    """The console's reads, assembled for its pages."""

    def __init__(self, reads: ConsoleReadsPort, ledger: LedgerListingPort) -> None:
        self._reads = reads
        self._ledger = ledger

    async def search(self, query: str) -> SearchResult:
        """Everything `query` names: an event id, an order id, a customer id or a uid."""
        q = query.strip()
        found = SearchResult(q)
        if not q or not is_document_id(q):
            return found
        reads = self._reads
        event, by_order, by_customer, by_uid = await asyncio.gather(
            reads.event(q),
            reads.events_where("orderId", q, SEARCH_LIMIT),
            reads.events_where("customerId", q, SEARCH_LIMIT),
            reads.events_where("orderingKey", q, SEARCH_LIMIT),
        )
        order, mapped, user = await asyncio.gather(
            reads.order(q), reads.customer_uid(q), reads.user_exists(q)
        )
        # Records the worker started before the webhook's (both run at once) carry no orderId nor
        # customerId: the order names its own event and its parked ones, the customer its uid.
        extra_ids = _order_event_ids(order)
        by_order_doc = [e for e in await asyncio.gather(*(reads.event(i) for i in extra_ids)) if e]
        by_mapped = (
            await reads.events_where("orderingKey", mapped, SEARCH_LIMIT) if mapped and mapped != q else []
        )
        seen: set[str] = set()
        for label, events in (
            ("event id", [event] if event else []),
            ("order id", [*by_order, *by_order_doc]),
            ("customer id", [*by_customer, *by_mapped]),
            ("uid", by_uid),
        ):
            if events:
                found.matched_by.append(label)
            for stored in events:
                if stored.event_id not in seen:
                    seen.add(stored.event_id)
                    found.events.append(summary_of(stored))
        if order is not None:
            found.orders.append(q)
            _add(found.users, _text(order.get("uid")))
        _add(found.users, mapped)
        if user:
            _add(found.users, q)
            if "uid" not in found.matched_by:
                found.matched_by.append("uid")
        for summary in found.events:
            _add(found.users, summary.uid)
        found.events.sort(key=lambda s: s.received_at or dt.datetime.min.replace(tzinfo=dt.UTC), reverse=True)
        return found

    async def timeline(self, event_id: str) -> Timeline | None:
        if not is_document_id(event_id):
            return None
        stored = await self._reads.event(event_id)
        if stored is None:
            return None
        summary = summary_of(stored)
        fields = stored.fields
        result = dict(fields["result"]) if isinstance(fields.get("result"), Mapping) else {}
        entry_ids = [str(e) for e in result.get("entryIds") or [] if isinstance(e, str)]
        entries: list[LedgerEntry] = []
        order: OrderView | None = None
        related: list[EventSummary] = []
        if summary.uid and is_document_id(summary.uid) and entry_ids:
            entries = await self._reads.entries(summary.uid, entry_ids)
        if not summary.order_id:  # a record the worker started: its entries name the order
            summary = replace(summary, order_id=order_id_of_entries(entry_ids))
        if summary.order_id and is_document_id(summary.order_id):
            order_doc, others = await asyncio.gather(
                self._reads.order(summary.order_id),
                self._reads.events_where("orderId", summary.order_id, SEARCH_LIMIT),
            )
            order = order_view(summary.order_id, order_doc) if order_doc is not None else None
            related = [summary_of(e) for e in others if e.event_id != event_id]
        return Timeline(
            summary=summary,
            steps=steps_of(fields, result),
            what=describe(stored.event),
            result=result,
            entries=entries,
            order=order,
            related=related,
        )

    async def wallet(self, uid: str, page_token: str = "") -> WalletView | None:
        if not is_document_id(uid):
            return None
        wallet, (entries, token) = await asyncio.gather(
            self._reads.wallet(uid), self._ledger.list_ledger(uid, LEDGER_PAGE, page_token)
        )
        now = dt.datetime.now(dt.UTC)
        w = wallet or Wallet()
        balance = w.balance(now)
        return WalletView(
            uid=uid,
            exists=wallet is not None,
            paid=w.paid,
            promo_spendable=balance.promo,
            promo_stored=w.promo_stored,
            lots_sum=w.lots_sum,
            lots=[LotView(lot, not lot.spendable(now)) for lot in w.lots],
            foreign_lots=list(w.foreign_lots),
            updated_at=w.updated_at,
            entries=entries,
            next_page_token=token,
        )

    async def latest_report(self) -> dict[str, Any] | None:
        return await self._reads.latest_report()


def steps_of(fields: Mapping[str, Any], result: Mapping[str, Any]) -> list[Step]:
    """Received, recorded, published, then processed, parked, ignored or dead-lettered."""
    status = _text(fields.get("status"))
    received, published, processed = (
        _time(fields.get("receivedAt")),
        _time(fields.get("publishedAt")),
        _time(fields.get("processedAt")),
    )
    steps = [
        Step("received", "done" if received else "waiting", received, "webhook answered"),
        Step("recorded", "done", received, f"webhookEvents record, status {status or '?'}"),
    ]
    if published:
        steps.append(Step("published", "done", published, "on the events topic"))
    elif status in ("processed", "ignored", "parked") and not fields.get("publishedAt"):
        steps.append(Step("published", "skipped", None, "not through the queue: processed inline"))
    else:
        steps.append(Step("published", "waiting", None, "not yet (sweep publishes stranded events)"))
    outcome = _text(result.get("outcome"))
    if status in FAILED_STATUSES:
        detail = f"{fields.get('failureReason') or '?'}: {_text(fields.get('failureDetail'))}".rstrip(": ")
        steps.append(Step("dead-lettered", "failed", processed, detail))
    elif status == "processed":
        points = result.get("points")
        detail = f"{outcome or 'processed'}, {points if points is not None else 0} points"
        steps.append(Step("processed", "done", processed, f"{detail} by {_text(result.get('by')) or '?'}"))
    elif status in ("parked", "ignored"):
        steps.append(Step(status, "done", processed, outcome or status))
    else:
        steps.append(Step("processed", "waiting", None, f"status {status or '?'}"))
    return steps


def order_view(order_id: str, doc: Mapping[str, Any]) -> OrderView:
    parked = doc.get("parked") if isinstance(doc.get("parked"), Mapping) else {}
    chargebacks = doc.get("chargebacks") if isinstance(doc.get("chargebacks"), Mapping) else {}
    refunds = doc.get("refunds") if isinstance(doc.get("refunds"), Mapping) else {}
    return OrderView(
        order_id=order_id,
        uid=_text(doc.get("uid")),
        status=_text(doc.get("status")) or ("credited" if doc.get("uid") else "not credited yet"),
        points=int(doc.get("points") or 0) if isinstance(doc.get("points"), int) else 0,
        credits=[dict(c) for c in doc.get("credits") or [] if isinstance(c, Mapping)],
        reversed=[dict(r) for r in doc.get("reversed") or [] if isinstance(r, Mapping)],
        refunds={str(k): str(v) for k, v in (refunds or {}).items()},
        chargebacks={
            str(k): dict(v) if isinstance(v, Mapping) else {"status": str(v)}
            for k, v in (chargebacks or {}).items()
        },
        parked=[
            {"eventId": str(k), "type": _text(v.get("type")), "parkedAt": _time(v.get("parkedAt"))}
            for k, v in (parked or {}).items()
            if isinstance(v, Mapping)
        ],
    )


def describe(event: PaymentEvent | None) -> dict[str, Any]:
    """The event's ids, products, amounts and statuses (what the record keeps: no PII)."""
    if event is None:
        return {}
    what: dict[str, Any] = {"customer": event.customer_id, "ordering key": event.resolved_ordering_key()}
    if event.order is not None:
        what["order"] = event.order.order_id
        what["lines"] = [f"{line.line_id}: {line.quantity} x {line.product_id}" for line in event.order.lines]
    if event.subscription is not None:
        sub = event.subscription
        what["subscription"] = f"{sub.subscription_id} cycle {sub.billing_cycle_sequence} ({sub.product_id})"
    if event.refund is not None:
        what["refund"] = f"{event.refund.refund_id} {event.refund.status} on order {event.refund.order_id}"
    if event.chargeback is not None:
        cb = event.chargeback
        what["chargeback"] = f"{cb.chargeback_id} {cb.status}/{cb.chargeback_status} on order {cb.order_id}"
    return {k: v for k, v in what.items() if v}


def _order_event_ids(order: Mapping[str, Any] | None) -> list[str]:
    if not order:
        return []
    parked = order.get("parked") if isinstance(order.get("parked"), Mapping) else {}
    ids = [_text(order.get("eventId")), *(str(k) for k in (parked or {}))]
    return [i for i in dict.fromkeys(ids) if i and is_document_id(i)]


def order_id_of_entries(entry_ids: Sequence[str]) -> str:
    """The order of `paynow:order:{order_id}:line:{line_id}` entries ("" for other entries)."""
    for entry_id in entry_ids:
        if entry_id.startswith(ORDER_ENTRY_PREFIX):
            return entry_id[len(ORDER_ENTRY_PREFIX) :].split(":", 1)[0]
    return ""


def _add(items: list[str], value: str) -> None:
    if value and value not in items:
        items.append(value)


def _attr(event: PaymentEvent | None, name: str) -> str:
    return _text(getattr(event, name, "")) if event is not None else ""


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _time(value: object) -> dt.datetime | None:
    return value if isinstance(value, dt.datetime) else None
