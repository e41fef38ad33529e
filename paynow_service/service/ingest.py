"""Webhook ingest: make a verified event durable, then queue it or process it inline.

Queue mode: claim `webhookEvents/{event_id}` (a create that fails if it exists), publish
the event under its ordering key, set `publishedAt`, answer. If the publish fails, the
event is processed inline instead; if that fails too the outcome is not durable and PayNow
retries (the record stays `queued` without `publishedAt`, so a redelivery or `sweep`
publishes it later). Sync mode processes inline through the same core.
`WEBHOOK_QUEUE_PERCENT` sends a stable share of ordering keys through the queue.

The service answers with an `IngestOutcome`, never an HTTP status: the webhook entry point
maps outcomes to answers with one table (entrypoints/webhook.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Literal, Protocol

from paynow_service import metrics
from paynow_service.domain.app_records import FLAG_APP_UNFINISHED, app_verdict
from paynow_service.domain.errors import StorageUnavailableError, TerminalError
from paynow_service.domain.events import PaymentEvent
from paynow_service.logs import log
from paynow_service.service.processing import Outcome, ProcessingCore
from paynow_service.service.republish import EventPublisherPort, publish_once, publish_under_lease

logger = logging.getLogger("paynow_service.webhook")
COMPONENT = "paynow_webhook"


class RecordPort(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def payload_hash(self) -> str: ...
    @property
    def published_at(self) -> object | None: ...
    @property
    def app_shaped(self) -> bool: ...


class EventRecordsPort(Protocol):
    async def create_queued(self, event: PaymentEvent, payload_hash: str) -> RecordPort | None: ...
    async def get(self, event_id: str) -> RecordPort | None: ...
    async def take_over_app_record(self, event: PaymentEvent, payload_hash: str) -> bool: ...
    async def flag_app_unfinished(self, event_id: str) -> None: ...
    async def claim_lease(self, event_id: str, lease_s: int) -> bool: ...
    def mark_published_soon(self, event_id: str) -> None: ...
    async def release_lease(self, event_id: str) -> None: ...
    async def flush_published(self) -> None: ...
    async def mark(self, event_id: str, **fields: object) -> None: ...


IngestOutcome = Literal[
    "queued",  # published to the topic: the worker processes it
    "processed",  # processed inline
    "duplicate",  # already recorded with this body (or by the app before cut-over)
    "conflict",  # already recorded with another body: refused, not retried
    "ignored",  # a type the service does not handle
    "failed_terminal",  # recorded and dead-lettered: retrying cannot help
    "dead_lettered",  # dead-lettered after its last attempt
    "unavailable",  # not durable: storage was unavailable
    "transient",  # not durable: processing failed in a way a retry may fix
]
# The outcomes after which nothing is durable: PayNow must deliver the event again.
NOT_DURABLE: frozenset[IngestOutcome] = frozenset({"unavailable", "transient"})


@dataclass(frozen=True)
class IngestResult:
    """What the ingest did with a delivery and how it got there (for the answer, logs and metrics)."""

    outcome: IngestOutcome
    path: str  # queue, sync, fallback, none
    detail: str = ""
    points: int = 0

    @property
    def durable(self) -> bool:
        """False when PayNow must retry: nothing may be assumed recorded or processed."""
        return self.outcome not in NOT_DURABLE


def queue_share(ordering_key: str) -> int:
    """A stable 0..99 bucket of the ordering key (same user, same bucket, every process)."""
    digest = hashlib.sha256(ordering_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100


class IngestService:
    def __init__(
        self,
        records: EventRecordsPort,
        publisher: EventPublisherPort | None,
        core: ProcessingCore,
        *,
        mode: str,
        queue_percent: int,
        lease_s: int,
    ) -> None:
        self._records = records
        self._publisher = publisher
        self._core = core
        self._mode = mode
        self._percent = queue_percent
        self._lease_s = lease_s

    def uses_queue(self, event: PaymentEvent) -> bool:
        if self._mode != "queue" or self._publisher is None:
            return False
        return queue_share(event.resolved_ordering_key()) < self._percent

    async def ingest(self, event: PaymentEvent, payload_hash: str) -> IngestResult:
        claimed = await self._claim(event, payload_hash)
        if isinstance(claimed, IngestResult):
            return claimed
        if claimed is not None:
            return await self._redelivery(event, payload_hash, claimed)
        if event.ignored:
            return await self._ignore(event)
        return await self._route(event)

    async def ingest_invalid(
        self, event: PaymentEvent, payload_hash: str, error: TerminalError
    ) -> IngestResult:
        """A genuine event whose body lacks what we need: record and dead-letter it (done: no retry)."""
        claimed = await self._claim(event, payload_hash)
        if isinstance(claimed, IngestResult):
            return claimed
        if claimed is not None and claimed.status != "queued":
            return IngestResult("duplicate", "none")
        outcome = await self._core.fail_terminal(event, error, component=COMPONENT)
        return self._from_outcome(outcome, "sync")

    async def _claim(self, event: PaymentEvent, payload_hash: str) -> RecordPort | IngestResult | None:
        """Record the event. None: this delivery is the first (or took over the app's never-credited
        record); a record: ours, from an earlier delivery; an answer: already decided here."""
        try:
            existing = await self._records.create_queued(event, payload_hash)
        except StorageUnavailableError as err:
            return IngestResult("unavailable", "none", err.detail)
        if existing is not None and existing.app_shaped:
            return await self._app_record(event, payload_hash, existing)
        return existing

    async def _app_record(
        self, event: PaymentEvent, payload_hash: str, existing: RecordPort
    ) -> IngestResult | None:
        """A record the app's webhook wrote before cut-over (domain/app_records.py), read before any
        hash comparison: its hash never equals ours. None once the app's `queued` record (an event it
        never credited) is replaced by ours: the caller then handles the event as a first delivery."""
        verdict = app_verdict(existing.status)
        fields = {"component": COMPONENT, "event_id": event.event_id, "event_type": event.event_type}
        try:
            if verdict == "take_over":
                if await self._records.take_over_app_record(event, payload_hash):
                    log(logger, logging.INFO, "Webhook took over an app-queued event", **fields)
                    return None
                # Another delivery took it over first: it is our record now, handled as a redelivery.
                current = await self._records.get(event.event_id)
                if current is None or current.app_shaped:
                    return IngestResult("unavailable", "none", "app record changed while taken over")
                return await self._redelivery(event, payload_hash, current)
            if verdict == "unfinished":
                await self._records.flag_app_unfinished(event.event_id)
                log(
                    logger,
                    logging.WARNING,
                    "Event left unfinished by the app - flagged for reconciliation",
                    app_status=existing.status,
                    flag=FLAG_APP_UNFINISHED,
                    **fields,
                )
        except StorageUnavailableError as err:
            return IngestResult("unavailable", "none", err.detail)
        return IngestResult("duplicate", "none", f"app record {existing.status}")

    async def _redelivery(self, event: PaymentEvent, payload_hash: str, existing: RecordPort) -> IngestResult:
        if existing.payload_hash and existing.payload_hash != payload_hash:
            log(
                logger,
                logging.WARNING,
                "Webhook conflict - same event id with another body",
                component=COMPONENT,
                event_id=event.event_id,
                event_type=event.event_type,
                status="conflict",
            )
            return IngestResult("conflict", "none")
        if existing.status != "queued":
            return IngestResult("duplicate", "none")
        if not self.uses_queue(event):
            # Inline processing is idempotent (the transaction checks the status): finish it now.
            return await self._inline(event, "sync")
        if existing.published_at is not None:
            return IngestResult("duplicate", "none")
        # Recorded but never published (a crash or an outage between the two): re-drive it,
        # once, whoever holds the lease (service/republish.py, shared with sweep).
        try:
            return await self._publish_or_fallback(event, under_lease=True)
        except StorageUnavailableError as err:
            return IngestResult("unavailable", "none", err.detail)

    async def _ignore(self, event: PaymentEvent) -> IngestResult:
        try:
            await self._records.mark(event.event_id, status="ignored", result={"outcome": "ignored"})
        except StorageUnavailableError as err:
            return IngestResult("unavailable", "none", err.detail)
        return IngestResult("ignored", "none")

    async def _route(self, event: PaymentEvent) -> IngestResult:
        if self.uses_queue(event):
            return await self._publish_or_fallback(event)
        return await self._inline(event, "sync")

    async def _publish_or_fallback(self, event: PaymentEvent, *, under_lease: bool = False) -> IngestResult:
        """Publish (taking the record's publish lease first for a re-drive); process inline if that fails."""
        assert self._publisher is not None
        started = time.perf_counter()
        if under_lease:
            attempt = await publish_under_lease(self._records, self._publisher, event, self._lease_s)
            if attempt.status == "leased_elsewhere":
                return IngestResult("duplicate", "none")
            metrics.REDRIVEN.inc()
        else:
            attempt = await publish_once(self._publisher, event)
        if attempt.status == "failed":
            metrics.PUBLISH_FAILURES.inc()
            metrics.FALLBACKS.inc()
            log(
                logger,
                logging.WARNING,
                "Publish failed - processing inline",
                component=COMPONENT,
                event_id=event.event_id,
                event_type=event.event_type,
                ordering_key=event.resolved_ordering_key(),
                error_type=attempt.error_type,
                path="fallback",
            )
            result = await self._inline(event, "fallback")
            if not result.durable:
                # Give the publish lease back: PayNow's retry must be able to take it at once,
                # not be answered "duplicate" while nothing publishes the event.
                await self._records.release_lease(event.event_id)
            return result
        publish_ms = round((time.perf_counter() - started) * 1000, 2)
        metrics.PUBLISH_LATENCY.observe(publish_ms / 1000)
        # The event is durable once Pub/Sub confirmed it: record `publishedAt` off the
        # answer's path. If that write is lost, the record stays `queued` and a later
        # redelivery or `sweep` publishes it again, which the worker answers "already processed".
        self._records.mark_published_soon(event.event_id)
        log(
            logger,
            logging.INFO,
            "Webhook processed successfully",
            component=COMPONENT,
            event_id=event.event_id,
            event_type=event.event_type,
            ordering_key=event.resolved_ordering_key(),
            status="queued",
            path="queue",
            publish_ms=publish_ms,
        )
        return IngestResult("queued", "queue")

    async def drain(self) -> None:
        """Write the pending `publishedAt` marks (on shutdown)."""
        await self._records.flush_published()

    async def _inline(self, event: PaymentEvent, path: str) -> IngestResult:
        outcome = await self._core.process(event, component=COMPONENT)
        return self._from_outcome(outcome, path)

    def _from_outcome(self, outcome: Outcome, path: str) -> IngestResult:
        if outcome.status == "transient":
            # Nothing was marked done: PayNow retries, and the record lets a redelivery finish it.
            return IngestResult("transient", path, outcome.reason, 0)
        return IngestResult(outcome.status, path, outcome.reason, outcome.points)
