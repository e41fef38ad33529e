"""Event provenance: the `event_mac` every published event carries, and the worker's checks before it credits.

Sign and verify (rotation, constant time), the setting, the signing publishers (webhook, sweep,
dead letters of our own events), the worker's order of checks (legacy, schema, MAC, then the
webhook's input checks), and `dlq replay`, which forwards a dead letter's MAC and never signs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import pytest

from paynow_service import logs
from paynow_service.adapters.dead_letter_queue import dead_letter_of, replay_attributes
from paynow_service.adapters.dead_letters import PubSubDeadLetters
from paynow_service.adapters.event_codec import encode_event
from paynow_service.adapters.pubsub_publisher import PubSubPublisher
from paynow_service.config import ConfigError, Settings
from paynow_service.domain import events as ev
from paynow_service.domain import provenance
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.decisions import Decision, EventState
from paynow_service.domain.errors import InvalidEventError
from paynow_service.domain.paynow import parse_webhook, validate_event
from paynow_service.domain.provenance import ATTR_EVENT_MAC, EventSigner, event_mac, verify_event_mac
from paynow_service.entrypoints import cli, dev
from paynow_service.entrypoints.message_handler import MessageHandler
from paynow_service.plugins import get_plugin_manager
from paynow_service.sample_webhooks import build_event
from paynow_service.service.dead_letter_replay import replay
from paynow_service.service.processing import ProcessingCore

NEW = "new-signing-key-0123456789abcdef-0123"
OLD = "old-signing-key-0123456789abcdef-4567"
FOREIGN = "attacker-key-0123456789abcdef-012345"
DATA = b"\n\x03e-1\x12\x12ON_ORDER_COMPLETED"


def test_mac_is_lowercase_hex_hmac_sha256_of_the_data_under_the_utf8_key() -> None:
    expected = hmac.new(NEW.encode("utf-8"), DATA, hashlib.sha256).hexdigest()
    assert event_mac(DATA, NEW) == expected
    assert expected == expected.lower()
    assert len(expected) == 64
    assert event_mac(DATA, "clé-ünïcode-0123456789abcdef-01234") == (
        hmac.new("clé-ünïcode-0123456789abcdef-01234".encode(), DATA, hashlib.sha256).hexdigest()
    )


def test_rotation_first_key_signs_every_key_verifies() -> None:
    signer = EventSigner((NEW, OLD))
    assert signer.sign(DATA) == event_mac(DATA, NEW)
    assert signer.verify(DATA, event_mac(DATA, NEW))
    assert signer.verify(DATA, event_mac(DATA, OLD))  # signed before the rotation
    assert not signer.verify(DATA, event_mac(DATA, FOREIGN))
    assert not EventSigner((NEW,)).verify(DATA, event_mac(DATA, OLD))  # once OLD is dropped


@pytest.mark.parametrize(
    "mac",
    [
        None,
        "",
        event_mac(DATA, NEW).upper(),  # not the lowercase hex the contract names
        event_mac(DATA, NEW)[:-1],
        event_mac(DATA, NEW) + "0",
        "é" * 64,
        event_mac(DATA + b"x", NEW),  # another message's MAC
        "0" * 64,
    ],
)
def test_anything_but_the_mac_of_these_bytes_fails(mac: str | None) -> None:
    assert not verify_event_mac(DATA, mac, (NEW, OLD))


def test_altered_data_fails() -> None:
    mac = event_mac(DATA, NEW)
    assert not verify_event_mac(DATA[:-1] + b"X", mac, (NEW,))
    assert not verify_event_mac(DATA, mac, ())


def test_digests_are_compared_in_constant_time_against_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(provenance.hmac, "compare_digest", spy)
    assert verify_event_mac(DATA, event_mac(DATA, NEW), (NEW, OLD))
    # No short cut after the first key matched: timing does not tell which key signed.
    assert len(calls) == 2
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


def test_signer_hides_its_keys_and_needs_one() -> None:
    assert NEW not in repr(EventSigner((NEW, OLD)))
    with pytest.raises(ValueError, match="at least one"):
        EventSigner(())


# ---- the setting -----------------------------------------------------------------------------


def test_setting_is_a_comma_list_of_long_keys_never_quoted_in_errors() -> None:
    s = Settings.from_env({"EVENT_SIGNING_KEYS": f" {NEW} , {OLD} "})
    assert s.event_signing_keys == (NEW, OLD)
    assert NEW not in repr(s)
    assert Settings.from_env({}).event_signing_keys == ()
    short = "too-short-but-secret"
    for raw, expected in ((f"{NEW},{short}", "shorter than 32"), (f"{NEW},,{OLD}", "empty key")):
        with pytest.raises(ConfigError) as info:
            Settings.from_env({"EVENT_SIGNING_KEYS": raw})
        message = str(info.value)
        assert "EVENT_SIGNING_KEYS" in message
        assert expected in message
        assert short not in message
        assert NEW not in message
        assert "\n" not in message
    with pytest.raises(ConfigError, match="EVENT_SIGNING_KEYS is required"):
        Settings.from_env({}).require("EVENT_SIGNING_KEYS")
    # On the local emulators any non-empty key will do (a short one is refused only on GCP).
    local = Settings.from_env({"EVENT_SIGNING_KEYS": short, "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"})
    assert local.event_signing_keys == (short,)


def test_the_keys_are_redacted_from_every_log_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_literal_secrets", ())
    logs.register_secrets((NEW, 'quote"key-0123456789abcdef-0123456789'))
    record = logging.LogRecord("t", logging.INFO, __file__, 1, f"key {NEW}", None, None)
    record.fields = {"detail": f"oops {OLD} {NEW}", "other": 'quote"key-0123456789abcdef-0123456789'}
    line = logs.JsonFormatter().format(record)
    assert NEW not in line
    assert "quote" not in line
    assert OLD in line  # not registered: nothing else is touched
    assert line.count(logs.REDACTED) == 3


@pytest.mark.parametrize("command", [["worker"], ["sweep"]])
def test_commands_that_publish_or_verify_refuse_to_start_without_keys(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EVENT_SIGNING_KEYS", raising=False)
    assert cli.main(command) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("paynow-service: configuration error: EVENT_SIGNING_KEYS is required")
    assert "\n" not in err


def test_serve_needs_keys_only_for_the_webhook_and_push_routes() -> None:
    from paynow_service.entrypoints.http_app import create_app

    emulator = {"pubsub_emulator_host": "127.0.0.1:1", "push_auth": "disabled"}
    for routes in (("push",), ("webhook",), ("metrics", "push")):
        settings = Settings(http_routes=routes, paynow_webhook_secrets=("pn-x",), **emulator)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="EVENT_SIGNING_KEYS is required"):
            create_app(settings, container=None)
    create_app(Settings(http_routes=("metrics",)), container=SimpleNamespace())  # type: ignore[arg-type]


def test_dev_generates_a_random_key_unless_one_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("EVENT_SIGNING_KEYS", raising=False)
    stack = SimpleNamespace(
        env=lambda: {"PUBSUB_EMULATOR_HOST": "127.0.0.1:1", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:2"}
    )
    first = dev._dev_env(stack, tmp_path, 1, 2)  # type: ignore[arg-type]
    second = dev._dev_env(stack, tmp_path, 1, 2)  # type: ignore[arg-type]
    assert len(first["EVENT_SIGNING_KEYS"]) >= 32
    assert first["EVENT_SIGNING_KEYS"] != second["EVENT_SIGNING_KEYS"]
    Settings.from_env(first)  # valid as generated
    monkeypatch.setenv("EVENT_SIGNING_KEYS", NEW)
    assert dev._dev_env(stack, tmp_path, 1, 2)["EVENT_SIGNING_KEYS"] == NEW  # type: ignore[arg-type]


# ---- publishers ------------------------------------------------------------------------------


async def _closed() -> None:
    return None


@dataclass
class FakeApi:
    """The publisher client as PubSubPublisher uses it: its channel's raw Publish call."""

    messages: list[Any] = field(default_factory=list)
    transport: Any = None

    def __post_init__(self) -> None:
        self.transport = SimpleNamespace(close=_closed, grpc_channel=SimpleNamespace(unary_unary=self._stub))

    def _stub(self, method: str, **serializers: Any) -> Any:
        assert method == "/google.pubsub.v1.Publisher/Publish"

        async def publish(request: Any, *, metadata: Any, timeout: float) -> Any:  # noqa: ASYNC109
            self.messages.extend((request.topic, m) for m in request.messages)
            return SimpleNamespace(message_ids=[f"m{len(self.messages)}"])

        return publish


