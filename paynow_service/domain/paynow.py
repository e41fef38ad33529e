"""PayNow webhook payloads -> `PaymentEvent`: a strict envelope, a lenient body.

The envelope (`event_type`, `event_id`, `body`) must be exactly right, or the delivery
is malformed (400). Inside `body` only the fields the service uses are checked, per
handled type; PayNow adds fields freely, so a missing unused field is never an error.
A used field that is missing or of the wrong type is an `InvalidEventError`: terminal,
recorded and dead-lettered. Informational fields (currency, totals, period end) fall
back to a default instead: they never decide a credit.

Decisions worth knowing:
- Duplicate object keys anywhere are malformed. PayNow's JSON encoder cannot emit
  them, and a repeated `uid` or `quantity` means different things to different parsers.
- Ids that become Firestore document ids, ledger keys or ordering keys must look like
  ids (`ID_PATTERN`): no '/' (a path), no ':' (it could alias a namespaced ledger key).
- Only ids, statuses, amounts and our own uid are copied: never email, names, IP,
  Steam or Minecraft data.
- `validate_event` states those rules once more on the built `PaymentEvent`: the webhook
  runs it on every event it builds, and the worker on every event it decodes (a message
  on the topic is checked as a delivery is).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

from paynow_service.domain import events as ev
from paynow_service.domain.errors import DomainError, InvalidEventError

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_EVENT_TYPE_PATTERN = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# PayNow bodies nest about eight levels; the bound keeps recursive code (hashing,
# logging) safe from a hostile document that the JSON parser still accepted.
MAX_DEPTH = 64
MAX_QUANTITY = 1_000_000
MAX_CYCLE = 1_000_000
MAX_UID_CHARS = 128  # Firebase Auth's limit
MAX_STATUS_CHARS = 64
MAX_TEXT_CHARS = 64  # informational text (currency)
INT64_MAX = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Obj = dict[str, Any]
_D = TypeVar("_D")


class MalformedWebhookError(DomainError):
    """The delivery is not a PayNow envelope (answered 400)."""

    reason = "malformed"


@dataclass(frozen=True)
class Envelope:
    """The validated outer object of a delivery; `body` is still PayNow's raw JSON."""

    event_type: str
    event_id: str
    body: Obj

    @property
    def store_id(self) -> str:
        """`body.store_id` when it is an id, else "": enough to refuse a foreign store
        before (and whether or not) the rest of the body validates."""
        store = self.body.get("store_id")
        return store if isinstance(store, str) and ID_PATTERN.fullmatch(store) else ""


def parse_webhook(body: bytes, *, received_at_ms: int, sent_at_ms: int) -> ev.PaymentEvent:
    """Raw request bytes -> `PaymentEvent` (MalformedWebhookError / InvalidEventError)."""
    return event_from_envelope(decode_envelope(body), received_at_ms=received_at_ms, sent_at_ms=sent_at_ms)


