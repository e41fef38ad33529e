"""`webhookEvents` and `paynowOrders` records against the ledger, as pure checks.

- An event: the app's unfinished or never-credited records (domain/app_records.py), ours
  stranded in `queued`, and a processed one whose `result.entryIds` are missing.
- An entry of ours that names its event (`metadata.eventId`): the event must be there,
  processed, and list it in `result.entryIds` (when it lists any), while events are kept
  (`WEBHOOK_EVENT_TTL_DAYS`: older ones expire by design).
- An order: its credits exist; each credit's reversals `rev{k}:` exist up to the count the
  order keeps and none beyond it (a refund applied twice); no re-credit its state forbids;
  what is parked on it is not older than `PARK_MAX_HOURS`, nor waiting on a credited order.
The caller reads the documents named by `event_entry_ids` and `order_entry_ids`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from paynow_service.domain import reconcile_findings as rf
from paynow_service.domain.app_records import FLAG_APP_UNFINISHED, app_verdict, is_app_record
from paynow_service.domain.ledger import recredit_entry_id, reversal_entry_id
from paynow_service.domain.ledger_reader import as_time
from paynow_service.domain.reconcile_findings import Finding

# Refund statuses that hold an order reversed (service/order_disputes.py REVERSING_REFUND_STATUSES).
REVERSING_REFUNDS = frozenset({"approved", "completed"})
# A published event still `queued` after this long is not being processed.
PUBLISHED_QUEUED_LIMIT = timedelta(hours=1)


def event_entry_ids(data: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(uid, entry ids) a processed event of ours says it wrote; ("", []) when it says none."""
    result = data.get("result")
    if is_app_record(data) or data.get("status") != "processed" or not isinstance(result, Mapping):
        return "", []
    uid, ids = result.get("uid"), result.get("entryIds")
    if not isinstance(uid, str) or not uid or not isinstance(ids, list):
        return "", []
    return uid, [i for i in ids if isinstance(i, str) and i]


def audit_event(
    event_id: str,
    data: Mapping[str, Any],
    present: Mapping[str, bool],
    *,
    now: datetime,
    lease_s: int,
) -> list[Finding]:
    """One webhookEvents record; `present` says which of its `event_entry_ids` exist."""
    status = str(data.get("status", ""))
    if is_app_record(data):
        if data.get("flag") == FLAG_APP_UNFINISHED or app_verdict(status) == "unfinished":
            return [Finding(rf.APP_UNFINISHED, event_id=event_id, detail=f"the app's record is {status!r}")]
        if app_verdict(status) == "take_over":
            return [Finding(rf.APP_QUEUED, event_id=event_id, detail="the app's record is 'queued'")]
        return []
    if status == "queued":
        return _queued(event_id, data, now, lease_s)
    uid, ids = event_entry_ids(data)
    missing = [i for i in ids if not present.get(i, False)]
    if missing:
        detail = f"{len(missing)} of {len(ids)} entries missing"
        return [
            Finding(rf.EVENT_WITHOUT_ENTRIES, uid=uid, event_id=event_id, entry_id=missing[0], detail=detail)
        ]
    return []


def _queued(event_id: str, data: Mapping[str, Any], now: datetime, lease_s: int) -> list[Finding]:
    published = as_time(data.get("publishedAt"))
    since = as_time(data.get("leaseAt")) or as_time(data.get("receivedAt"))
    if published is None:
        if since is None or now - since > timedelta(seconds=lease_s):
            return [Finding(rf.STRANDED_QUEUED, event_id=event_id, detail="queued, never published")]
        return []
    if now - published > PUBLISHED_QUEUED_LIMIT:
        hours = (now - published).total_seconds() / 3600
        return [
            Finding(
                rf.STRANDED_QUEUED, event_id=event_id, detail=f"published {hours:.1f} h ago, still queued"
            )
        ]
    return []


def entry_event_finding(
    uid: str,
    entry_id: str,
    event_id: str,
    created_at: datetime,
    event: Mapping[str, Any] | None,
    *,
    kept_since: datetime,
) -> Finding | None:
    """An entry of ours against the event it names (None: fine, or the event has expired by design)."""
    if event is None:
        if created_at < kept_since:
            return None  # the record outlived its TTL
        return Finding(
            rf.ENTRY_WITHOUT_EVENT, uid=uid, event_id=event_id, entry_id=entry_id, detail="no event record"
        )
    status = str(event.get("status", ""))
    if status != "processed":
        detail = f"the event is {status!r}"
        return Finding(rf.ENTRY_WITHOUT_EVENT, uid=uid, event_id=event_id, entry_id=entry_id, detail=detail)
    wrote_for, ids = event_entry_ids(event)
    if ids and (entry_id not in ids or wrote_for != uid):
        detail = "the event's record does not list this entry"
        return Finding(rf.ENTRY_WITHOUT_EVENT, uid=uid, event_id=event_id, entry_id=entry_id, detail=detail)
    return None


def _credits(data: Mapping[str, Any]) -> list[str]:
    items = data.get("credits")
    return (
        [str(c["entryId"]) for c in items if isinstance(c, Mapping) and c.get("entryId")]
        if isinstance(items, list)
        else []
    )


def _counts(data: Mapping[str, Any], credits: list[str]) -> dict[str, int]:
    counts = data.get("reversals")
    if isinstance(counts, Mapping):
        return {e: int(counts.get(e) or 0) if isinstance(counts.get(e), int) else 0 for e in credits}
    reversed_ = data.get("reversed") or []
    taken = (
        {str(r.get("entryId")) for r in reversed_ if isinstance(r, Mapping)}
        if isinstance(reversed_, list)
        else set()
    )
    return {e: int(e in taken) for e in credits}


