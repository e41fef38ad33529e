"""PayNow webhook payloads -> `PaymentEvent`: a strict envelope, a lenient body.

The envelope (`event_type`, `event_id`, `body`) must be exactly right, or the delivery
is malformed (400). Inside `body` only the fields the service uses are checked, per
handled type; PayNow adds fields freely, so a missing unused field is never an error.
A used field that is missing or of the wrong type is an `InvalidEventError`: terminal,
recorded and dead-lettered. Informational fields (currency, totals, period end) fall
back to a default instead: they never decide a credit.

The envelope is decoded by domain/paynow_envelope.py, and every built event passes
`validate_event` (domain/paynow_checks.py). Decisions worth knowing:
- Ids that become Firestore document ids, ledger keys or ordering keys must look like
  ids (`domain/ids.py`): no '/' (a path), no ':' (it could alias a namespaced ledger key).
- Only ids, statuses, amounts and our own uid are copied: never email, names, IP,
  Steam or Minecraft data.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from paynow_service.domain import events as ev
from paynow_service.domain.errors import MalformedWebhookError as MalformedWebhookError
from paynow_service.domain.ids import INT64_MAX, is_paynow_id, is_uid
from paynow_service.domain.paynow_checks import (
    MAX_CYCLE,
    MAX_QUANTITY,
    MAX_TEXT_CHARS,
    invalid,
    is_status,
)
from paynow_service.domain.paynow_checks import validate_event as validate_event
from paynow_service.domain.paynow_envelope import Envelope as Envelope
from paynow_service.domain.paynow_envelope import Obj
from paynow_service.domain.paynow_envelope import decode_envelope as decode_envelope
from paynow_service.domain.paynow_envelope import payload_hash as payload_hash

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_webhook(body: bytes, *, received_at_ms: int, sent_at_ms: int) -> ev.PaymentEvent:
    """Raw request bytes -> `PaymentEvent` (MalformedWebhookError / InvalidEventError)."""
    return event_from_envelope(decode_envelope(body), received_at_ms=received_at_ms, sent_at_ms=sent_at_ms)


def event_from_envelope(envelope: Envelope, *, received_at_ms: int, sent_at_ms: int) -> ev.PaymentEvent:
    """The domain event of a validated envelope (InvalidEventError for a bad used field)."""
    kind, body = envelope.event_type, envelope.body
    base: dict[str, Any] = {
        "event_id": envelope.event_id,
        "event_type": kind,
        "received_at_ms": received_at_ms,
        "sent_at_ms": sent_at_ms,
    }
    if kind not in ev.HANDLED_TYPES:
        # Acknowledged and ignored; the store id still lets the webhook refuse a foreign store.
        return validate_event(ev.PaymentEvent(**base, store_id=envelope.store_id))
    base["store_id"] = _read_id(body, "store_id", "body", required=False)
    if kind == ev.ORDER_COMPLETED:
        order, uid = _order(body)
        event = ev.PaymentEvent(**base, uid=uid, customer_id=_customer_id(body, top_level=False), order=order)
    elif kind in ev.SUBSCRIPTION_TYPES:
        subscription, uid = _subscription(body, kind)
        event = ev.PaymentEvent(
            **base, uid=uid, customer_id=_customer_id(body, top_level=True), subscription=subscription
        )
    # Refunds and chargebacks carry no checkout, so no uid: the order's record has it.
    elif kind == ev.REFUND:
        event = ev.PaymentEvent(**base, customer_id=_customer_id(body, top_level=False), refund=_refund(body))
    else:
        event = ev.PaymentEvent(
            **base, customer_id=_customer_id(body, top_level=False), chargeback=_chargeback(body, kind)
        )
    return validate_event(event)


def _order(body: Obj) -> tuple[ev.Order, str]:
    order_id = _read_id(body, "id", "body")
    uid, line_uids = _checkout_uids(_read_obj(body, "checkout", "body"), "body.checkout")
    raw_lines = body.get("lines")
    if not isinstance(raw_lines, list):
        invalid("body.lines is missing or not a list")
    if not raw_lines:
        # A completed order always buys something: crediting nothing and calling it
        # processed would hide a PayNow bug, so it goes to the dead-letter topic.
        invalid("body.lines is empty")
    lines: list[ev.OrderLine] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_lines):
        path = f"body.lines[{index}]"
        if not isinstance(raw, dict):
            invalid(f"{path} is not an object")
        line_id = _read_id(raw, "id", path)
        if line_id in seen:
            # Two lines with one id would share one ledger key: one of them would be lost.
            invalid(f"{path}.id repeats the id of an earlier line")
        seen.add(line_id)
        checkout_line = _read_id(raw, "checkout_line_id", path, required=False)
        lines.append(
            ev.OrderLine(
                line_id=line_id,
                product_id=_read_id(raw, "product_id", path),
                quantity=_read_int(raw, "quantity", path, minimum=1, maximum=MAX_QUANTITY),
                price=_read_int(raw, "price", path, minimum=0, maximum=INT64_MAX),
                subscription_id=_read_id(raw, "subscription_id", path, required=False),
                trial_id=_read_id(raw, "trial_id", path, required=False),
                uid=next((u for cid, u in line_uids if cid and cid == checkout_line), ""),
            )
        )
    order = ev.Order(
        order_id=order_id,
        lines=tuple(lines),
        currency=_soft_text(body, "currency"),
        total_amount=_soft_int(body, "total_amount"),
        status=_soft_text(body, "status").lower(),
    )
    # The order's user: the checkout's uid, else the first line that names one.
    return order, uid or next((u for _, u in line_uids), "")


def _subscription(body: Obj, kind: str) -> tuple[ev.Subscription, str]:
    # A cancellation only changes the subscription's status and needs its id; an
    # activation or renewal credits a cycle and needs the product and the cycle number.
    crediting = kind != ev.SUBSCRIPTION_CANCELED
    uid, line_uids = _checkout_uids(_read_obj(body, "checkout", "body"), "body.checkout")
    checkout_line = _read_id(body, "checkout_line_id", "body", required=False)
    subscription = ev.Subscription(
        subscription_id=_read_id(body, "id", "body"),
        product_id=_read_id(body, "product_id", "body", required=crediting),
        billing_cycle_sequence=_read_int(
            body, "billing_cycle_sequence", "body", minimum=0, maximum=MAX_CYCLE, required=crediting
        ),
        status=_read_status(body, "status", "body", required=False),
        current_period_end_ms=_soft_time_ms(body, "current_period_end"),
        # The body has no `price`: subtotal_amount is the period's price before discount and tax.
        price=_soft_int(body, "subtotal_amount"),
        currency=_soft_text(body, "currency"),
    )
    line_uid = next((u for cid, u in line_uids if cid and cid == checkout_line), "")
    return subscription, uid or line_uid or next((u for _, u in line_uids), "")


def _refund(body: Obj) -> ev.Refund:
    return ev.Refund(
        refund_id=_read_id(body, "id", "body"),
        order_id=_read_id(body, "order_id", "body"),
        status=_read_status(body, "status", "body"),
        amount=_read_int(body, "amount", "body", minimum=0, maximum=INT64_MAX, required=False),
        store_refund_amount=_read_int(
            body, "store_refund_amount", "body", minimum=0, maximum=INT64_MAX, required=False
        ),
    )


def _chargeback(body: Obj, kind: str) -> ev.Chargeback:
    return ev.Chargeback(
        chargeback_id=_read_id(body, "id", "body"),
        order_id=_read_id(body, "order_id", "body"),
        status=_read_status(body, "status", "body", required=False),
        # A closed chargeback re-credits only when won: its outcome is required.
        chargeback_status=_read_status(
            body, "chargeback_status", "body", required=kind == ev.CHARGEBACK_CLOSED
        ),
        amount=_read_int(body, "amount", "body", minimum=0, maximum=INT64_MAX, required=False),
    )


def _checkout_uids(checkout: Obj | None, path: str) -> tuple[str, list[tuple[str, str]]]:
    """The checkout's metadata uid and (checkout line id, uid) of each line that has one."""
    if checkout is None:
        return "", []
    uid = _uid(_read_obj(checkout, "metadata", path), f"{path}.metadata")
    lines = checkout.get("lines")
    if lines is None:
        return uid, []
    if not isinstance(lines, list):
        invalid(f"{path}.lines is not a list")
    found: list[tuple[str, str]] = []
    for index, line in enumerate(lines):
        line_path = f"{path}.lines[{index}]"
        if not isinstance(line, dict):
            invalid(f"{line_path} is not an object")
        line_uid = _uid(_read_obj(line, "metadata", line_path), f"{line_path}.metadata")
        if line_uid:
            found.append((_read_id(line, "id", line_path, required=False), line_uid))
    return uid, found


