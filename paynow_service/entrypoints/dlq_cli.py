"""`paynow-service dlq list | replay | purge`: inspect and re-drive dead letters.

Reads PUBSUB_DLQ_SUBSCRIPTION. `list` releases every message it looked at (nothing
is consumed). `replay` re-publishes a dead letter to the events topic under its
original ordering key with `dlq_replay=true` and `original_message_id`, resets the
event to `queued`, and only then acknowledges the dead letter: a crash in between
replays it again, which the worker answers "already processed", so running it twice
is safe. `purge` acknowledges (deletes) dead letters after asking, unless `--yes`.

A replay forwards the letter's data and attributes as they are, `event_mac` included: it
never signs (and reads no signing key). A genuine event verifies again in the worker; a
forged one stays unverified and comes back to the DLQ. The record of the event id an
unverified or legacy message claims is left alone: nothing proves the claim.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1 import SubscriberClient

from paynow_service import bootstrap
from paynow_service.adapters.dead_letters import DLQ_ATTRIBUTES
from paynow_service.adapters.event_codec import decode_event
from paynow_service.adapters.firestore_events import EventRecords
from paynow_service.adapters.pubsub_publisher import PubSubPublisher
from paynow_service.config import Settings
from paynow_service.domain.errors import DomainError

PULL_WAIT_S = 3
# Dead-lettered before anything proved which event they are: no record of theirs was marked.
UNPROVEN_REASONS = frozenset({"unverified_event", "legacy_message"})
# Attributes Pub/Sub adds when it forwards a message itself after max delivery attempts.
PUBSUB_DLQ_PREFIX = "CloudPubSubDeadLetter"


@dataclass
class DeadLetter:
    ack_id: str
    message_id: str
    event_id: str
    event_type: str
    ordering_key: str
    reason: str
    error_class: str
    attempts: str
    age_s: int
    forwarded_by_pubsub: bool
    decodes: bool
    detail: str
    data: bytes
    attributes: dict[str, str]

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        for private in ("ack_id", "data", "attributes"):
            out.pop(private)
        return out


def _dead_letter(received: Any) -> DeadLetter:
    message = received.message
    attributes = dict(message.attributes)
    forwarded = any(k.startswith(PUBSUB_DLQ_PREFIX) for k in attributes)
    event_id, event_type = attributes.get("event_id", ""), attributes.get("event_type", "")
    ordering_key, decodes = attributes.get("ordering_key", "") or message.ordering_key, True
    try:
        event = decode_event(message.data, attributes)
        event_id, event_type = event.event_id, event.event_type
        ordering_key = ordering_key or event.resolved_ordering_key()
    except DomainError:
        decodes = False
    published = message.publish_time
    age = int((dt.datetime.now(dt.UTC) - published).total_seconds()) if published else 0
    return DeadLetter(
        ack_id=received.ack_id,
        message_id=message.message_id,
        event_id=event_id,
        event_type=event_type,
        ordering_key=ordering_key,
        reason=attributes.get("reason") or ("max_delivery_attempts" if forwarded else "unknown"),
        error_class=attributes.get("error_class") or ("transient" if forwarded else ""),
        attempts=attributes.get(f"{PUBSUB_DLQ_PREFIX}SourceDeliveryCount", ""),
        age_s=age,
        forwarded_by_pubsub=forwarded,
        decodes=decodes,
        detail=attributes.get("detail", ""),
        data=message.data,
        attributes=attributes,
    )


class DeadLetterQueue:
    """Pulls the DLQ subscription; every message not acknowledged is released on close."""

    def __init__(self, settings: Settings) -> None:
        self._client = SubscriberClient()
        self._path = settings.subscription_path(settings.pubsub_dlq_subscription)
        self._held: dict[str, DeadLetter] = {}

    def read(self, limit: int) -> list[DeadLetter]:
        """Pull until an empty answer (or `limit`); a pull waits at most PULL_WAIT_S for messages."""
        while len(self._held) < limit:
            try:
                response = self._client.pull(
                    subscription=self._path,
                    max_messages=min(100, limit - len(self._held)),
                    timeout=PULL_WAIT_S,
                )
            except gexc.DeadlineExceeded:
                break  # nothing more arrived in the wait
            if not response.received_messages:
                break
            for received in response.received_messages:
                letter = _dead_letter(received)
                self._held[letter.ack_id] = letter
        return list(self._held.values())

    def ack(self, letters: Iterable[DeadLetter]) -> None:
        ack_ids = [letter.ack_id for letter in letters]
        for start in range(0, len(ack_ids), 500):
            self._client.acknowledge(subscription=self._path, ack_ids=ack_ids[start : start + 500])
        for ack_id in ack_ids:
            self._held.pop(ack_id, None)

    def close(self) -> None:
        ack_ids = list(self._held)
        for start in range(0, len(ack_ids), 500):
            self._client.modify_ack_deadline(
                subscription=self._path, ack_ids=ack_ids[start : start + 500], ack_deadline_seconds=0
            )
        self._client.close()


def _print_table(letters: list[DeadLetter]) -> None:
    if not letters:
        print("No dead letters.")
        return
    print(
        f"{'event_id':<22} {'event_type':<28} {'reason':<22} {'class':<9} {'attempts':>8} {'age':>8}  source"
    )
    for d in letters:
        source = "pubsub" if d.forwarded_by_pubsub else "worker"
        age = f"{d.age_s // 3600}h{d.age_s % 3600 // 60:02d}m"
        print(
            f"{d.event_id or '?':<22} {d.event_type or '?':<28} {d.reason:<22} {d.error_class:<9} "
            f"{d.attempts or '-':>8} {age:>8}  {source}{'' if d.decodes else ' (undecodable)'}"
        )
    print(f"{len(letters)} dead letter(s).")
    legacy = sum(1 for d in letters if d.reason == "legacy_message")
    if legacy:
        print(
            f"{legacy} legacy_message: the app's old queue messages (JSON, from before cut-over), never "
            "signed by this service. A replay cannot credit them: re-drive each event from PayNow "
            "(docs/runbook.md, cut-over), then purge them."
        )


async def _replay(settings: Settings, letters: list[DeadLetter], dlq: DeadLetterQueue) -> int:
    db = bootstrap.firestore_client(settings)
    records = EventRecords(
        db, ttl_days=settings.webhook_event_ttl_days, timeout_s=settings.firestore_timeout_s
    )
    publisher = PubSubPublisher(settings)
    failures = 0
    try:
        for letter in letters:
            attributes = {
                k: v
                for k, v in letter.attributes.items()
                if k not in DLQ_ATTRIBUTES and not k.startswith(PUBSUB_DLQ_PREFIX)
            }
            attributes.update(dlq_replay="true", original_message_id=letter.message_id)
            try:
                if letter.event_id and letter.reason not in UNPROVEN_REASONS:
                    await records.reset_to_queued(letter.event_id)
                await publisher.publish(
                    publisher.events_topic, letter.data, attributes, ordering_key=letter.ordering_key
                )
            except DomainError as err:
                print(
                    f"replay of {letter.event_id or letter.message_id} failed: {err.detail}", file=sys.stderr
                )
                failures += 1
                continue
            dlq.ack([letter])
            print(f"replayed {letter.event_id or letter.message_id} ({letter.reason})")
            if letter.reason in UNPROVEN_REASONS:
                print(
                    f"  {letter.event_id or letter.message_id}: forwarded unchanged, it will come back as "
                    f"{letter.reason} (see the runbook's DLQ triage)",
                    file=sys.stderr,
                )
    finally:
        await publisher.aclose()
        db.close()  # type: ignore[no-untyped-call]
    return failures


def run(settings: Settings, args: argparse.Namespace) -> int:
    dlq = DeadLetterQueue(settings)
    try:
        letters = dlq.read(args.max)
        if args.action == "list":
            if args.json:
                for letter in letters:
                    print(json.dumps(letter.public(), sort_keys=True))
            else:
                _print_table(letters)
            return 0
        if args.action == "replay":
            return _run_replay(settings, args, letters, dlq)
        return _run_purge(args, letters, dlq)
    finally:
        dlq.close()


def _run_replay(
    settings: Settings, args: argparse.Namespace, letters: list[DeadLetter], dlq: DeadLetterQueue
) -> int:
    if not args.all and not args.event_id:
        print("dlq replay: give --event-id ID (repeatable) or --all", file=sys.stderr)
        return 2
    chosen = letters if args.all else [d for d in letters if d.event_id in set(args.event_id)]
    missing = set(args.event_id) - {d.event_id for d in chosen}
    for event_id in sorted(missing):
        print(f"no dead letter for event {event_id}", file=sys.stderr)
    if args.dry_run:
        for letter in chosen:
            print(
                f"would replay {letter.event_id or letter.message_id} ({letter.reason}) "
                f"with ordering key {letter.ordering_key or '(none)'}"
            )
        return 0
    failures = asyncio.run(_replay(settings, chosen, dlq))
    print(f"{len(chosen) - failures} replayed, {failures} failed")
    return 1 if failures or missing else 0


def _run_purge(args: argparse.Namespace, letters: list[DeadLetter], dlq: DeadLetterQueue) -> int:
    if not letters:
        print("No dead letters.")
        return 0
    if not args.yes:
        try:
            answer = input(f"Delete {len(letters)} dead letter(s) for good? Type 'yes': ")
        except EOFError:
            answer = ""
        if answer.strip().lower() != "yes":
            print("Nothing deleted.")
            return 1
    dlq.ack(letters)
    print(f"Purged {len(letters)} dead letter(s).")
    return 0
