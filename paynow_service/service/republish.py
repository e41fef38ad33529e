"""The lease-and-republish step: publish a recorded event once, whoever else is trying.

An event recorded `queued` but not published (a crash or an outage between the two) may be
re-driven by a PayNow redelivery (ingest) and by `sweep` at the same moment. Each first takes
the record's publish lease, a conditional write of which exactly one wins; the winner
publishes. Publishing twice would be harmless (the worker answers "already processed"), but
the lease keeps it to once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from paynow_service.domain.events import PaymentEvent


class LeasedRecordsPort(Protocol):
    async def claim_lease(self, event_id: str, lease_s: int) -> bool: ...


class EventPublisherPort(Protocol):
    async def publish_event(self, event: PaymentEvent) -> str: ...


@dataclass(frozen=True)
class PublishAttempt:
    status: Literal["published", "leased_elsewhere", "failed"]
    error_type: str = ""  # the exception's class when the publish failed


async def publish_once(publisher: EventPublisherPort, event: PaymentEvent) -> PublishAttempt:
    """Publish the event (signed, under its ordering key); a failure is reported, never raised."""
    try:
        await publisher.publish_event(event)
    except Exception as err:  # noqa: BLE001 (any publish failure: the caller falls back or retries later)
        return PublishAttempt("failed", type(err).__name__)
    return PublishAttempt("published")


async def publish_under_lease(
    records: LeasedRecordsPort, publisher: EventPublisherPort, event: PaymentEvent, lease_s: int
) -> PublishAttempt:
    """Take the publish lease of the event's record (expired leases only), then publish it."""
    if not await records.claim_lease(event.event_id, lease_s):
        return PublishAttempt("leased_elsewhere")
    return await publish_once(publisher, event)
