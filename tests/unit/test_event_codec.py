"""PaymentEvent <-> Pub/Sub message: exact round trips, version gating, garbage."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paynow_service.adapters.event_codec import decode_event, encode_event
from paynow_service.adapters.legacy_messages import legacy_message_detail
from paynow_service.domain import events as ev
from paynow_service.domain.errors import IncompatibleSchemaError, MalformedMessageError
from paynow_service.domain.paynow import parse_webhook
from paynow_service.gen.paynow.events.v1 import payment_event_pb2 as pb
from tests.support.paynow_schema import event_types, example_event, valid_events

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=20)  # hypothesis leaves out lone surrogates, which protobuf strings cannot hold
IDS = st.from_regex(r"[0-9]{1,19}", fullmatch=True)

LINES = st.builds(
    ev.OrderLine,
    line_id=IDS,
    product_id=IDS,
    quantity=INT64,
    price=INT64,
    subscription_id=TEXT,
    trial_id=TEXT,
    uid=TEXT,
)
ORDERS = st.builds(
    ev.Order, order_id=IDS, lines=st.lists(LINES, max_size=4).map(tuple), currency=TEXT, total_amount=INT64,
    status=TEXT,
)  # fmt: skip
SUBSCRIPTIONS = st.builds(
    ev.Subscription, subscription_id=IDS, product_id=IDS, billing_cycle_sequence=INT64, status=TEXT,
    current_period_end_ms=INT64, price=INT64, currency=TEXT,
)  # fmt: skip
REFUNDS = st.builds(
    ev.Refund, refund_id=IDS, order_id=IDS, status=TEXT, amount=INT64, store_refund_amount=INT64
)
CHARGEBACKS = st.builds(
    ev.Chargeback, chargeback_id=IDS, order_id=IDS, status=TEXT, chargeback_status=TEXT, amount=INT64
)
DETAILS: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    ev.ORDER_COMPLETED: ("order", ORDERS),
    ev.SUBSCRIPTION_ACTIVATED: ("subscription", SUBSCRIPTIONS),
    ev.SUBSCRIPTION_RENEWED: ("subscription", SUBSCRIPTIONS),
    ev.SUBSCRIPTION_CANCELED: ("subscription", SUBSCRIPTIONS),
    ev.REFUND: ("refund", REFUNDS),
    ev.CHARGEBACK: ("chargeback", CHARGEBACKS),
    ev.CHARGEBACK_CLOSED: ("chargeback", CHARGEBACKS),
}


@st.composite
def events(draw: st.DrawFn) -> ev.PaymentEvent:
    event_type = draw(st.sampled_from(event_types()))
    detail: dict[str, Any] = {}
    if event_type in DETAILS and draw(
        st.integers(0, 9)
    ):  # mostly with detail; sometimes an invalid-at-ingest one
        name, strategy = DETAILS[event_type]
        detail[name] = draw(strategy)
    return ev.PaymentEvent(
        event_id=draw(IDS),
        event_type=event_type,
        uid=draw(TEXT),
        customer_id=draw(TEXT),
        store_id=draw(TEXT),
        received_at_ms=draw(INT64),
        sent_at_ms=draw(INT64),
        ordering_key=draw(TEXT),
        payload_hash=draw(st.one_of(st.just(""), st.from_regex(r"[0-9a-f]{64}", fullmatch=True))),
        **detail,
    )


@settings(max_examples=150, deadline=None)
@given(events())
def test_round_trip_is_exact(event: ev.PaymentEvent) -> None:
    data, attributes = encode_event(event)
    assert decode_event(data, attributes) == event
    assert attributes == {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "schema_version": "1",
        "ordering_key": event.resolved_ordering_key(),
    }
    assert all(isinstance(v, str) for v in attributes.values())


@settings(max_examples=40, deadline=None)
@given(valid_events())
def test_parsed_webhooks_round_trip(payload: dict[str, Any]) -> None:
    event = parse_webhook(json.dumps(payload).encode(), received_at_ms=5, sent_at_ms=4)
    assert decode_event(*encode_event(event)) == event


@pytest.mark.parametrize("event_type", event_types())
def test_every_example_round_trips(event_type: str) -> None:
    event = parse_webhook(json.dumps(example_event(event_type)).encode(), received_at_ms=5, sent_at_ms=4)
    data, attributes = encode_event(event)
    assert decode_event(data, attributes) == event
    assert decode_event(data, {"schema_version": "1"}) == event  # routing attributes are optional


def test_the_payload_hash_travels_with_the_event() -> None:
    event = parse_webhook(
        json.dumps(example_event(ev.ORDER_COMPLETED)).encode(), received_at_ms=5, sent_at_ms=4
    )
    hashed = replace(event, payload_hash="c0ffee" * 10 + "abcd")
    data, attributes = encode_event(hashed)
    assert pb.PaymentEvent.FromString(data).payload_hash == hashed.payload_hash
    assert decode_event(data, attributes) == hashed
    assert "payload_hash" not in attributes  # in the data only: the attributes stay as they were


def test_a_message_without_the_payload_hash_decodes_with_none() -> None:
    # Published before the field existed (or by `dlq replay` of such a letter): nothing to compare.
    event = parse_webhook(
        json.dumps(example_event(ev.ORDER_COMPLETED)).encode(), received_at_ms=5, sent_at_ms=4
    )
    data, attributes = encode_event(event)
    assert "payload_hash" not in {f.name for f, _ in pb.PaymentEvent.FromString(data).ListFields()}
    assert decode_event(data, attributes).payload_hash == ""


def test_encoding_is_deterministic() -> None:
    event = parse_webhook(
        json.dumps(example_event(ev.ORDER_COMPLETED)).encode(), received_at_ms=5, sent_at_ms=4
    )
    assert encode_event(event) == encode_event(event)


def test_ordering_key_attribute_uses_the_resolution_rule() -> None:
    assert encode_event(ev.PaymentEvent("1", ev.REFUND, uid="u"))[1]["ordering_key"] == "u"
    assert encode_event(ev.PaymentEvent("1", ev.REFUND, customer_id="c"))[1]["ordering_key"] == "customer:c"
    assert encode_event(ev.PaymentEvent("1", ev.REFUND))[1]["ordering_key"] == "event:1"
    assert encode_event(ev.PaymentEvent("1", ev.REFUND, uid="u", ordering_key="k"))[1]["ordering_key"] == "k"


@pytest.mark.parametrize("version", ["2", "0", "-1", "1.0", "one", "", " ", "1e0", "+1", "\uff11", "9" * 50])
def test_unreadable_schema_versions_are_incompatible(version: str) -> None:
    data, attributes = encode_event(ev.PaymentEvent("1", "ON_PAYMENT_COMPLETED"))
    with pytest.raises(IncompatibleSchemaError) as err:
        decode_event(data, {**attributes, "schema_version": version})
    assert err.value.reason == "incompatible_schema"


def test_missing_schema_version_is_incompatible() -> None:
    data, attributes = encode_event(ev.PaymentEvent("1", "ON_PAYMENT_COMPLETED"))
    del attributes["schema_version"]
    with pytest.raises(IncompatibleSchemaError):
        decode_event(data, attributes)


def test_a_future_version_is_incompatible_even_when_its_bytes_are_garbage() -> None:
    with pytest.raises(IncompatibleSchemaError):
        decode_event(b"\xff\xfe layout of v2", {"schema_version": "2"})


@pytest.mark.parametrize(
    "data",
    [b"\xff\xff\xff", b"garbage", b"\x0a\x05ab", b"\x0a\x02\xff\xfe", b"", b"\x12\x0fON_REFUND"],
    ids=["bytes", "text", "truncated", "bad-utf8", "empty", "no-event-id"],
)
def test_garbage_is_malformed(data: bytes) -> None:
    with pytest.raises(MalformedMessageError) as err:
        decode_event(data, {"schema_version": "1"})
    assert err.value.reason == "malformed_message"


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_message_errors(data: bytes) -> None:
    with contextlib.suppress(MalformedMessageError):
        decode_event(data, {"schema_version": "1"})


@pytest.mark.parametrize("name", ["event_id", "event_type", "ordering_key"])
def test_attributes_contradicting_the_data_are_malformed(name: str) -> None:
    data, attributes = encode_event(ev.PaymentEvent("1", ev.REFUND, refund=ev.Refund("r", "o", "approved")))
    with pytest.raises(MalformedMessageError, match=name):
        decode_event(data, {**attributes, name: "other"})


def test_schema_version_field_must_match_the_attribute() -> None:
    data = pb.PaymentEvent(event_id="1", event_type=ev.REFUND, schema_version=0).SerializeToString()
    with pytest.raises(MalformedMessageError):
        decode_event(data, {"schema_version": "1"})


def test_a_detail_that_does_not_fit_the_type_is_malformed() -> None:
    message = pb.PaymentEvent(event_id="1", event_type=ev.REFUND, schema_version=1)
    message.order.order_id = "o"
    with pytest.raises(MalformedMessageError, match="order"):
        decode_event(message.SerializeToString(), {"schema_version": "1"})
    message = pb.PaymentEvent(event_id="1", event_type="ON_PAYMENT_COMPLETED", schema_version=1)
    message.refund.refund_id = "r"
    with pytest.raises(MalformedMessageError):
        decode_event(message.SerializeToString(), {"schema_version": "1"})


def test_encoding_refuses_events_the_decoder_would_refuse() -> None:
    with pytest.raises(ValueError, match="cannot carry"):
        encode_event(ev.PaymentEvent("1", ev.REFUND, order=ev.Order("o", ())))
    with pytest.raises(ValueError, match="schema_version"):
        encode_event(replace(ev.PaymentEvent("1", ev.REFUND), schema_version=2))


def test_an_invalid_at_ingest_event_without_detail_round_trips() -> None:
    event = ev.PaymentEvent("1", ev.ORDER_COMPLETED, customer_id="c")
    assert decode_event(*encode_event(event)) == event


def test_a_legacy_message_is_described_by_its_ids_only() -> None:
    body = {
        "version": 2,
        "minCompatible": 1,
        "eventId": "411111111111111111",
        "eventType": "ON_ORDER_COMPLETED",
        "data": {"order": {"id": "422222222222222222", "customerId": "433333333333333333", "email": "a@b.c"}},
    }
    detail = legacy_message_detail(json.dumps(body).encode())
    assert detail is not None
    assert "event 411111111111111111" in detail
    assert "order 422222222222222222" in detail
    assert "version 2" in detail
    assert "re-drive the event from PayNow" in detail
    assert "433333333333333333" not in detail  # the customer's id
    assert "a@b.c" not in detail


@pytest.mark.parametrize(
    "data",
    [b"", b"\x0a\x03abc", b"{not json", b"[1, 2]", b'{"eventId": "1"}', b"\xff\xfe{"],
)
def test_what_is_not_a_legacy_message_is_not_described_as_one(data: bytes) -> None:
    assert legacy_message_detail(data) is None


def test_ids_that_could_forge_a_log_line_are_left_out() -> None:
    body = {"version": "2\nsevere: fake", "eventId": "x" * 65, "data": {"order": {"id": "ok-1"}}}
    detail = legacy_message_detail(json.dumps(body).encode())
    assert detail is not None
    assert "fake" not in detail
    assert "x" * 65 not in detail
    assert "order ok-1" in detail