def publisher(keys: tuple[str, ...] = (NEW, OLD)) -> tuple[PubSubPublisher, FakeApi]:
    pub = PubSubPublisher(Settings(event_signing_keys=keys))
    api = FakeApi()
    pub._client = api  # type: ignore[assignment]
    return pub, api


def an_event(uid: str = "u1", quantity: int = 1) -> ev.PaymentEvent:
    body = build_event("ON_ORDER_COMPLETED", uid=uid, product_id="411486491630370816", quantity=quantity)
    return parse_webhook(json.dumps(body).encode(), received_at_ms=1, sent_at_ms=1)


async def test_published_events_are_signed_with_the_first_key() -> None:
    pub, api = publisher()
    event = an_event()
    await pub.publish_event(event)
    [(topic, message)] = api.messages
    data, attributes = encode_event(event)
    assert topic == pub.events_topic
    assert message.data == data
    assert dict(message.attributes) == {**attributes, ATTR_EVENT_MAC: event_mac(data, NEW)}


async def test_a_process_without_keys_cannot_publish_an_event() -> None:
    pub, api = publisher(())
    with pytest.raises(ConfigError, match="EVENT_SIGNING_KEYS"):
        await pub.publish_event(an_event())
    assert api.messages == []


async def test_dead_letters_sign_our_own_events_and_keep_a_message_as_it_came() -> None:
    pub, api = publisher()
    letters = PubSubDeadLetters(pub)
    event = an_event()
    await letters.dead_letter(event, reason="unknown_product", error_class="terminal", detail="d")
    data, _ = encode_event(event)
    forged_mac = event_mac(b"other", FOREIGN)
    await letters.dead_letter(
        None,
        reason="unverified_event",
        error_class="terminal",
        detail="d",
        raw=(b"forged", {"event_id": "x", ATTR_EVENT_MAC: forged_mac}),
    )
    (_, own), (_, forged) = api.messages
    assert own.attributes[ATTR_EVENT_MAC] == event_mac(data, NEW)
    assert (forged.data, forged.attributes[ATTR_EVENT_MAC]) == (b"forged", forged_mac)  # never re-signed
    assert {own.attributes["reason"], forged.attributes["reason"]} == {"unknown_product", "unverified_event"}


