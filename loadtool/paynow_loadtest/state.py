"""Reading back what a run left: the `webhookEvents` records, wallets and ledgers from
Firestore, and this run's dead letters from the DLQ subscription.

- `wait_drained` polls Firestore until every accepted event reached a final status (bounded);
- `read_state` reads the records, wallets and ledgers of the run's events and users;
- `pull_dead_letters` drains the DLQ subscription, acking only this run's messages.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from google.cloud import firestore
from google.cloud.pubsub_v1 import SubscriberClient

from paynow_loadtest.expectation import Expectation

# "parked": a refund or dispute ahead of its order, stored on it (processed once the order comes).
FINAL_STATUSES = frozenset({"processed", "ignored", "failed_terminal", "dead_lettered", "parked"})


@dataclass
class DeadLetter:
    event_id: str
    reason: str
    error_class: str
    message_id: str


@dataclass
class State:
    records: dict[str, dict[str, Any]]  # event id -> webhookEvents document
    wallets: dict[str, dict[str, Any]]  # uid -> wallet document (absent: no wallet)
    ledgers: dict[str, dict[str, dict[str, Any]]]  # uid -> entry id -> entry


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def read_records(client: firestore.Client, event_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    refs = [client.collection("webhookEvents").document(e) for e in event_ids]
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(refs, 300):
        for snap in client.get_all(chunk, timeout=30):
            if snap.exists:
                found[snap.id] = snap.to_dict() or {}
    return found


def read_state(project: str, expectation: Expectation, *, threads: int = 8) -> State:
    client = firestore.Client(project=project)
    try:
        records = read_records(client, expectation.events)
        uids = expectation.uids
        wallet_refs = [client.document("users", uid, "wallet", "points") for uid in uids]
        wallets: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(wallet_refs, 300):
            for snap in client.get_all(chunk, timeout=30):
                if snap.exists:
                    wallets[snap.reference.parent.parent.id] = snap.to_dict() or {}

        def ledger(uid: str) -> tuple[str, dict[str, dict[str, Any]]]:
            entries = client.collection("users", uid, "ledger").stream(timeout=30)
            return uid, {s.id: s.to_dict() or {} for s in entries}

        with ThreadPoolExecutor(threads) as pool:
            ledgers = dict(pool.map(ledger, uids))
        return State(records=records, wallets=wallets, ledgers=ledgers)
    finally:
        client.close()  # type: ignore[no-untyped-call]


def wait_drained(
    project: str, expectation: Expectation, *, timeout_s: float, poll_s: float = 1.0
) -> tuple[bool, dict[str, str]]:
    """Wait (bounded) until every accepted event has a final status; return (drained, {pending: status})."""
    client = firestore.Client(project=project)
    pending = {e.event_id for e in expectation.accepted}
    statuses: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            records = read_records(client, pending)
            statuses = {e: str(records.get(e, {}).get("status", "missing")) for e in pending}
            pending = {e for e, s in statuses.items() if s not in FINAL_STATUSES}
            if not pending or time.monotonic() >= deadline:
                return not pending, {e: statuses[e] for e in pending}
            time.sleep(poll_s)
    finally:
        client.close()  # type: ignore[no-untyped-call]


def pull_dead_letters(
    subscription_path: str, ours: set[str], *, want: int, wait_s: float, settle_s: float = 2.0
) -> list[DeadLetter]:
    """Pull the DLQ subscription: ack this run's messages, give others back (nack).

    Waits until `want` of ours arrived (at most `wait_s`), then keeps pulling for
    `settle_s` more so that an extra (doubled or unexpected) dead letter shows up too.
    """
    client = SubscriberClient()
    got: list[DeadLetter] = []
    deadline = time.monotonic() + wait_s
    settle_until: float | None = None
    try:
        while True:
            now = time.monotonic()
            if settle_until is None and (len(got) >= want or now >= deadline):
                settle_until = now + settle_s
            if settle_until is not None and now >= settle_until:
                return got
            if not _pull_once(client, subscription_path, ours, got):
                time.sleep(0.2)
    finally:
        client.close()


def _pull_once(
    client: SubscriberClient, subscription_path: str, ours: set[str], got: list[DeadLetter]
) -> int:
    """One pull: ours appended to `got` and acked, the others nacked; how many messages came."""
    response = client.pull(
        subscription=subscription_path, max_messages=500, timeout=5, return_immediately=False
    )
    mine, theirs = [], []
    for received in response.received_messages:
        attrs = dict(received.message.attributes)
        event_id = attrs.get("event_id") or attrs.get("CloudPubSubDeadLetterSourceMessageId", "")
        if event_id in ours:
            mine.append(received.ack_id)
            got.append(
                DeadLetter(
                    event_id=event_id,
                    reason=attrs.get("reason", ""),
                    error_class=attrs.get("error_class", ""),
                    message_id=received.message.message_id,
                )
            )
        else:
            theirs.append(received.ack_id)
    if mine:
        client.acknowledge(subscription=subscription_path, ack_ids=mine)
    if theirs:
        client.modify_ack_deadline(subscription=subscription_path, ack_ids=theirs, ack_deadline_seconds=0)
    return len(response.received_messages)
