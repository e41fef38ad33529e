"""Refunds and disputes of an order as state machines (SPEC section 5): pure, no I/O.

`paynowOrders/{order_id}` keeps the order's credits (and the subscription cycles its
lines bought, read with it), the furthest status seen per refund id and per dispute id,
the generation (how many reversals were applied), who holds the current reversal and
what it took. Transitions only go forward:

- a refund `approved`/`completed`, a new dispute, or a dispute closed as lost, reverses the
  order when it is credited; while it is reversed, other refunds and disputes only record
  their status;
- the same refund `canceled`/`failed`, or the same dispute closed as `won`, re-credits what
  that reversal took; if another refund is still approved, or another dispute open or
  lost, it takes the order over then and reverses it at once;
- a status that arrives after a later one of the same refund or dispute changes nothing
  (a `failed` overtaken by its `approved` never reverses).
Each entry counts its own reversals: its n-th is `rev{n}:{entry}` (`rev:` for the first) and
needs its re-credit n-1, `recredit{n-1}:{entry}`; a partial refund or a cycle credited later
moves only some entries, so the count is per entry, not per order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pluggy

from paynow_service.domain import events as ev
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.decisions import SOURCE
from paynow_service.domain.ledger import EntryRequest, recredit_entry_id, reversal_entry_id
from paynow_service.domain.orders import Dispute, OrderRecord
from paynow_service.domain.statuses import StepResult

# How far a refund has gone; a status at or below the one recorded is stale.
REFUND_RANKS = {
    "created": 0,
    "processing": 1,
    "approved": 2,
    "completed": 3,
    "canceled": 4,
    "cancelled": 4,
    "failed": 4,
}
REVERSING_REFUND_STATUSES = frozenset({"approved", "completed"})
RECREDITING_REFUND_STATUSES = frozenset({"canceled", "cancelled", "failed"})


@dataclass(frozen=True)
class Step:
    """What one refund or dispute event does to the order."""

    result: StepResult
    order: OrderRecord  # the order after the step
    entries: tuple[EntryRequest, ...] = ()
    points: int = 0  # net points moved (a reversal is negative)


def refund_step(
    event: ev.PaymentEvent, refund: ev.Refund, order: OrderRecord, hooks: pluggy.HookRelay, catalog: Catalog
) -> Step:
    status = refund.status.lower()
    seen = order.refunds.get(refund.refund_id)
    if seen is not None and REFUND_RANKS.get(status, -1) <= REFUND_RANKS.get(seen, -1):
        return Step("no_change", order)  # a redelivery, or a status overtaken by a later one
    recorded = replace(
        order,
        refunds={**order.refunds, refund.refund_id: status},
        refund_amounts={**order.refund_amounts, refund.refund_id: refund.amount},
    )
    by = f"refund:{refund.refund_id}"
    if status in REVERSING_REFUND_STATUSES and not order.is_reversed:
        return _reverse(event, recorded, _refund_points(event, refund, order, hooks, catalog), by)
    if status in RECREDITING_REFUND_STATUSES and order.reversed_by == by:
        return _recredit(event, recorded, hooks, catalog)
    return Step("status_updated", recorded)


def _refund_points(
    event: ev.PaymentEvent, refund: ev.Refund, order: OrderRecord, hooks: pluggy.HookRelay, catalog: Catalog
) -> int:
    total = _total(order)
    credited = (*order.credits, *order.cycles)
    wanted = hooks.paynow_refund_points(event=event, refund=refund, credited=credited, catalog=catalog)
    return total if wanted is None else max(0, min(int(wanted), total))


def chargeback_step(
    event: ev.PaymentEvent,
    chargeback: ev.Chargeback,
    order: OrderRecord,
    hooks: pluggy.HookRelay | None = None,
    catalog: Catalog | None = None,
) -> Step:
    """`hooks` and `catalog` ask the plugins how much a refund still approved takes, should it take over."""
    closed = event.event_type == ev.CHARGEBACK_CLOSED
    seen = order.chargebacks.get(chargeback.chargeback_id)
    # Closed is final; another "open" status of a known dispute only updates what is shown.
    if seen is not None and (seen.closed or (not closed and seen.status == _dispute_status(chargeback))):
        return Step("no_change", order)
    dispute = Dispute(_dispute_status(chargeback), closed)
    recorded = replace(order, chargebacks={**order.chargebacks, chargeback.chargeback_id: dispute})
    by = f"chargeback:{chargeback.chargeback_id}"
    won = closed and chargeback.chargeback_status.lower() == "won"
    if won and order.reversed_by == by:
        return _recredit(event, recorded, hooks, catalog)
    # A new dispute reverses; so does one closed as lost while the order is credited (its opening
    # was missed, or another reversal held the order when it opened).
    if not won and (seen is None or closed) and not order.is_reversed:
        return _reverse(event, recorded, _total(order), by)
    return Step("status_updated", recorded)


def _total(order: OrderRecord) -> int:
    return sum(c.points for c in (*order.credits, *order.cycles))


def _dispute_status(chargeback: ev.Chargeback) -> str:
    return (chargeback.chargeback_status or chargeback.status).lower()


def _reverse(event: ev.PaymentEvent, order: OrderRecord, points: int, by: str) -> Step:
    """Take back `points` of the order's credits (its cycles after its lines), entry by entry."""
    remaining = points
    entries: list[EntryRequest] = []
    taken: dict[str, int] = {}
    counts = dict(order.entry_reversals)
    for credit in (*order.credits, *order.cycles):
        if remaining <= 0:
            break
        amount = min(remaining, credit.points)
        remaining -= amount
        taken[credit.entry_id] = amount
        counts[credit.entry_id] = generation = counts.get(credit.entry_id, 0) + 1
        entries.append(
            EntryRequest(
                entry_id=reversal_entry_id(credit.entry_id, generation),
                uid=order.uid,
                action="reversal",
                amount=None if amount == credit.points else amount,
                source=SOURCE,
                reversal_of=credit.entry_id,
                generation=generation,
                metadata=_metadata(event, order, by, reversalOf=credit.entry_id),
            )
        )
    if not entries:  # a plugin asked to take back nothing: the order stays credited
        return Step("status_updated", order)
    after = replace(
        order, generation=order.generation + 1, reversed=taken, reversed_by=by, entry_reversals=counts
    )
    return Step("reversed", after, tuple(entries), -sum(taken.values()))