# ---- the worker's checks ---------------------------------------------------------------------


@dataclass
class FakeProcessor:
    seen: list[ev.PaymentEvent] = field(default_factory=list)

    async def process(
        self, event: ev.PaymentEvent, decide: Callable[[EventState], Decision], *, component: str
    ) -> Decision:
        self.seen.append(event)
        return Decision(result="credited", uid=event.uid, points=500)


@dataclass
class FakeDeadLetters:
    letters: list[dict[str, Any]] = field(default_factory=list)

    async def dead_letter(
        self,
        event: ev.PaymentEvent | None,
        *,
        reason: str,
        error_class: str,
        detail: str,
        raw: tuple[bytes, Mapping[str, str]] | None = None,
    ) -> str:
        self.letters.append({"reason": reason, "event": event, "raw": raw})
        return "m1"


@dataclass
class FakeMarker:
    marks: list[tuple[str, str, str]] = field(default_factory=list)

    async def mark_failed(self, event_id: str, status: str, reason: str, detail: str) -> None:
        self.marks.append((event_id, status, reason))


@dataclass
class Worker:
    handler: MessageHandler
    processor: FakeProcessor
    letters: FakeDeadLetters
    marker: FakeMarker

    async def handle(self, data: bytes, attributes: Mapping[str, str]) -> Any:
        return await self.handler.handle(data, attributes, message_id="m", delivery_attempt=1)


