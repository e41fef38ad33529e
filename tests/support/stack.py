"""Helpers for tests that use the emulators: settings, topology, catalog, dead letters, Firestore reads."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.pubsub_v1 import SubscriberClient

from paynow_loadtest.stack import FAST
from paynow_service.adapters.pubsub_infra import InfraOverrides, PubSubInfra, desired_topology
from paynow_service.config import Settings
from paynow_service.domain.provenance import ATTR_EVENT_MAC, event_mac

PRODUCT = "411486491630370816"
PROMO_PRODUCT = "411486491630370818"
PLAN = "411486491630370817"
CATALOG = f"""
[products."{PRODUCT}"]
points = 500

[products."{PROMO_PRODUCT}"]
points = 50
kind = "promo"

[subscriptions."{PLAN}"]
points_per_cycle = 1000
"""
# EVENT_SIGNING_KEYS of every test stack (a fixed test key: the first signs, every one verifies).
SIGNING_KEY = "test-event-signing-key-0123456789abcdef"


def signed(data: bytes, attributes: Mapping[str, str], key: str = SIGNING_KEY) -> dict[str, str]:
    """`attributes` with the `event_mac` of `data` under `key`, as the webhook publishes them."""
    return {**attributes, ATTR_EVENT_MAC: event_mac(data, key)}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def write_catalog(directory: Path, text: str = CATALOG) -> Path:
    path = directory / f"catalog-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(text)
    return path


def stack_env(
    emulator_env: Mapping[str, str], catalog: Path | None = None, **overrides: str
) -> dict[str, str]:
    """Environment for the service on the emulators, with topic names unique to the caller."""
    env = {
        **emulator_env,
        "PUBSUB_TOPIC": unique("events"),
        "PUBSUB_DLQ_TOPIC": unique("events-dlq"),
        "PUBSUB_SUBSCRIPTION": unique("events-sub"),
        "PUBSUB_DLQ_SUBSCRIPTION": unique("events-dlq-sub"),
        "PAYNOW_WEBHOOK_SECRETS": "pn-test-secret-one,pn-test-secret-two",
        "EVENT_SIGNING_KEYS": SIGNING_KEY,
        "PUSH_AUTH": "disabled",
        "POINTS_AUTH": "disabled",
    }
    if catalog is not None:
        env["PRODUCT_CATALOG"] = str(catalog)
    env.update(overrides)
    return env


def apply_topology(settings: Settings, overrides: InfraOverrides = FAST) -> None:
    infra = PubSubInfra(settings)
    try:
        infra.apply(desired_topology(settings, overrides))
    finally:
        infra.close()


def pull(settings: Settings, subscription_id: str, *, want: int, wait_s: float = 15) -> list[Any]:
    """Pull and ack up to `want` messages, waiting at most `wait_s`."""
    client = SubscriberClient()
    path = settings.subscription_path(subscription_id)
    got: list[Any] = []
    deadline = time.monotonic() + wait_s
    try:
        while len(got) < want and time.monotonic() < deadline:
            try:
                response = client.pull(subscription=path, max_messages=want - len(got), timeout=5)
            except gexc.DeadlineExceeded:  # nothing arrived in this round
                continue
            if response.received_messages:
                client.acknowledge(subscription=path, ack_ids=[m.ack_id for m in response.received_messages])
                got.extend(m.message for m in response.received_messages)
    finally:
        client.close()
    return got


def doc(project: str, path: str) -> dict[str, Any] | None:
    client = firestore.Client(project=project)
    try:
        snap = client.document(path).get()
        return snap.to_dict() if snap.exists else None
    finally:
        client.close()


def ledger(project: str, uid: str) -> dict[str, dict[str, Any]]:
    client = firestore.Client(project=project)
    try:
        return {s.id: s.to_dict() or {} for s in client.collection(f"users/{uid}/ledger").stream()}
    finally:
        client.close()


def wait_for(predicate: Any, timeout: float = 20, interval: float = 0.25) -> Any:
    """Poll until `predicate()` is truthy; return its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value
