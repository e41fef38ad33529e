"""`validate_event`: the webhook's input rules, stated once more on a built `PaymentEvent`.

The webhook runs it on every event it builds, and the worker on every event it decodes
(a message on the topic is checked as a delivery is). Ids that become Firestore document
ids, ledger keys or ordering keys must look like ids (domain/ids.py); uids, quantities,
amounts and statuses have their bounds here. A failure is an `InvalidEventError` naming
the field: terminal, recorded and dead-lettered.
"""

from __future__ import annotations

from typing import NoReturn, TypeVar

from paynow_service.domain import events as ev
from paynow_service.domain.errors import InvalidEventError
from paynow_service.domain.ids import INT64_MAX, is_paynow_id, is_uid
from paynow_service.domain.paynow_envelope import EVENT_TYPE_PATTERN

MAX_QUANTITY = 1_000_000
MAX_CYCLE = 1_000_000
MAX_STATUS_CHARS = 64
MAX_TEXT_CHARS = 64  # informational text (currency)

_D = TypeVar("_D")


def validate_event(event: ev.PaymentEvent) -> ev.PaymentEvent:
    """The webhook's input checks on a built event: ids, uids, quantities, amounts, statuses, and the
    detail each handled type needs. Returns the event; raises `InvalidEventError` naming the field.

    The webhook's readers refuse a bad body first (with its JSON path); the worker runs this on
    every decoded message, so an event on the topic passes the same checks as a delivery."""
    if not is_paynow_id(event.event_id):
        invalid("event_id is not an id")
    if not EVENT_TYPE_PATTERN.fullmatch(event.event_type):
        invalid("event_type is not an event type name")
    _check_optional_id(event.store_id, "store_id")
    _check_optional_id(event.customer_id, "customer_id")
    if event.uid and not is_uid(event.uid):
        invalid("uid is not a user id")
    if event.ordering_key:
        invalid("ordering_key is set (the webhook derives it from uid, customer or event id)")
    _check_range(event.received_at_ms, "received_at_ms", 0, INT64_MAX)
    _check_range(event.sent_at_ms, "sent_at_ms", 0, INT64_MAX)
    kind = event.event_type
    if kind == ev.ORDER_COMPLETED:
        _check_order(_required(event.order, kind, "order"))
    elif kind in ev.SUBSCRIPTION_TYPES:
        _check_subscription(_required(event.subscription, kind, "subscription"), kind)
    elif kind == ev.REFUND:
        _check_refund(_required(event.refund, kind, "refund"))
    elif kind in (ev.CHARGEBACK, ev.CHARGEBACK_CLOSED):
        _check_chargeback(_required(event.chargeback, kind, "chargeback"), kind)
    if kind not in ev.HANDLED_TYPES and (
        event.order or event.subscription or event.refund or event.chargeback
    ):
        invalid(f"{kind} is ignored and carries no details")
    return event


def is_status(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_STATUS_CHARS and value.isprintable()


def _required(detail: _D | None, kind: str, name: str) -> _D:
    if detail is None:
        invalid(f"{kind} carries no {name}")
    return detail


def _check_optional_id(value: str, path: str) -> None:
    if value and not is_paynow_id(value):
        invalid(f"{path} is not an id")


def _check_required_id(value: str, path: str) -> None:
    if not value:
        invalid(f"{path} is missing")
    if not is_paynow_id(value):
        invalid(f"{path} is not an id")


def _check_range(value: int, path: str, minimum: int, maximum: int) -> None:
    if not minimum <= value <= maximum:
        invalid(f"{path} is outside {minimum}..{maximum}")


def _check_status(value: str, path: str, *, required: bool) -> None:
    if not value:
        if required:
            invalid(f"{path} is missing")
        return
    # The webhook stores a status lower-cased: that may lengthen it (U+0130), never more than twice.
    if len(value) > 2 * MAX_STATUS_CHARS or not value.isprintable() or value != value.strip():
        invalid(f"{path} is not a status")


def _check_text(value: str, path: str) -> None:
    if len(value) > 2 * MAX_TEXT_CHARS or not value.isprintable():
        invalid(f"{path} is not short printable text")


def _check_order(order: ev.Order) -> None:
    _check_required_id(order.order_id, "order.order_id")
    if not order.lines:
        invalid("order.lines is empty")
    seen: set[str] = set()
    for index, line in enumerate(order.lines):
        path = f"order.lines[{index}]"
        _check_required_id(line.line_id, f"{path}.line_id")
        if line.line_id in seen:
            invalid(f"{path}.line_id repeats the id of an earlier line")
        seen.add(line.line_id)
        _check_required_id(line.product_id, f"{path}.product_id")
        _check_range(line.quantity, f"{path}.quantity", 1, MAX_QUANTITY)
        _check_range(line.price, f"{path}.price", 0, INT64_MAX)
        _check_optional_id(line.subscription_id, f"{path}.subscription_id")
        _check_optional_id(line.trial_id, f"{path}.trial_id")
        if line.uid and not is_uid(line.uid):
            invalid(f"{path}.uid is not a user id")
    _check_text(order.currency, "order.currency")
    _check_range(order.total_amount, "order.total_amount", 0, INT64_MAX)
    _check_text(order.status, "order.status")


def _check_subscription(sub: ev.Subscription, kind: str) -> None:
    _check_required_id(sub.subscription_id, "subscription.subscription_id")
    if kind == ev.SUBSCRIPTION_CANCELED:
        _check_optional_id(sub.product_id, "subscription.product_id")
    else:
        _check_required_id(sub.product_id, "subscription.product_id")
    _check_range(sub.billing_cycle_sequence, "subscription.billing_cycle_sequence", 0, MAX_CYCLE)
    _check_status(sub.status, "subscription.status", required=False)
    _check_range(sub.current_period_end_ms, "subscription.current_period_end_ms", 0, INT64_MAX)
    _check_range(sub.price, "subscription.price", 0, INT64_MAX)
    _check_text(sub.currency, "subscription.currency")


def _check_refund(refund: ev.Refund) -> None:
    _check_required_id(refund.refund_id, "refund.refund_id")
    _check_required_id(refund.order_id, "refund.order_id")
    _check_status(refund.status, "refund.status", required=True)
    _check_range(refund.amount, "refund.amount", 0, INT64_MAX)
    _check_range(refund.store_refund_amount, "refund.store_refund_amount", 0, INT64_MAX)


def _check_chargeback(chargeback: ev.Chargeback, kind: str) -> None:
    _check_required_id(chargeback.chargeback_id, "chargeback.chargeback_id")
    _check_required_id(chargeback.order_id, "chargeback.order_id")
    _check_status(chargeback.status, "chargeback.status", required=False)
    _check_status(
        chargeback.chargeback_status, "chargeback.chargeback_status", required=kind == ev.CHARGEBACK_CLOSED
    )
    _check_range(chargeback.amount, "chargeback.amount", 0, INT64_MAX)


def invalid(detail: str) -> NoReturn:
    raise InvalidEventError(detail)
