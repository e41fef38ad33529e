"""Domain `PaymentEvent` <-> Pub/Sub message (binary `paynow.events.v1.PaymentEvent` + attributes).

The mapping lives at the edge so the domain never sees generated code. Attributes
duplicate the routing facts (`event_id`, `event_type`, `schema_version`,
`ordering_key`) so a subscriber, a filter or `dlq list` can read them without decoding.
Decoding checks the version attribute first: a layout this code does not know may not
even parse, and must be dead-lettered as `incompatible_schema`, not as garbage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from google.protobuf.message import DecodeError

from paynow_service.domain import events as ev
from paynow_service.domain.errors import IncompatibleSchemaError, MalformedMessageError
from paynow_service.gen.paynow.events.v1 import payment_event_pb2 as pb

# Layout versions this code reads. Add the old one here when SCHEMA_VERSION moves on.
READABLE_VERSIONS = frozenset({ev.SCHEMA_VERSION})

ATTR_EVENT_ID = "event_id"
ATTR_EVENT_TYPE = "event_type"
ATTR_SCHEMA_VERSION = "schema_version"
ATTR_ORDERING_KEY = "ordering_key"

# The one detail each type may carry; the ignored types carry none.
_DETAIL_OF_TYPE = {
    ev.ORDER_COMPLETED: "order",
    ev.SUBSCRIPTION_ACTIVATED: "subscription",
    ev.SUBSCRIPTION_RENEWED: "subscription",
    ev.SUBSCRIPTION_CANCELED: "subscription",
    ev.REFUND: "refund",
    ev.CHARGEBACK: "chargeback",
    ev.CHARGEBACK_CLOSED: "chargeback",
}


def encode_event(event: ev.PaymentEvent) -> tuple[bytes, dict[str, str]]:
    """The message data and attributes for `event` (ValueError for an unwritable event)."""
    if event.schema_version != ev.SCHEMA_VERSION:
        raise ValueError(f"this code writes schema_version {ev.SCHEMA_VERSION}, not {event.schema_version}")
    details = [name for name in ("order", "subscription", "refund", "chargeback") if getattr(event, name)]
    if details and details != [_DETAIL_OF_TYPE.get(event.event_type)]:
        # The decoder would refuse it: fail at the producer, where the bug is.
        raise ValueError(f"{event.event_type} cannot carry {', '.join(details)}")
    message = pb.PaymentEvent(
        event_id=event.event_id,
        event_type=event.event_type,
        received_at_ms=event.received_at_ms,
        sent_at_ms=event.sent_at_ms,
        uid=event.uid,
        customer_id=event.customer_id,
        store_id=event.store_id,
        ordering_key=event.ordering_key,
        schema_version=event.schema_version,
    )
    if event.order is not None:
        message.order.CopyFrom(_order_to_pb(event.order))
    elif event.subscription is not None:
        s = event.subscription
        message.subscription.CopyFrom(
            pb.PaymentEvent.Subscription(
                subscription_id=s.subscription_id,
                product_id=s.product_id,
                billing_cycle_sequence=s.billing_cycle_sequence,
                status=s.status,
                current_period_end_ms=s.current_period_end_ms,
                price=s.price,
                currency=s.currency,
            )
        )
    elif event.refund is not None:
        r = event.refund
        message.refund.CopyFrom(
            pb.PaymentEvent.Refund(
                refund_id=r.refund_id,
                order_id=r.order_id,
                status=r.status,
                amount=r.amount,
                store_refund_amount=r.store_refund_amount,
            )
        )
    elif event.chargeback is not None:
        c = event.chargeback
        message.chargeback.CopyFrom(
            pb.PaymentEvent.Chargeback(
                chargeback_id=c.chargeback_id,
                order_id=c.order_id,
                status=c.status,
                chargeback_status=c.chargeback_status,
                amount=c.amount,
            )
        )
    attributes = {
        ATTR_EVENT_ID: event.event_id,
        ATTR_EVENT_TYPE: event.event_type,
        ATTR_SCHEMA_VERSION: str(event.schema_version),
        ATTR_ORDERING_KEY: event.resolved_ordering_key(),
    }
    return message.SerializeToString(deterministic=True), attributes


def decode_event(data: bytes, attributes: Mapping[str, str]) -> ev.PaymentEvent:
    """Message data and attributes -> `PaymentEvent`.

    Raises `IncompatibleSchemaError` when the version is missing, not an integer, or
    not readable here; `MalformedMessageError` for undecodable data, a missing id or
    type, a detail that does not fit the type, or attributes that contradict the data.
    """
    version = check_schema_version(attributes)
    message = pb.PaymentEvent()
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError, TypeError, RuntimeError) as err:
        raise MalformedMessageError(f"message data is not a PaymentEvent ({type(err).__name__})") from None
    if not message.event_id or not message.event_type:
        raise MalformedMessageError("message has no event_id or event_type")
    if message.schema_version != version:
        raise MalformedMessageError("schema_version attribute contradicts the message data")
    detail = message.WhichOneof("detail")
    # No detail is legitimate for any type: an event found invalid at ingest is
    # dead-lettered with only its id and type (and fails again if replayed).
    if detail is not None and detail != _DETAIL_OF_TYPE.get(message.event_type):
        raise MalformedMessageError(f"{message.event_type} cannot carry detail {detail}")
    event = ev.PaymentEvent(
        event_id=message.event_id,
        event_type=message.event_type,
        uid=message.uid,
        customer_id=message.customer_id,
        store_id=message.store_id,
        received_at_ms=message.received_at_ms,
        sent_at_ms=message.sent_at_ms,
        order=_order_from_pb(message.order) if detail == "order" else None,
        subscription=_subscription_from_pb(message.subscription) if detail == "subscription" else None,
        refund=_refund_from_pb(message.refund) if detail == "refund" else None,
        chargeback=_chargeback_from_pb(message.chargeback) if detail == "chargeback" else None,
        schema_version=message.schema_version,
        ordering_key=message.ordering_key,
    )
    # Attributes are optional (a hand-published message may lack them), but when present
    # they must agree: the worker routes and logs by them.
    expected = {
        ATTR_EVENT_ID: event.event_id,
        ATTR_EVENT_TYPE: event.event_type,
        ATTR_ORDERING_KEY: event.resolved_ordering_key(),
    }
    for name, value in expected.items():
        if name in attributes and attributes[name] != value:
            raise MalformedMessageError(f"attribute {name} contradicts the message data")
    return event


def is_legacy_message(data: bytes) -> bool:
    """A message of the app's old publisher: JSON `{version, minCompatible, eventId, eventType, ...}`
    (any JSON object with a `version` field), never a PaymentEvent."""
    return legacy_message_detail(data) is not None


def legacy_message_detail(data: bytes) -> str | None:
    """What an operator needs to know of a message of the app's old publisher (None if it is not one).

    Ids only (event, order, version): the JSON also carries customer data we never repeat.
    """
    if data.lstrip()[:1] != b"{":
        return None  # the cheap test first: a PaymentEvent is not JSON
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError)
        return None
    if not isinstance(doc, dict) or "version" not in doc:
        return None
    order = doc.get("data", {}).get("order") if isinstance(doc.get("data"), dict) else None
    ids = {
        "version": _plain_id(doc.get("version")),
        "event": _plain_id(doc.get("eventId")),
        "type": _plain_id(doc.get("eventType")),
        "order": _plain_id(order.get("id")) if isinstance(order, dict) else "",
    }
    named = ", ".join(f"{k} {v}" for k, v in ids.items() if v)
    return (
        f"the app's old queue message ({named or 'no ids'}), never signed by this service: "
        "re-drive the event from PayNow (runbook: cut-over)"
    )


def _plain_id(value: object) -> str:
    """An id fit for a log line (letters, digits, `-_.:`, at most 64), else ""."""
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    return text if 0 < len(text) <= 64 and all(c.isalnum() or c in "-_.:" for c in text) else ""


def check_schema_version(attributes: Mapping[str, str]) -> int:
    """The message's `schema_version` attribute, when this code reads it (IncompatibleSchemaError)."""
    raw = attributes.get(ATTR_SCHEMA_VERSION)
    if raw is None:
        raise IncompatibleSchemaError("message has no schema_version attribute")
    text = raw.strip()
    # isdecimal + a length bound: int() would also take "+1", "1_0" or 10,000 digits.
    if not (text.isascii() and text.isdecimal() and len(text) <= 9):
        raise IncompatibleSchemaError("schema_version attribute is not an integer")
    version = int(text)
    if version not in READABLE_VERSIONS:
        raise IncompatibleSchemaError(f"schema_version {version} is not readable by this worker")
    return version