def worker(keys: tuple[str, ...] = (NEW, OLD)) -> Worker:
    processor, letters, marker = FakeProcessor(), FakeDeadLetters(), FakeMarker()
    core = ProcessingCore(
        processor, letters, marker, get_plugin_manager().hook, Catalog(), max_delivery_attempts=5
    )
    return Worker(MessageHandler(core, letters, EventSigner(keys)), processor, letters, marker)


def message(event: ev.PaymentEvent | None = None, key: str | None = NEW) -> tuple[bytes, dict[str, str]]:
    data, attributes = encode_event(event or an_event())
    if key is not None:
        attributes[ATTR_EVENT_MAC] = event_mac(data, key)
    return data, attributes


LEGACY = json.dumps(
    {
        "version": 3,
        "minCompatible": 2,
        "eventId": "411486491630370816",
        "eventType": "ON_ORDER_COMPLETED",
        "timestamp": "2024-01-01T00:00:00Z",
        "region": "eu",
        "data": {"uid": "u1", "points": 500},
    }
).encode()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        # legacy first: an old message has no schema_version and no MAC, and is said to be legacy
        ("legacy, no attributes", "legacy_message"),
        ("legacy, future schema", "legacy_message"),
        ("legacy, signed", "legacy_message"),
        # then the schema: a version this worker cannot read, signed or not
        ("future schema, signed", "incompatible_schema"),
        ("future schema, unsigned", "incompatible_schema"),
        ("no schema, unsigned", "incompatible_schema"),
        # then the MAC
        ("no mac", "unverified_event"),
        ("foreign key", "unverified_event"),
        ("mac of another message", "unverified_event"),
        ("altered body under a valid mac", "unverified_event"),
        ("garbage, unsigned", "unverified_event"),
        # decoded only once verified
        ("garbage, signed", "malformed_message"),
        ("attribute contradicts signed data", "malformed_message"),
    ],
)
async def test_checks_in_order_legacy_schema_mac(case: str, reason: str) -> None:
    w = worker()
    data, attributes = message()
    if case.startswith("legacy"):
        data = LEGACY
        attributes = {
            "legacy, no attributes": {},
            "legacy, future schema": {"schema_version": "99"},
            "legacy, signed": {"schema_version": "1", ATTR_EVENT_MAC: event_mac(LEGACY, NEW)},
        }[case]
    elif case.startswith("future schema"):
        attributes["schema_version"] = "99"
        if case.endswith("unsigned"):
            del attributes[ATTR_EVENT_MAC]
    elif case == "no schema, unsigned":
        attributes = {"event_id": attributes["event_id"]}
    elif case == "no mac":
        del attributes[ATTR_EVENT_MAC]
    elif case == "foreign key":
        attributes[ATTR_EVENT_MAC] = event_mac(data, FOREIGN)
    elif case == "mac of another message":
        attributes[ATTR_EVENT_MAC] = message(an_event("someone-else"))[1][ATTR_EVENT_MAC]
    elif case == "altered body under a valid mac":
        data = message(an_event("u1", quantity=1_000_000), key=None)[0]
    elif case.startswith("garbage"):
        data = b"\x08\x96\x01garbage"
        attributes[ATTR_EVENT_MAC] = event_mac(data, NEW if case == "garbage, signed" else FOREIGN)
    elif case == "attribute contradicts signed data":
        attributes["event_id"] = "someone-elses-event"
    outcome = await w.handle(data, attributes)
    assert (outcome.status, outcome.reason, outcome.done) == ("failed_terminal", reason, True)
    assert w.processor.seen == []  # nothing credited
    assert [(d["reason"], d["raw"]) for d in w.letters.letters] == [(reason, (data, attributes))]
    assert w.marker.marks == []  # the event id it claims is not proven: no record is marked


