"""`sweep`'s stranded pass: one record out of reach does not end the pass for the others."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from paynow_service.domain.errors import StorageUnavailableError
from paynow_service.domain.events import PaymentEvent
from paynow_service.service.sweep import SweepLimits, SweepService


@dataclass(frozen=True)
class Record:
    event_id: str
    event_type: str = "ON_ORDER_COMPLETED"
    ordering_key: str = "u1"


@dataclass
class Records:
    """Three stranded records; the lease of `locked` cannot be taken (its document is locked)."""

    locked: str
    published: list[str] = field(default_factory=list)

    async def stranded(self, lease_s: int, limit: int) -> Sequence[Record]:
        return [Record("e1"), Record(self.locked), Record("e3")]

    async def stored_event(self, record_id: str) -> PaymentEvent | None:
        return PaymentEvent(event_id=record_id, event_type="ON_ORDER_COMPLETED", received_at_ms=1)

    async def claim_lease(self, event_id: str, lease_s: int) -> bool:
        if event_id == self.locked:
            raise StorageUnavailableError("webhookEvents lease: Aborted")
        return True

    async def mark_published(self, event_id: str) -> None:
        self.published.append(event_id)


@dataclass
class Publisher:
    sent: list[str] = field(default_factory=list)

    async def publish_event(self, event: PaymentEvent) -> str:
        self.sent.append(event.event_id)
        return "m"


async def test_a_record_that_cannot_be_leased_is_counted_failed_and_the_others_are_published() -> None:
    records, publisher = Records(locked="e2"), Publisher()
    unused: Any = None
    sweep = SweepService(
        records, unused, publisher, unused, SweepLimits(lease_s=30, park_max_hours=72, ttl_days=30)
    )
    report = await sweep.republish_stranded(dry_run=False, limit=10)
    assert (report.found, report.done, report.failed) == (3, 2, 1)
    assert publisher.sent == ["e1", "e3"]
    assert records.published == ["e1", "e3"]