def _customer_id(body: Obj, *, top_level: bool) -> str:
    if top_level and (customer_id := _read_id(body, "customer_id", "body", required=False)):
        return customer_id
    customer = _read_obj(body, "customer", "body")  # null for a refund without a customer
    return _read_id(customer, "id", "body.customer", required=False) if customer is not None else ""


def _uid(metadata: Obj | None, path: str) -> str:
    value = None if metadata is None else metadata.get("uid")
    if value is None or value == "":
        return ""
    # The uid becomes users/{uid}: a '/' would address another document, and a wrong
    # type must not be guessed at when it decides whose wallet is credited.
    if not isinstance(value, str) or not is_uid(value):
        invalid(f"{path}.uid is not a user id")
    return value


def _read_obj(parent: Obj, key: str, path: str) -> Obj | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, dict):
        invalid(f"{path}.{key} is not an object")
    return value


def _read_id(parent: Obj, key: str, path: str, *, required: bool = True) -> str:
    return _read_text(parent, key, path, is_paynow_id, "an id", required=required)


def _read_text(
    parent: Obj, key: str, path: str, fits: Callable[[str], bool], what: str, *, required: bool
) -> str:
    """A string field that `fits`; "" when absent and not required."""
    value = parent.get(key)
    if value is None or value == "":
        if required:
            invalid(f"{path}.{key} is missing")
        return ""
    if not isinstance(value, str) or not fits(value):
        invalid(f"{path}.{key} is not {what}")
    return value


