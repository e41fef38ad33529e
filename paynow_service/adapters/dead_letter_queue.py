"""The dead-letter subscription, read for operators: what each letter is, without consuming it.

`read` pulls (each pull waits at most PULL_WAIT_S) and holds what it got; `ack` deletes the
letters given; `close` releases everything still held (a zero ack deadline), so a `list`
consumes nothing. Letters Pub/Sub forwarded itself after the maximum delivery attempts carry
only its `CloudPubSubDeadLetter*` attributes: they are listed as `max_delivery_attempts`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1 import SubscriberClient

from paynow_service.adapters.dead_letters import DLQ_ATTRIBUTES
from paynow_service.adapters.event_codec import decode_event
from paynow_service.config import Settings
from paynow_service.domain.errors import DomainError

PULL_WAIT_S = 3
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


def dead_letter_of(received: Any) -> DeadLetter:
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
                letter = dead_letter_of(received)
                self._held[letter.ack_id] = letter
        return list(self._held.values())

    def replay_attributes(self, letter: DeadLetter) -> dict[str, str]:
        return replay_attributes(letter)

    def ack(self, letters: Sequence[DeadLetter]) -> None:
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


def replay_attributes(letter: DeadLetter) -> dict[str, str]:
    """The letter's original attributes (the DLQ's own taken off), marked as a replay of it."""
    attributes = {
        k: v
        for k, v in letter.attributes.items()
        if k not in DLQ_ATTRIBUTES and not k.startswith(PUBSUB_DLQ_PREFIX)
    }
    attributes.update(dlq_replay="true", original_message_id=letter.message_id)
    return attributes