def _holder(data: Mapping[str, Any]) -> str:
    """Who holds the order reversed ("" while credited), read as processing_documents.order_record does."""
    if data.get("recredited") and data.get("generation") is None:
        return ""  # written before generations: a re-credited order is credited again
    return str(data.get("reversedBy") or "")


def _held(data: Mapping[str, Any]) -> dict[str, int]:
    """Entries the current reversal holds (points taken > 0), while the order is reversed."""
    if not _holder(data):
        return {}
    held = data.get("reversed") or []
    return {
        str(r.get("entryId")): int(r.get("points") or 0)
        for r in (held if isinstance(held, list) else [])
        if isinstance(r, Mapping) and isinstance(r.get("points"), int) and r.get("points")
    }


def order_entry_ids(data: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(uid, entry ids) to read for `audit_order`: each credit, its reversals and re-credits, one beyond."""
    uid = data.get("uid")
    if not isinstance(uid, str) or not uid:
        return "", []
    credits = _credits(data)
    counts = _counts(data, credits)
    ids: list[str] = []
    for credit in credits:
        ids.append(credit)
        for k in range(1, counts[credit] + 2):
            ids += [reversal_entry_id(credit, k), recredit_entry_id(credit, k)]
    return uid, ids


def audit_order(
    order_id: str,
    data: Mapping[str, Any],
    present: Mapping[str, bool],
    *,
    now: datetime,
    park_max_hours: int,
) -> list[Finding]:
    """One paynowOrders document; `present` says which of its `order_entry_ids` exist."""
    found = _parked(order_id, data, now, park_max_hours)
    uid, _ = order_entry_ids(data)
    if not uid:
        return found
    credits = _credits(data)
    counts, held = _counts(data, credits), _held(data)
    found += _state(order_id, uid, data, counts)
    for credit in credits:
        n = counts[credit]
        if not present.get(credit, False):
            found.append(Finding(rf.ORDER_CREDIT_MISSING, uid=uid, order_id=order_id, entry_id=credit))
        for k in range(1, n + 1):
            if not present.get(reversal_entry_id(credit, k), False):
                detail = f"the order counts {n} reversal(s)"
                found.append(
                    Finding(
                        rf.ORDER_REVERSAL_MISSING, uid, "", order_id, reversal_entry_id(credit, k), detail
                    )
                )
        extra = reversal_entry_id(credit, n + 1)
        if present.get(extra, False):
            detail = f"the order counts {n} reversal(s) of this credit"
            found.append(Finding(rf.REVERSAL_NOT_ON_ORDER, uid, "", order_id, extra, detail))
        allowed = n - 1 if credit in held else n
        for k in range(allowed + 1, n + 2):
            recredit = recredit_entry_id(credit, k)
            if k >= 1 and present.get(recredit, False):
                detail = f"{n} reversal(s), {'reversed now' if credit in held else 'credited now'}"
                found.append(Finding(rf.RECREDIT_NOT_ON_ORDER, uid, "", order_id, recredit, detail))
    return found


def _state(order_id: str, uid: str, data: Mapping[str, Any], counts: Mapping[str, int]) -> list[Finding]:
    """Who holds the reversal against that refund's or dispute's own status, and the generations."""
    found: list[str] = []
    kind, _, holder_id = _holder(data).partition(":")
    refunds = data.get("refunds") if isinstance(data.get("refunds"), Mapping) else {}
    disputes = data.get("chargebacks") if isinstance(data.get("chargebacks"), Mapping) else {}
    if kind == "refund" and str((refunds or {}).get(holder_id, "")).lower() not in REVERSING_REFUNDS:
        found.append(f"reversed by refund {holder_id}, whose status is {(refunds or {}).get(holder_id)!r}")
    elif kind == "chargeback":
        dispute = (disputes or {}).get(holder_id)
        status = str(dispute.get("status", "") if isinstance(dispute, Mapping) else dispute or "").lower()
        closed = bool(dispute.get("closed")) if isinstance(dispute, Mapping) else status in ("won", "lost")
        if dispute is None or (closed and status == "won"):
            found.append(f"reversed by dispute {holder_id}, whose status is {status or None!r}")
    generation = data.get("generation")
    if isinstance(generation, int) and counts and max(counts.values()) > generation:
        found.append(f"an entry counts {max(counts.values())} reversals, the order {generation}")
    return [Finding(rf.ORDER_STATE_MISMATCH, uid=uid, order_id=order_id, detail=d) for d in found]


def _parked(order_id: str, data: Mapping[str, Any], now: datetime, park_max_hours: int) -> list[Finding]:
    parked = data.get("parked")
    if not isinstance(parked, Mapping):
        return []
    credited = bool(data.get("uid"))
    found: list[Finding] = []
    for event_id, item in sorted(parked.items()):
        at = as_time(item.get("parkedAt")) if isinstance(item, Mapping) else None
        age_h = (now - at).total_seconds() / 3600 if at is not None else None
        if age_h is None or age_h > park_max_hours:
            detail = f"parked {age_h:.1f} h" if age_h is not None else "parked, no time"
            found.append(Finding(rf.STALE_PARKED, event_id=str(event_id), order_id=order_id, detail=detail))
        elif credited:
            detail = "parked on an order credited since"
            found.append(
                Finding(rf.PARKED_ON_CREDITED_ORDER, event_id=str(event_id), order_id=order_id, detail=detail)
            )
    return found