def _recredit(
    event: ev.PaymentEvent, order: OrderRecord, hooks: pluggy.HookRelay | None, catalog: Catalog | None
) -> Step:
    """Give back what the holder's reversal took; then a refund still approved or a dispute still open
    takes the order over (with `hooks`, a pending refund asks the plugins how much)."""
    entries = tuple(
        EntryRequest(
            entry_id=recredit_entry_id(entry_id, order.entry_reversals.get(entry_id, 1)),
            uid=order.uid,
            action="credit",
            # None: the ledger re-credits what the reversal really took (less than planned
            # when ALLOW_NEGATIVE_BALANCE=false stopped it at zero).
            amount=None,
            source=SOURCE,
            reversal_of=entry_id,
            generation=order.entry_reversals.get(entry_id, 1),
            metadata=_metadata(event, order, order.reversed_by, recreditOf=entry_id),
        )
        for entry_id, amount in order.reversed.items()
        if amount > 0
    )
    released = replace(order, reversed_by="")
    step = Step(
        "recredited" if entries else "status_updated", released, entries, sum(order.reversed.values())
    )
    for kind, pending_id in _pending(released):
        points = _total(released)
        if kind == "refund" and hooks is not None and catalog is not None:
            status, amount = released.refunds[pending_id], released.refund_amounts.get(pending_id, 0)
            refund = ev.Refund(refund_id=pending_id, order_id=order.order_id, status=status, amount=amount)
            points = _refund_points(event, refund, released, hooks, catalog)
        again = _reverse(event, released, points, f"{kind}:{pending_id}")
        if again.entries:  # the first that takes something holds the order now
            return Step(step.result, again.order, step.entries + again.entries, step.points + again.points)
    return step


def _pending(order: OrderRecord) -> list[tuple[str, str]]:
    """Refunds still approved, then disputes open or lost, that did not hold the order: who may take it
    over. (A holder is released only by its own failure or win, so none of these held it.)"""
    refunds = [
        ("refund", i) for i, status in sorted(order.refunds.items()) if status in REVERSING_REFUND_STATUSES
    ]
    disputes = [
        ("chargeback", i)
        for i, dispute in sorted(order.chargebacks.items())
        if not dispute.closed or dispute.status != "won"
    ]
    return refunds + disputes


def _metadata(event: ev.PaymentEvent, order: OrderRecord, by: str, **extra: str) -> dict[str, str]:
    return {"eventId": event.event_id, "orderId": order.order_id, "by": by, **extra}


def apply_in_order(
    parked: Sequence[ev.PaymentEvent], order: OrderRecord, hooks: pluggy.HookRelay, catalog: Catalog
) -> tuple[OrderRecord, list[EntryRequest], int]:
    """Refunds and disputes that arrived before their order, applied in status order once it is credited."""
    entries: list[EntryRequest] = []
    points = 0
    first_seen: dict[tuple[int, str], int] = {}
    for event in parked:
        group = _group(event)
        first_seen[group] = min(first_seen.get(group, event.sent_at_ms), event.sent_at_ms)

    def rank(event: ev.PaymentEvent) -> tuple[int, tuple[int, str], int, int, str]:
        # One refund or dispute at a time, in the order they first arrived; each in status order
        # (statuses of one rank, such as canceled and failed, in the order PayNow sent them).
        group = _group(event)
        return (first_seen[group], group, _status_rank(event), event.sent_at_ms, event.event_id)

    for event in sorted(parked, key=rank):
        if event.refund is not None:
            step = refund_step(event, event.refund, order, hooks, catalog)
        elif event.chargeback is not None:
            step = chargeback_step(event, event.chargeback, order, hooks, catalog)
        else:
            continue
        order, points = step.order, points + step.points
        entries.extend(step.entries)
    return order, entries, points


def _group(event: ev.PaymentEvent) -> tuple[int, str]:
    if event.refund is not None:
        return (0, event.refund.refund_id)
    return (1, event.chargeback.chargeback_id if event.chargeback is not None else "")


def _status_rank(event: ev.PaymentEvent) -> int:
    """How far along its refund or dispute an event is (a dispute's opening before its close)."""
    if event.refund is not None:
        return REFUND_RANKS.get(event.refund.status.lower(), -1)
    return int(event.event_type == ev.CHARGEBACK_CLOSED)
