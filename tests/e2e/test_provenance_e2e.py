"""Event provenance end to end, with the pull worker and with the push endpoint: the worker credits
only events the webhook signed (`event_mac`, EVENT_SIGNING_KEYS).

The stack runs with a rotation in progress (EVENT_SIGNING_KEYS="NEW,OLD"): the webhook signs with
NEW, a message signed with OLD is still credited. Messages forged from one taken off the topic
(a spy subscription sees what the webhook publishes) and published straight to it credit nothing
and land in the DLQ as `unverified_event`. A dead letter replayed with `paynow-service dlq replay`
after its fix is credited once, with the MAC the webhook gave it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1 import SubscriberClient
from google.pubsub_v1.services.publisher import PublisherClient as GapicPublisher
from google.pubsub_v1.types import PubsubMessage

from paynow_loadtest.processes import ServiceProcess
from paynow_loadtest.webhook import post
from paynow_service.adapters.emulators import EmulatorStack, free_port
from paynow_service.adapters.event_codec import decode_event, encode_event
from paynow_service.adapters.pubsub_infra import InfraOverrides
from paynow_service.config import Settings
from paynow_service.domain import events as ev
from paynow_service.domain.paynow import parse_webhook
from paynow_service.domain.provenance import ATTR_EVENT_MAC, event_mac
from paynow_service.sample_webhooks import build_event, flake_id
from tests.support.processes import run_cli, serve
from tests.support.stack import (
    CATALOG,
    PRODUCT,
    SIGNING_KEY,
    apply_topology,
    doc,
    ledger,
    pull,
    signed,
    stack_env,
    unique,
    wait_for,
    write_catalog,
)

pytestmark = [pytest.mark.emulators, pytest.mark.e2e, pytest.mark.timeout(280)]

SECRET = "pn-test-secret-one"
NEW_KEY = "new-e2e-signing-key-0123456789abcdef-0123"
OLD_KEY = SIGNING_KEY  # listed second: signed before the rotation, still verified
ATTACKER_KEY = "attacker-key-0123456789abcdef-0123456789"
NEW_PRODUCT = "411486491630377777"


class ProvenanceStack:
    """`serve` (webhook, queue mode) and a worker: the unary pull worker, or a second `serve` with only
    the push endpoint on a fixed port (both can be restarted); a spy subscription on the events topic."""

    def __init__(self, kind: str, emulators: EmulatorStack, tmp: Path) -> None:
        self.kind = kind
        self.tmp = tmp
        self.catalog = write_catalog(tmp)
        self.env = stack_env(
            emulators.env(),
            self.catalog,
            WEBHOOK_MODE="queue",
            HTTP_ROUTES="webhook",
            WORKER_PULL_MODE="unary",  # restartable on the emulator (README)
            FIRESTORE_TIMEOUT_S="3",
            EVENT_SIGNING_KEYS=f"{NEW_KEY},{OLD_KEY}",
        )
        self.settings = Settings.from_env(self.env)
        self.project = self.settings.google_cloud_project
        self.push_port = free_port() if kind == "push" else 0
        endpoint = f"http://127.0.0.1:{self.push_port}/api/tasks/paynow/process" if kind == "push" else None
        apply_topology(
            self.settings,
            InfraOverrides(ack_deadline_s=10, min_backoff_s=1, max_backoff_s=2, push_endpoint=endpoint),
        )
        self.topic = self.settings.topic_path(self.settings.pubsub_topic)
        self.spy = self.settings.subscription_path(unique("spy"))
        self._subscriber = SubscriberClient()
        self._subscriber.create_subscription(request={"name": self.spy, "topic": self.topic})
        self._spied: list[Any] = []
        self.http = serve(self.env, tmp)
        self.worker = self._start_worker()

    def _start_worker(self) -> ServiceProcess:
        if self.kind == "push":
            env = {**self.env, "HTTP_ROUTES": "push", "PORT": str(self.push_port)}
            return ServiceProcess("serve", env, self.tmp, port=self.push_port).wait_ready()
        return ServiceProcess("worker", self.env, self.tmp)

    def restart_worker(self) -> None:
        self.worker.stop()
        self.worker = self._start_worker()

    def stop(self) -> None:
        self.http.stop()
        self.worker.stop()
        with contextlib.suppress(gexc.GoogleAPIError):
            self._subscriber.delete_subscription(request={"subscription": self.spy})
        self._subscriber.close()

    def send(self, event: dict[str, Any]) -> int:
        url = f"http://127.0.0.1:{self.http.port}/api/paynow/webhook"
        return post(url, json.dumps(event).encode(), SECRET).status_code

    def publish(self, data: bytes, attributes: dict[str, str]) -> None:
        """Straight to the topic, as anyone with publish rights on it can."""
        GapicPublisher().publish(
            topic=self.topic,
            messages=[
                PubsubMessage(
                    data=data, attributes=attributes, ordering_key=attributes.get("ordering_key", "")
                )
            ],
        )

    def spied(self, event_id: str, want: int = 1, wait_s: float = 30) -> list[Any]:
        """The messages published to the topic for `event_id` (as a subscriber of the topic sees them)."""
        deadline = time.monotonic() + wait_s
        while True:
            found = [m for m in self._spied if m.attributes.get("event_id") == event_id]
            if len(found) >= want or time.monotonic() > deadline:
                return found
            try:
                response = self._subscriber.pull(subscription=self.spy, max_messages=100, timeout=3)
            except gexc.DeadlineExceeded:
                continue
            if response.received_messages:
                self._subscriber.acknowledge(
                    subscription=self.spy, ack_ids=[m.ack_id for m in response.received_messages]
                )
                self._spied.extend(m.message for m in response.received_messages)
            else:
                time.sleep(0.2)

    def wallet(self, uid: str) -> dict[str, Any] | None:
        return doc(self.project, f"users/{uid}/wallet/points")

    def paid(self, uid: str) -> int | None:
        wallet = self.wallet(uid)
        return None if wallet is None else int(wallet["paidBalance"])

    def record(self, event_id: str) -> dict[str, Any] | None:
        return doc(self.project, f"webhookEvents/{event_id}")


@pytest.fixture(scope="module", params=["pull", "push"])
def stack(
    request: pytest.FixtureRequest, emulators: EmulatorStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProvenanceStack]:
    running = ProvenanceStack(
        request.param, emulators, tmp_path_factory.mktemp(f"provenance-{request.param}")
    )
    try:
        yield running
    finally:
        running.stop()


def order(uid: str, **kw: Any) -> dict[str, Any]:
    return build_event("ON_ORDER_COMPLETED", uid=uid, product_id=PRODUCT, **kw)


def forged_order(template: ev.PaymentEvent, uid: str, quantity: int) -> ev.PaymentEvent:
    """A message taken from the topic, re-encoded: another uid, fresh order and line ids, a quantity."""
    line = ev.OrderLine(line_id=flake_id(), product_id=PRODUCT, quantity=quantity, price=100)
    assert template.order is not None
    return replace(
        template,
        event_id=flake_id(),
        uid=uid,
        order=replace(template.order, order_id=flake_id(), lines=(line,)),
    )


def test_forged_messages_credit_nothing_and_are_dead_lettered_unverified(stack: ProvenanceStack) -> None:
    uid = unique("u")
    genuine = order(uid)
    assert stack.send(genuine) == 200
    assert wait_for(lambda: stack.paid(uid) == 500, timeout=30), stack.kind
    [taken] = stack.spied(genuine["event_id"])
    # The webhook signs with the first key.
    assert taken.attributes[ATTR_EVENT_MAC] == event_mac(taken.data, NEW_KEY)
    template = decode_event(taken.data, dict(taken.attributes))
    original = dict(taken.attributes)

    victims = [unique("victim") for _ in range(5)]
    forgeries: dict[str, tuple[bytes, dict[str, str]]] = {}

    data, attributes = encode_event(forged_order(template, victims[0], 1_000_000))
    forgeries["no mac"] = (data, attributes)
    forgeries["no attributes but the schema version"] = (data, {"schema_version": "1"})
    forgeries["mac copied from another message"] = (
        data,
        {**attributes, ATTR_EVENT_MAC: original[ATTR_EVENT_MAC]},
    )
    data, attributes = encode_event(forged_order(template, victims[1], 1_000_000))
    forgeries["wrong mac"] = (data, {**attributes, ATTR_EVENT_MAC: event_mac(data, ATTACKER_KEY)})
    # The genuine message's body altered (another uid, a huge quantity) under its valid MAC and attributes.
    altered = replace(
        template,
        uid=victims[2],
        order=replace(template.order, lines=(replace(template.order.lines[0], quantity=1_000_000),)),  # type: ignore[union-attr]
    )
    forgeries["altered body under a valid mac"] = (encode_event(altered)[0], dict(original))
    slashed = f"{victims[3]}/x/{victims[4]}"  # users/{uid} would address another document
    data, attributes = encode_event(forged_order(template, slashed, 1))
    forgeries["uid with a slash"] = (data, {**attributes, ATTR_EVENT_MAC: event_mac(data, ATTACKER_KEY)})
    data, attributes = encode_event(forged_order(template, victims[4], 10**12))
    forgeries["huge quantity"] = (data, attributes)

    for name, (data, attributes) in forgeries.items():
        stack.publish(data, {**attributes, "forgery": name})

    letters = pull(stack.settings, stack.settings.pubsub_dlq_subscription, want=len(forgeries), wait_s=60)
    by_name = {m.attributes.get("forgery"): m for m in letters}
    assert set(by_name) == set(forgeries), stack.kind
    for name, letter in by_name.items():
        assert (letter.attributes["reason"], letter.attributes["error_class"]) == (
            "unverified_event",
            "terminal",
        ), name
        data, attributes = forgeries[name]
        # Kept as it came, its MAC (or its lack of one) included.
        assert letter.data == data, name
        assert letter.attributes.get(ATTR_EVENT_MAC) == attributes.get(ATTR_EVENT_MAC), name

    time.sleep(1)
    for victim in [*victims, slashed]:
        assert stack.wallet(victim) is None, (stack.kind, victim)
        assert ledger(stack.project, victim) == {}
    assert stack.paid(uid) == 500
    # The genuine event's record is untouched by the forgery that claims its id.
    assert (stack.record(genuine["event_id"]) or {}).get("status") == "processed"
    for data, _ in forgeries.values():
        claimed = decode_event(data, {"schema_version": "1"}).event_id
        if claimed != genuine["event_id"]:
            assert stack.record(claimed) is None
    logs = stack.worker.logs()
    assert logs.count('"reason":"unverified_event"') >= len(forgeries)
    assert NEW_KEY not in logs
    assert OLD_KEY not in logs


def test_a_message_signed_with_the_second_key_is_credited(stack: ProvenanceStack) -> None:
    uid = unique("u")
    now = int(time.time() * 1000)
    event = parse_webhook(json.dumps(order(uid, quantity=2)).encode(), received_at_ms=now, sent_at_ms=now)
    data, attributes = encode_event(event)
    stack.publish(data, signed(data, attributes, OLD_KEY))
    assert wait_for(lambda: stack.paid(uid) == 1000, timeout=30), stack.kind
    assert len(ledger(stack.project, uid)) == 1


def test_a_replayed_dead_letter_keeps_its_mac_and_is_credited_once(stack: ProvenanceStack) -> None:
    uid = unique("u")
    event = build_event("ON_ORDER_COMPLETED", uid=uid, product_id=NEW_PRODUCT, quantity=2)
    event_id = event["event_id"]
    assert stack.send(event) == 200
    assert wait_for(
        lambda: (stack.record(event_id) or {}).get("failureReason") == "unknown_product", timeout=30
    ), stack.kind
    [published] = stack.spied(event_id)
    listed = run_cli("dlq", "list", "--json", env=stack.env)
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert [(d["event_id"], d["reason"]) for d in letters if d["event_id"] == event_id] == [
        (event_id, "unknown_product")
    ]

    # The fix: the product enters the catalog, the worker restarts with it.
    stack.catalog.write_text(CATALOG + f'\n[products."{NEW_PRODUCT}"]\npoints = 300\n')
    stack.restart_worker()
    replay = run_cli("dlq", "replay", "--event-id", event_id, env=stack.env)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert wait_for(lambda: stack.paid(uid) == 600, timeout=45), stack.kind
    replayed = [m for m in stack.spied(event_id, want=2) if m.attributes.get("dlq_replay") == "true"]
    assert len(replayed) == 1
    # Forwarded as the webhook signed it: same data, same MAC (replay never signs).
    assert replayed[0].data == published.data
    assert replayed[0].attributes[ATTR_EVENT_MAC] == published.attributes[ATTR_EVENT_MAC]
    assert published.attributes[ATTR_EVENT_MAC] == event_mac(published.data, NEW_KEY)

    again = run_cli("dlq", "replay", "--event-id", event_id, env=stack.env)
    assert again.returncode == 1
    assert "no dead letter" in again.stderr
    time.sleep(2)
    assert stack.paid(uid) == 600
    assert len(ledger(stack.project, uid)) == 1
    assert (stack.record(event_id) or {}).get("status") == "processed"
