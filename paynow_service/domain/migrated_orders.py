"""Which of the app's orders `migrate orders` writes, and the `paynowOrders` document of one (pure).

An order is written only when nothing about it needs a human (see `own_problem` and
`classify`): then a refund or chargeback reverses exactly what the app credited for it,
with `rev:{appEntryId}` entries against the app's own entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from paynow_service.domain.app_orders import OrderCandidate
from paynow_service.domain.errors import InvalidRequestError
from paynow_service.domain.ledger import PAYNOW_NAMESPACE
from paynow_service.domain.ledger_rules import validate_entry_id
from paynow_service.domain.orders import CreditedEntry, OrderRecord, credits_fields, order_fields

MIGRATED_FROM = "app"

Action = Literal["write", "skip", "ambiguous"]


@dataclass(frozen=True)
class Verdict:
    """What the migration does with one order."""

    action: Action
    reason: str = ""
    merge: bool = False  # the document exists without a uid (parked events): merged so they stay
    parked: int = 0  # refunds and disputes parked on it, published by `sweep` once it is credited


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
        "credits": credits_fields(credits),
        "points": candidate.points,
        **order_fields(record),
        "migratedFrom": MIGRATED_FROM,
    }
    if candidate.pretty_id:
        document["prettyId"] = candidate.pretty_id
    return document