@pytest.mark.parametrize("key", [NEW, OLD])
async def test_a_message_signed_with_any_listed_key_is_processed(key: str) -> None:
    w = worker((NEW, OLD))
    data, attributes = message(key=key)
    outcome = await w.handle(data, attributes)
    assert outcome.status == "processed"
    assert len(w.processor.seen) == 1
    assert w.letters.letters == []


@pytest.mark.parametrize(
    "change",
    [
        {"uid": "victim/../other"},
        {"uid": "__reserved__"},
        {"ordering_key": "someone"},
        {"event_id": "has/slash"},
        {"order": ev.Order("o1", (ev.OrderLine("l1", "p1", quantity=10**12, price=1),))},
        {"order": ev.Order("o1", (ev.OrderLine("l1", "p1", quantity=0, price=1),))},
        {"order": ev.Order("o1", (ev.OrderLine("l1", "p1", quantity=1, price=-5),))},
        {"order": ev.Order("o1", (ev.OrderLine("l1", "p:1", quantity=1, price=1),))},
        {"order": ev.Order("o1", ())},
        {"order": None},
    ],
)
async def test_a_signed_event_the_webhook_would_refuse_is_invalid(change: dict[str, Any]) -> None:
    w = worker()
    event = replace(an_event(), **change)
    data, attributes = encode_event(event)
    attributes = {**attributes, ATTR_EVENT_MAC: event_mac(data, NEW)}
    if "event_id" in change:
        attributes.pop("event_id")  # the attribute would contradict, as the data's own field does not
    outcome = await w.handle(data, attributes)
    assert (outcome.status, outcome.reason) == ("failed_terminal", "invalid_event")
    assert w.processor.seen == []
    assert [(d["reason"], d["raw"]) for d in w.letters.letters] == [("invalid_event", (data, attributes))]
    # Signed by us: the event is ours, and its record says it failed.
    assert w.marker.marks == [(event.event_id, "failed_terminal", "invalid_event")]


# ---- validate_event: the webhook's checks, stated once --------------------------------------


def test_every_parsed_webhook_event_validates() -> None:
    for kind, extra in (
        ("ON_ORDER_COMPLETED", {}),
        ("ON_SUBSCRIPTION_ACTIVATED", {"billing_cycle_sequence": 1}),
        ("ON_SUBSCRIPTION_CANCELED", {}),
        ("ON_REFUND", {"order_id": "411486491630370999", "status": "completed"}),
        ("ON_CHARGEBACK", {"order_id": "411486491630370999"}),
        ("ON_CHARGEBACK_CLOSED", {"order_id": "411486491630370999", "chargeback_status": "won"}),
    ):
        body = build_event(kind, uid="u1", product_id="411486491630370816", **extra)
        event = parse_webhook(json.dumps(body).encode(), received_at_ms=1, sent_at_ms=1)
        assert validate_event(event) is event