def payload_hash(body_obj: Any) -> str:
    """SHA-256 hex of canonical JSON (sorted keys, compact, UTF-8): equal for equal bodies
    however PayNow spaced or ordered them. Pass the envelope's `body`."""
    canonical = json.dumps(body_obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: JSON may escape a lone surrogate ("\\ud800"), which strict UTF-8 refuses.
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def decode_envelope(raw: bytes) -> Envelope:
    """Bytes -> `Envelope`, or `MalformedWebhookError` with a detail saying what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        _malformed("body is not UTF-8")
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except _DuplicateKeyError as err:
        _malformed(str(err))
    except RecursionError:
        _malformed("body nests too deeply")
    except ValueError:  # JSONDecodeError, NaN/Infinity, integers past the digit limit
        _malformed("body is not valid JSON")
    if not isinstance(doc, dict):
        _malformed("body is not a JSON object")
    if _too_deep(doc):
        _malformed(f"body nests deeper than {MAX_DEPTH} levels")
    event_type, event_id, payload = doc.get("event_type"), doc.get("event_id"), doc.get("body")
    if not isinstance(event_type, str) or not _EVENT_TYPE_PATTERN.fullmatch(event_type):
        _malformed("event_type is missing or not an event type name")
    if not isinstance(event_id, str) or not ID_PATTERN.fullmatch(event_id):
        _malformed("event_id is missing or not an id (letters, digits, '.', '_', '-'; at most 128)")
    if not isinstance(payload, dict):
        _malformed("body is missing or not an object")
    return Envelope(event_type=event_type, event_id=event_id, body=payload)


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


def validate_event(event: ev.PaymentEvent) -> ev.PaymentEvent:
    """The webhook's input checks on a built event: ids, uids, quantities, amounts, statuses, and the
    detail each handled type needs. Returns the event; raises `InvalidEventError` naming the field.

    The webhook's readers refuse a bad body first (with its JSON path); the worker runs this on
    every decoded message, so an event on the topic passes the same checks as a delivery."""
    if not is_id(event.event_id):
        _invalid("event_id is not an id")
    if not _EVENT_TYPE_PATTERN.fullmatch(event.event_type):
        _invalid("event_type is not an event type name")
    _check_optional_id(event.store_id, "store_id")
    _check_optional_id(event.customer_id, "customer_id")
    if event.uid and not is_uid(event.uid):
        _invalid("uid is not a user id")
    if event.ordering_key:
        _invalid("ordering_key is set (the webhook derives it from uid, customer or event id)")
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
        _invalid(f"{kind} is ignored and carries no details")
    return event


def is_id(value: object) -> bool:
    """An id that may become a document id, a ledger key or an ordering key (`ID_PATTERN`)."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def is_uid(value: object) -> bool:
    """Our user id: it becomes users/{uid}, so no '/', no reserved name, printable, trimmed."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_UID_CHARS
        and "/" not in value
        and value.isprintable()
        and value == value.strip()
        and value not in (".", "..")
        and not (value.startswith("__") and value.endswith("__"))
    )


def _is_status(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_STATUS_CHARS and value.isprintable()


def _required(detail: _D | None, kind: str, name: str) -> _D:
    if detail is None:
        _invalid(f"{kind} carries no {name}")
    return detail


def _check_optional_id(value: str, path: str) -> None:
    if value and not is_id(value):
        _invalid(f"{path} is not an id")


def _check_required_id(value: str, path: str) -> None:
    if not value:
        _invalid(f"{path} is missing")
    if not is_id(value):
        _invalid(f"{path} is not an id")


def _check_range(value: int, path: str, minimum: int, maximum: int) -> None:
    if not minimum <= value <= maximum:
        _invalid(f"{path} is outside {minimum}..{maximum}")


def _check_status(value: str, path: str, *, required: bool) -> None:
    if not value:
        if required:
            _invalid(f"{path} is missing")
        return
    # The webhook stores a status lower-cased: that may lengthen it (U+0130), never more than twice.
    if len(value) > 2 * MAX_STATUS_CHARS or not value.isprintable() or value != value.strip():
        _invalid(f"{path} is not a status")


def _check_text(value: str, path: str) -> None:
    if len(value) > 2 * MAX_TEXT_CHARS or not value.isprintable():
        _invalid(f"{path} is not short printable text")


def _check_order(order: ev.Order) -> None:
    _check_required_id(order.order_id, "order.order_id")
    if not order.lines:
        _invalid("order.lines is empty")
    seen: set[str] = set()
    for index, line in enumerate(order.lines):
        path = f"order.lines[{index}]"
        _check_required_id(line.line_id, f"{path}.line_id")
        if line.line_id in seen:
            _invalid(f"{path}.line_id repeats the id of an earlier line")
        seen.add(line.line_id)
        _check_required_id(line.product_id, f"{path}.product_id")
        _check_range(line.quantity, f"{path}.quantity", 1, MAX_QUANTITY)
        _check_range(line.price, f"{path}.price", 0, INT64_MAX)
        _check_optional_id(line.subscription_id, f"{path}.subscription_id")
        _check_optional_id(line.trial_id, f"{path}.trial_id")
        if line.uid and not is_uid(line.uid):
            _invalid(f"{path}.uid is not a user id")
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


def _order(body: Obj) -> tuple[ev.Order, str]:
    order_id = _read_id(body, "id", "body")
    uid, line_uids = _checkout_uids(_read_obj(body, "checkout", "body"), "body.checkout")
    raw_lines = body.get("lines")
    if not isinstance(raw_lines, list):
        _invalid("body.lines is missing or not a list")
    if not raw_lines:
        # A completed order always buys something: crediting nothing and calling it
        # processed would hide a PayNow bug, so it goes to the dead-letter topic.
        _invalid("body.lines is empty")
    lines: list[ev.OrderLine] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_lines):
        path = f"body.lines[{index}]"
        if not isinstance(raw, dict):
            _invalid(f"{path} is not an object")
        line_id = _read_id(raw, "id", path)
        if line_id in seen:
            # Two lines with one id would share one ledger key: one of them would be lost.
            _invalid(f"{path}.id repeats the id of an earlier line")
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
        _invalid(f"{path}.lines is not a list")
    found: list[tuple[str, str]] = []
    for index, line in enumerate(lines):
        line_path = f"{path}.lines[{index}]"
        if not isinstance(line, dict):
            _invalid(f"{line_path} is not an object")
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
        _invalid(f"{path}.uid is not a user id")
    return value


def _read_obj(parent: Obj, key: str, path: str) -> Obj | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, dict):
        _invalid(f"{path}.{key} is not an object")
    return value


def _read_id(parent: Obj, key: str, path: str, *, required: bool = True) -> str:
    value = parent.get(key)
    if value is None or value == "":
        if required:
            _invalid(f"{path}.{key} is missing")
        return ""
    if not isinstance(value, str) or not is_id(value):
        _invalid(f"{path}.{key} is not an id")
    return value


def _read_int(parent: Obj, key: str, path: str, *, minimum: int, maximum: int, required: bool = True) -> int:
    value = parent.get(key)
    if value is None:
        if required:
            _invalid(f"{path}.{key} is missing")
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        _invalid(f"{path}.{key} is not an integer")
    if not minimum <= value <= maximum:
        _invalid(f"{path}.{key} is outside {minimum}..{maximum}")
    return value


def _read_status(parent: Obj, key: str, path: str, *, required: bool = True) -> str:
    value = parent.get(key)
    if value is None or value == "":
        if required:
            _invalid(f"{path}.{key} is missing")
        return ""
    if not isinstance(value, str) or not _is_status(value):
        _invalid(f"{path}.{key} is not a status")
    # Compared against lower-case names downstream ("approved", "won").
    return value.strip().lower()


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


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> Obj:
    obj: Obj = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKeyError(f"body repeats the key {key[:40]!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _too_deep(doc: Obj) -> bool:
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def _invalid(detail: str) -> NoReturn:
    raise InvalidEventError(detail)


def _malformed(detail: str) -> NoReturn:
    raise MalformedWebhookError(detail)
