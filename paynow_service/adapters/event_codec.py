"""Domain `PaymentEvent` <-> Pub/Sub message (binary `paynow.events.v1.PaymentEvent` + attributes).

The mapping lives at the edge so the domain never sees generated code. Attributes
duplicate the routing facts (`event_id`, `event_type`, `schema_version`,
`ordering_key`) so a subscriber, a filter or `dlq list` can read them without decoding.
Decoding checks the version attribute first: a layout this code does not know may not
even parse, and must be dead-lettered as `incompatible_schema`, not as garbage.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, TypeVar

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

# The event's details (one at most), and the message/dataclass name of each.
_DETAIL_TYPES = {
    "order": "Order",
    "subscription": "Subscription",
    "refund": "Refund",
    "chargeback": "Chargeback",
}
_DETAILS = tuple(_DETAIL_TYPES)
T = TypeVar("T")

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
    details = [name for name in _DETAILS if getattr(event, name)]
    if details and details != [_DETAIL_OF_TYPE.get(event.event_type)]:
        # The decoder would refuse it: fail at the producer, where the bug is.
        raise ValueError(f"{event.event_type} cannot carry {', '.join(details)}")
    message = _same_fields(event, pb.PaymentEvent, skip=_DETAILS)
    for name in _DETAILS:
        detail = getattr(event, name)
        if detail is not None:
            getattr(message, name).CopyFrom(_detail_to_pb(name, detail))
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
    details = {name: _detail_from_pb(name, getattr(message, name)) for name in _DETAILS if name == detail}
    event = _same_fields(message, ev.PaymentEvent, skip=_DETAILS, **details)
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


@functools.cache
def _names(target: type[Any]) -> tuple[str, ...]:
    # Cached: every webhook and every worker message maps an event both ways (docs/performance.md).
    if dataclasses.is_dataclass(target):
        return tuple(f.name for f in dataclasses.fields(target))
    return tuple(f.name for f in target.DESCRIPTOR.fields)


def _same_fields(source: object, target: type[T], *, skip: tuple[str, ...] = (), **given: Any) -> T:
    """`target` built from the same-named fields of `source`: the domain's names are the message's
    (one mapping both ways, so a field added to both cannot be forgotten in one direction)."""
    names: tuple[str, ...] = _names(target)  # type: ignore[arg-type]  # classes are hashable
    values = {name: getattr(source, name) for name in names if name not in skip}
    return target(**{**values, **given})


def _detail_to_pb(name: str, detail: Any) -> Any:
    message_type = getattr(pb.PaymentEvent, _DETAIL_TYPES[name])
    if name != "order":
        return _same_fields(detail, message_type)
    lines = [_same_fields(line, pb.PaymentEvent.OrderLine) for line in detail.lines]
    return _same_fields(detail, message_type, skip=("lines",), lines=lines)


def _detail_from_pb(name: str, message: Any) -> Any:
    domain_type = getattr(ev, _DETAIL_TYPES[name])
    if name != "order":
        return _same_fields(message, domain_type)
    lines = tuple(_same_fields(line, ev.OrderLine) for line in message.lines)
    return _same_fields(message, domain_type, skip=("lines",), lines=lines)


def decode_stored_event(raw: object) -> ev.PaymentEvent | None:
    """A PaymentEvent this service stored in Firestore (at ingest, or parked on an order);
    None when the bytes are missing or do not decode."""
    if not isinstance(raw, bytes):
        return None
    try:
        return decode_event(raw, {ATTR_SCHEMA_VERSION: str(ev.SCHEMA_VERSION)})
    except (MalformedMessageError, IncompatibleSchemaError):
        return None