@pytest.mark.parametrize(
    "event",
    [
        ev.PaymentEvent("e1", ev.REFUND, refund=ev.Refund("r1", "o1", status="")),
        ev.PaymentEvent("e1", ev.REFUND, refund=ev.Refund("r1", "o/1", status="approved")),
        ev.PaymentEvent("e1", ev.CHARGEBACK_CLOSED, chargeback=ev.Chargeback("c1", "o1")),
        ev.PaymentEvent("e1", ev.SUBSCRIPTION_RENEWED, subscription=ev.Subscription("s1", "", 2)),
        ev.PaymentEvent("e1", ev.SUBSCRIPTION_RENEWED, subscription=ev.Subscription("s1", "p1", -1)),
        ev.PaymentEvent("e1", "ON_SOMETHING_ELSE", customer_id="has space"),
        ev.PaymentEvent("e1", "not a type"),
        ev.PaymentEvent(
            "e1",
            ev.ORDER_COMPLETED,
            order=ev.Order("o1", (ev.OrderLine("l1", "p1", 1, 1), ev.OrderLine("l1", "p2", 1, 1))),
        ),
    ],
)
def test_validate_refuses_what_the_webhook_refuses(event: ev.PaymentEvent) -> None:
    with pytest.raises(InvalidEventError):
        validate_event(event)


# ---- dlq replay: forwards, never signs ------------------------------------------------------


@dataclass
class FakeRecords:
    reset: list[str] = field(default_factory=list)

    async def reset_to_queued(self, event_id: str) -> None:
        self.reset.append(event_id)


@dataclass
class FakeDlq:
    acked: list[Any] = field(default_factory=list)

    def ack(self, letters: Any) -> None:
        self.acked.extend(letters)

    def replay_attributes(self, letter: Any) -> dict[str, str]:
        return replay_attributes(letter)


def received(data: bytes, attributes: dict[str, str], message_id: str) -> Any:
    return SimpleNamespace(
        ack_id=f"ack-{message_id}",
        message=SimpleNamespace(
            data=data, attributes=attributes, ordering_key="u1", message_id=message_id, publish_time=None
        ),
    )


async def test_replay_forwards_the_mac_unchanged_and_never_signs(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, api = publisher((NEW, OLD))  # even a process that has the keys does not sign a replay
    records = FakeRecords()
    genuine_data, genuine_attrs = message(key=OLD)  # signed before a rotation
    forged_data, forged_attrs = message(an_event("victim", quantity=1_000_000), key=FOREIGN)
    dead = {"reason": "x", "error_class": "terminal", "failed_at": "t", "detail": "d"}
    letters = [
        dead_letter_of(received(genuine_data, {**genuine_attrs, **dead, "reason": "unknown_product"}, "g")),
        dead_letter_of(received(forged_data, {**forged_attrs, **dead, "reason": "unverified_event"}, "f")),
    ]
    dlq = FakeDlq()
    report = await replay(letters, records, pub, dlq)
    assert (len(report.replayed), report.failed) == (2, [])
    (_, genuine), (_, forged) = api.messages
    assert (genuine.data, forged.data) == (genuine_data, forged_data)
    assert genuine.attributes[ATTR_EVENT_MAC] == genuine_attrs[ATTR_EVENT_MAC] == event_mac(genuine_data, OLD)
    assert forged.attributes[ATTR_EVENT_MAC] == forged_attrs[ATTR_EVENT_MAC]  # still unverifiable
    assert not verify_event_mac(forged.data, forged.attributes[ATTR_EVENT_MAC], (NEW, OLD))
    for sent, letter in ((genuine, "g"), (forged, "f")):
        assert (sent.attributes["dlq_replay"], sent.attributes["original_message_id"]) == ("true", letter)
        assert not {"reason", "error_class", "failed_at", "detail"} & set(sent.attributes)
    # The unverified letter's claimed event is left alone; the genuine one is queued again.
    assert records.reset == [genuine_attrs["event_id"]]
    assert len(dlq.acked) == 2
    # The replayed genuine letter verifies in the worker and is credited.
    w = worker((NEW, OLD))
    assert (await w.handle(genuine.data, dict(genuine.attributes))).status == "processed"
    assert (await w.handle(forged.data, dict(forged.attributes))).reason == "unverified_event"