def _read_int(parent: Obj, key: str, path: str, *, minimum: int, maximum: int, required: bool = True) -> int:
    value = parent.get(key)
    if value is None:
        if required:
            invalid(f"{path}.{key} is missing")
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        invalid(f"{path}.{key} is not an integer")
    if not minimum <= value <= maximum:
        invalid(f"{path}.{key} is outside {minimum}..{maximum}")
    return value


def _read_status(parent: Obj, key: str, path: str, *, required: bool = True) -> str:
    # Compared against lower-case names downstream ("approved", "won").
    return _read_text(parent, key, path, is_status, "a status", required=required).strip().lower()


def _soft_int(parent: Obj, key: str) -> int:
    value = parent.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= INT64_MAX:
        return value
    return 0


def _soft_text(parent: Obj, key: str) -> str:
    value = parent.get(key)
    return value if isinstance(value, str) and len(value) <= MAX_TEXT_CHARS and value.isprintable() else ""


def _soft_time_ms(parent: Obj, key: str) -> int:
    value = parent.get(key)
    if not isinstance(value, str) or len(value) > 64:
        return 0
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # PayNow's times are UTC
        return max(0, (moment - _EPOCH) // timedelta(milliseconds=1))
    except (ValueError, OverflowError):  # not a date-time, or past datetime's range once in UTC
        return 0
