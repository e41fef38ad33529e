"""What order and subscription decisions share: whose points, the plugins' extras, a promo's expiry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pluggy

from paynow_service.domain import events as ev
from paynow_service.domain.catalog import MAX_EXPIRES_IN_DAYS, Catalog
from paynow_service.domain.credits import PlannedCredit
from paynow_service.domain.decisions import EventState, known_uid
from paynow_service.domain.errors import InvalidEventError, UserNotFoundError
from paynow_service.domain.ledger import DEFAULT_PROMO_DAYS


def resolve_uid(event: ev.PaymentEvent, state: EventState) -> str:
    uid = known_uid(event, state.mapped_uid)
    if not uid:
        raise UserNotFoundError(
            f"no uid in checkout metadata and customer {event.customer_id or '(none)'} is not mapped"
        )
    return uid


def customer_mapping(event: ev.PaymentEvent, uid: str, state: EventState) -> tuple[str, str] | None:
    """(customer id, uid) to record when the event teaches a mapping the state does not hold."""
    if event.customer_id and state.mapped_uid != uid:
        return (event.customer_id, uid)
    return None


def promo_expiry(event: ev.PaymentEvent, state: EventState, credit: PlannedCredit) -> datetime | None:
    """A promo credit's lot expires `expires_in_days` after the event (PayNow's timestamp of it)."""
    if credit.kind != "promo":
        return None
    days = DEFAULT_PROMO_DAYS if credit.expires_in_days is None else credit.expires_in_days
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXPIRES_IN_DAYS:
        raise InvalidEventError(
            f"plugin credit {credit.key!r}: expires_in_days must be 1 to {MAX_EXPIRES_IN_DAYS}"
        )
    sent_ms = event.sent_at_ms or event.received_at_ms
    at = datetime.fromtimestamp(sent_ms / 1000, UTC) if sent_ms else state.now
    if at is None:
        raise InvalidEventError("the event carries no time to date its promo lot's expiry from")
    return at + timedelta(days=days)


def plugin_extras(
    event: ev.PaymentEvent, planned: Sequence[PlannedCredit], hooks: pluggy.HookRelay, catalog: Catalog
) -> list[PlannedCredit]:
    """Every plugin's extra credits for the event; a key used twice fails the event."""
    extras: list[PlannedCredit] = []
    seen = {credit.key for credit in planned}
    for contribution in hooks.paynow_adjust_credits(event=event, credits=tuple(planned), catalog=catalog):
        for credit in contribution or ():
            if credit.key in seen:
                raise InvalidEventError(f"plugin credit key {credit.key!r} is used twice in this event")
            seen.add(credit.key)
            extras.append(credit)
    return extras