def _order_to_pb(order: ev.Order) -> pb.PaymentEvent.Order:
    return pb.PaymentEvent.Order(
        order_id=order.order_id,
        lines=[
            pb.PaymentEvent.OrderLine(
                line_id=line.line_id,
                product_id=line.product_id,
                quantity=line.quantity,
                price=line.price,
                subscription_id=line.subscription_id,
                trial_id=line.trial_id,
                uid=line.uid,
            )
            for line in order.lines
        ],
        currency=order.currency,
        total_amount=order.total_amount,
        status=order.status,
    )


def _order_from_pb(order: pb.PaymentEvent.Order) -> ev.Order:
    return ev.Order(
        order_id=order.order_id,
        lines=tuple(
            ev.OrderLine(
                line_id=line.line_id,
                product_id=line.product_id,
                quantity=line.quantity,
                price=line.price,
                subscription_id=line.subscription_id,
                trial_id=line.trial_id,
                uid=line.uid,
            )
            for line in order.lines
        ),
        currency=order.currency,
        total_amount=order.total_amount,
        status=order.status,
    )


def _subscription_from_pb(s: pb.PaymentEvent.Subscription) -> ev.Subscription:
    return ev.Subscription(
        subscription_id=s.subscription_id,
        product_id=s.product_id,
        billing_cycle_sequence=s.billing_cycle_sequence,
        status=s.status,
        current_period_end_ms=s.current_period_end_ms,
        price=s.price,
        currency=s.currency,
    )


def _refund_from_pb(r: pb.PaymentEvent.Refund) -> ev.Refund:
    return ev.Refund(
        refund_id=r.refund_id,
        order_id=r.order_id,
        status=r.status,
        amount=r.amount,
        store_refund_amount=r.store_refund_amount,
    )


def _chargeback_from_pb(c: pb.PaymentEvent.Chargeback) -> ev.Chargeback:
    return ev.Chargeback(
        chargeback_id=c.chargeback_id,
        order_id=c.order_id,
        status=c.status,
        chargeback_status=c.chargeback_status,
        amount=c.amount,
    )


def decode_stored_event(raw: object) -> ev.PaymentEvent | None:
    """A PaymentEvent this service stored in Firestore (at ingest, or parked on an order);
    None when the bytes are missing or do not decode."""
    if not isinstance(raw, bytes):
        return None
    try:
        return decode_event(raw, {ATTR_SCHEMA_VERSION: str(ev.SCHEMA_VERSION)})
    except (MalformedMessageError, IncompatibleSchemaError):
        return None
