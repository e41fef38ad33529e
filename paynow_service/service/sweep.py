"""The sweep: events stranded between record and publish, and refunds or disputes left parked.

A crash or an outage between "record" and "publish" leaves a `webhookEvents` record `queued`
without `publishedAt`; once its publish lease expired, `republish_stranded` takes the lease
(so a concurrent redelivery does not publish it too) and publishes the recorded event.

A refund or dispute whose order is not credited is parked on the order. One parked on an
order that `migrate orders` has credited since is made `queued` again (`requeue_parked`), so
the stranded pass publishes it; one whose order has not come after `PARK_MAX_HOURS` is
dead-lettered as `order_not_credited` (`dead_letter_overdue`). Safe to run at any time,
repeatedly, next to the webhook and the worker.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from paynow_service.domain.errors import OrderNotCreditedError, TransientError
from paynow_service.domain.events import PaymentEvent
from paynow_service.logs import log
from paynow_service.service.processing import DeadLetterPort
from paynow_service.service.republish import EventPublisherPort, LeasedRecordsPort, publish_under_lease

logger = logging.getLogger("paynow_service.sweep")
COMPONENT = "paynow_sweep"
REASON = OrderNotCreditedError.reason


class StrandedRecord(Protocol):
    @property
    def event_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def ordering_key(self) -> str: ...


class StrandedRecordsPort(LeasedRecordsPort, Protocol):
    async def stranded(self, lease_s: int, limit: int) -> Sequence[StrandedRecord]: ...
    async def stored_event(self, record_id: str) -> PaymentEvent | None: ...
    async def mark_published(self, event_id: str) -> None: ...


class Parked(Protocol):
    @property
    def order_id(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def event(self) -> PaymentEvent | None: ...
    @property
    def parked_at(self) -> dt.datetime: ...


P = TypeVar("P", bound=Parked)


class ParkedPort(Protocol[P]):
    """The parked events of orders; each method takes back the items the store itself returned."""

    async def on_credited_orders(self, limit: int) -> Sequence[P]: ...
    async def requeue(self, parked: P, ttl: dt.timedelta) -> bool: ...
    async def overdue(self, max_age: dt.timedelta, limit: int) -> Sequence[P]: ...
    async def release(self, parked: P, reason: str, detail: str) -> bool: ...


@dataclass
class PassReport:
    """One pass of the sweep: what it found, did, and failed to do (and, dry, what it would do)."""

    found: int = 0
    done: int = 0
    failed: int = 0
    would: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SweepLimits:
    lease_s: int
    park_max_hours: int
    ttl_days: int


class SweepService:
    def __init__(
        self,
        records: StrandedRecordsPort,
        parked: ParkedPort[Any],
        publisher: EventPublisherPort,
        dead_letters: DeadLetterPort,
        limits: SweepLimits,
    ) -> None:
        self._records = records
        self._parked = parked
        self._publisher = publisher
        self._dead_letters = dead_letters
        self._limits = limits

    async def requeue_parked(self, *, dry_run: bool, limit: int) -> PassReport:
        """Parked refunds and disputes whose order is credited now: `queued` again, for the stranded pass."""
        report = PassReport()
        found = await self._parked.on_credited_orders(limit)
        report.found = len(found)
        for item in found:
            if dry_run:
                report.would.append(
                    f"would publish parked {item.event_id} (order {item.order_id} is credited now)"
                )
                continue
            if item.event is None:
                continue  # undecodable: left for the dead-letter pass once overdue
            if await self._parked.requeue(item, dt.timedelta(days=self._limits.ttl_days)):
                log(
                    logger,
                    logging.INFO,
                    "Parked event queued - its order is credited",
                    component=COMPONENT,
                    event_id=item.event_id,
                    order_id=item.order_id,
                )
                report.done += 1
        return report

    async def republish_stranded(self, *, dry_run: bool, limit: int) -> PassReport:
        """Events recorded `queued` but never published, whose lease expired: published (signed) once."""
        report = PassReport()
        stranded = await self._records.stranded(self._limits.lease_s, limit)
        report.found = len(stranded)
        for record in stranded:
            fields = {
                "component": COMPONENT,
                "event_id": record.event_id,
                "event_type": record.event_type,
                "ordering_key": record.ordering_key,
            }
            if dry_run:
                report.would.append(
                    f"would publish {record.event_id} {record.event_type} (key {record.ordering_key})"
                )
                continue
            try:
                outcome = await self._republish(record.event_id, fields)
            except TransientError as err:
                # One record out of reach (its document locked by a transaction, Firestore busy) must
                # not end the pass for the others: it stays stranded, for the next sweep.
                log(logger, logging.WARNING, "Stranded event publish failed", reason=err.reason, **fields)
                outcome = "failed"
            if outcome == "failed":
                report.failed += 1
            elif outcome == "published":
                report.done += 1
        return report

    async def _republish(self, event_id: str, fields: dict[str, Any]) -> str:
        """Publish one stranded event under its lease: "published", "leased_elsewhere" or "failed"."""
        event = await self._records.stored_event(event_id)
        if event is None:
            log(logger, logging.ERROR, "Stranded event has no stored PaymentEvent", **fields)
            return "failed"
        attempt = await publish_under_lease(self._records, self._publisher, event, self._limits.lease_s)
        if attempt.status == "leased_elsewhere":
            return attempt.status  # a redelivery or another sweep is publishing it
        if attempt.status == "failed":
            log(
                logger,
                logging.WARNING,
                "Stranded event publish failed",
                error_type=attempt.error_type,
                **fields,
            )
            return "failed"
        await self._records.mark_published(event_id)
        log(logger, logging.WARNING, "Stranded event re-published", status="queued", **fields)
        return "published"

    async def dead_letter_overdue(self, *, dry_run: bool, limit: int) -> PassReport:
        """Refunds and disputes parked past PARK_MAX_HOURS: dead-lettered (`order_not_credited`), then
        taken off their order."""
        report = PassReport()
        hours = self._limits.park_max_hours
        overdue = await self._parked.overdue(dt.timedelta(hours=hours), limit)
        report.found = len(overdue)
        for item in overdue:
            fields = {"component": COMPONENT, "event_id": item.event_id, "order_id": item.order_id}
            if dry_run:
                since = f"{item.parked_at:%Y-%m-%d %H:%M}"
                report.would.append(
                    f"would dead-letter {item.event_id} (order {item.order_id}, parked {since})"
                )
                continue
            detail = f"order {item.order_id} not credited within {hours} h"
            try:
                if item.event is not None:
                    await self._dead_letters.dead_letter(
                        item.event, reason=REASON, error_class="terminal", detail=detail
                    )
                if not await self._parked.release(item, REASON, detail):
                    continue  # its order applied it meanwhile: a replay of the letter is a duplicate
            except TransientError as err:
                log(logger, logging.WARNING, "Parked event dead-letter failed", reason=err.reason, **fields)
                report.failed += 1
                continue
            log(logger, logging.ERROR, "Terminal failure - dead-lettered", reason=REASON, **fields)
            report.done += 1
        return report
