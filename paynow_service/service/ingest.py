"""Webhook ingest: make a verified event durable, then queue it or process it inline.

Queue mode: create `webhookEvents/{event_id}` (a create that fails if it exists) and publish
the event under its ordering key at the same time, then answer from both results (one round
trip instead of two in a row). The answer comes once the event is durable: the publish
confirmed and the record written or known, or, when the publish fails, the event processed
inline instead. A delivery thus publishes before it knows whether it is the first: a
redelivery's copy is answered "already processed" by the worker, and a copy of the same id
with another body is dead-lettered as `payload_conflict` (the event carries its payload hash;
the worker's transaction compares it with the record's, SPEC section 5). Every case, and why
it is safe, is one row of docs/ingest-failures.md. An id this process is ingesting or ingested
lately is recorded first and decided as before (no copy): copies come from redeliveries that
reach another instance (or a restarted one). If the publish and the inline processing both fail, the outcome
is not durable and PayNow retries (the record stays `queued` without `publishedAt`, so a
redelivery or `sweep` publishes it later). Sync mode processes inline through the same core,
after the record (no publish). `WEBHOOK_QUEUE_PERCENT` sends a stable share of ordering keys
through the queue.

The service answers with an `IngestOutcome`, never an HTTP status: the webhook entry point
maps outcomes to answers with one table (entrypoints/webhook.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from opentelemetry.trace import Span, SpanKind

from paynow_service import metrics, tracing
from paynow_service.domain.app_records import FLAG_APP_UNFINISHED, app_verdict
from paynow_service.domain.errors import StorageUnavailableError, TerminalError
from paynow_service.domain.events import PaymentEvent
from paynow_service.logs import log
from paynow_service.service.processing import Outcome, ProcessingCore
from paynow_service.service.republish import (
    EventPublisherPort,
    PublishAttempt,
    publish_once,
    publish_under_lease,
)

logger = logging.getLogger("paynow_service.webhook")
COMPONENT = "paynow_webhook"
# Event ids this process ingested lately (about 64 bytes each): a redelivery of one of them takes the
# sequential path, which publishes no copy. Not needed for correctness, only to keep copies rare.
RECENT_IDS = 10_000


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


@dataclass(frozen=True)
class _Published:
    """A publish of this delivery, whatever came of it, and how long it took."""

    attempt: PublishAttempt
    ms: float

    @property
    def confirmed(self) -> bool:
        return self.attempt.status == "published"


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
        # Queue mode: the deliveries being recorded and published at once, and the ids seen lately.
        self._in_flight: dict[str, asyncio.Future[None]] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()

    def uses_queue(self, event: PaymentEvent) -> bool:
        if self._mode != "queue" or self._publisher is None:
            return False
        return queue_share(event.resolved_ordering_key()) < self._percent

    async def ingest(self, event: PaymentEvent, payload_hash: str) -> IngestResult:
        if payload_hash and event.payload_hash != payload_hash:
            # Whatever is published carries the hash the record gets: the worker's conflict check.
            event = replace(event, payload_hash=payload_hash)
        if self.uses_queue(event) and not event.ignored and not await self._seen(event.event_id):
            return await self._first_sighting(event, payload_hash)
        # Sync mode, a share kept out of the queue, an ignored type, or an id this process has just
        # ingested: record first, then decide (a redelivery publishes nothing).
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

    async def _seen(self, event_id: str) -> bool:
        """True when this process ingested the event id lately, or is ingesting it (then once that
        delivery is answered): its redelivery is recorded first and publishes no copy."""
        pending = self._in_flight.get(event_id)
        if pending is not None:
            await asyncio.shield(pending)
            return True
        return event_id in self._recent

    async def _first_sighting(self, event: PaymentEvent, payload_hash: str) -> IngestResult:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight[event.event_id] = done
        result: IngestResult | None = None
        try:
            result = await self._record_and_publish(event, payload_hash)
            return result
        finally:
            del self._in_flight[event.event_id]
            done.set_result(None)
            if result is not None and result.durable:
                # Not after a 503: PayNow's retry may then be made durable by its publish alone.
                self._recent[event.event_id] = None
                if len(self._recent) > RECENT_IDS:
                    self._recent.popitem(last=False)

    async def _record_and_publish(self, event: PaymentEvent, payload_hash: str) -> IngestResult:
        """Queue mode: the record's create and the publish at once; the answer from both (one row each
        in docs/ingest-failures.md)."""
        created, published = await asyncio.gather(self._create(event, payload_hash), self._publish(event))
        if isinstance(created, StorageUnavailableError):
            return self._unrecorded(event, created, published)
        if created is None:  # the first delivery: the record is ours
            return await self._after_publish(event, published)
        if created.app_shaped:
            decided = await self._app_record(event, payload_hash, created, published)
            return decided if decided is not None else await self._after_publish(event, published)
        return await self._redelivery(event, payload_hash, created, published)

    async def _create(
        self, event: PaymentEvent, payload_hash: str
    ) -> RecordPort | StorageUnavailableError | None:
        """`create_queued`, with an unavailable Firestore as a value: the publish may still have made
        the event durable."""
        with tracing.span("ingest.record") as span:
            try:
                created = await self._records.create_queued(event, payload_hash)
            except StorageUnavailableError as err:
                _trace_event(span, event, "unavailable")
                return err
            _trace_event(span, event, "created" if created is None else "exists")
            return created

    async def _publish(self, event: PaymentEvent) -> _Published:
        assert self._publisher is not None
        started = time.perf_counter()
        # The message carries this span's traceparent: the worker's span is its child.
        with tracing.span("ingest.publish", kind=SpanKind.PRODUCER) as span:
            attempt = await publish_once(self._publisher, event)
            _trace_event(span, event, attempt.status)
        return _Published(attempt, round((time.perf_counter() - started) * 1000, 2))

    def _unrecorded(
        self, event: PaymentEvent, err: StorageUnavailableError, published: _Published
    ) -> IngestResult:
        """The record's create failed (or its outcome is unknown). Durable only if the publish was
        confirmed: the worker's transaction then records the event (or meets whatever record exists)."""
        if not published.confirmed:
            metrics.PUBLISH_FAILURES.inc()
            return IngestResult("unavailable", "none", err.detail)
        log(
            logger,
            logging.WARNING,
            "Event record not written - queued, the worker records it",
            component=COMPONENT,
            event_id=event.event_id,
            event_type=event.event_type,
            ordering_key=event.resolved_ordering_key(),
            reason=err.detail,
        )
        # No `publishedAt` mark: there may be no record to mark, and a mark alone would create one.
        return self._queued(event, published, mark=False, detail=f"record not written: {err.detail}")

    async def _after_publish(self, event: PaymentEvent, published: _Published) -> IngestResult:
        """A record of ours this delivery wrote (or took over from the app): queued, or processed inline."""
        if published.confirmed:
            return self._queued(event, published)
        return await self._fallback(event, published.attempt)

    async def _claim(self, event: PaymentEvent, payload_hash: str) -> RecordPort | IngestResult | None:
        """Record the event. None: this delivery is the first (or took over the app's never-credited
        record); a record: ours, from an earlier delivery; an answer: already decided here."""
        with tracing.span("ingest.record") as span:
            try:
                existing = await self._records.create_queued(event, payload_hash)
            except StorageUnavailableError as err:
                _trace_event(span, event, "unavailable")
                return IngestResult("unavailable", "none", err.detail)
            _trace_event(span, event, "created" if existing is None else "exists")
        if existing is not None and existing.app_shaped:
            return await self._app_record(event, payload_hash, existing)
        return existing

    async def _app_record(
        self,
        event: PaymentEvent,
        payload_hash: str,
        existing: RecordPort,
        published: _Published | None = None,
    ) -> IngestResult | None:
        """A record the app's webhook wrote before cut-over (domain/app_records.py), read before any
        hash comparison: its hash never equals ours. None once the app's `queued` record (an event it
        never credited) is replaced by ours: the caller then handles the event as a first delivery.

        `published`: this delivery's publish in queue mode. Its message meets the app's record in the
        worker's transaction, which decides as this does (duplicate, flagged duplicate, or take-over)."""
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
                    raise StorageUnavailableError("app record changed while taken over")
                return await self._redelivery(event, payload_hash, current, published)
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
            if published is None or not published.confirmed:
                return IngestResult("unavailable", "none", err.detail)
            # Durable all the same: the published message meets the app's record in the worker's
            # transaction, which takes it over (and credits it) or flags it just as this would have.
            if verdict == "take_over":
                return self._queued(event, published, mark=False, detail=err.detail)
        return IngestResult("duplicate", "none", f"app record {existing.status}")

    async def _redelivery(
        self,
        event: PaymentEvent,
        payload_hash: str,
        existing: RecordPort,
        published: _Published | None = None,
    ) -> IngestResult:
        """A record of ours exists. `published`: this delivery's own publish (queue mode), already done:
        a copy of an event already handled is answered "already processed" by the worker, a copy of
        another body is dead-lettered by it as `payload_conflict`."""
        if existing.payload_hash and existing.payload_hash != payload_hash:
            log(
                logger,
                logging.WARNING,
                "Webhook conflict - same event id with another body",
                component=COMPONENT,
                event_id=event.event_id,
                event_type=event.event_type,
                status="conflict",
                published=published.confirmed if published is not None else None,
            )
            return IngestResult("conflict", "none")
        if existing.status != "queued":
            return IngestResult("duplicate", "none")
        if not self.uses_queue(event):
            # Inline processing is idempotent (the transaction checks the status): finish it now.
            return await self._inline(event, "sync")
        if existing.published_at is not None:
            return IngestResult("duplicate", "none")
        # Recorded but not (yet) marked published: a crash or an outage between the two, or the first
        # delivery still in flight. Re-drive it, once, whoever holds the lease (service/republish.py,
        # shared with sweep); this delivery's own confirmed publish already is that re-drive.
        if published is not None and published.confirmed:
            return await self._redriven(event, published)
        try:
            if published is None:
                return await self._publish_or_fallback(event, under_lease=True)
            # This delivery's publish failed: the lease holder processes it inline (no second publish).
            if not await self._records.claim_lease(event.event_id, self._lease_s):
                return IngestResult("duplicate", "none")
            return await self._fallback(event, published.attempt)
        except StorageUnavailableError as err:
            return IngestResult("unavailable", "none", err.detail)

    async def _redriven(self, event: PaymentEvent, published: _Published) -> IngestResult:
        """A `queued` record not marked published, and this delivery's publish confirmed: durable,
        whoever holds the publish lease, so it is marked. The answer is today's: `queued` for the
        lease's taker (the re-drive), `duplicate` when another delivery (or `sweep`) holds it."""
        try:
            leased = await self._records.claim_lease(event.event_id, self._lease_s)
        except StorageUnavailableError:
            leased = False
        if leased:
            metrics.REDRIVEN.inc()
            return self._queued(event, published)
        if await self._handled_meanwhile(event.event_id):
            # The lease was lost to the worker, not to another delivery: it handled the event (this
            # delivery's copy, published at the same time as the record was read) before the claim.
            return self._queued(event, published, mark=False, detail="handled by the worker meanwhile")
        self._records.mark_published_soon(event.event_id)
        return IngestResult("duplicate", "none")

    async def _handled_meanwhile(self, event_id: str) -> bool:
        """True when the record has left `queued` since this delivery read it."""
        try:
            current = await self._records.get(event_id)
        except StorageUnavailableError:
            return False
        return current is not None and current.status != "queued"

    async def _ignore(self, event: PaymentEvent) -> IngestResult:
        try:
            await self._records.mark(event.event_id, status="ignored", result={"outcome": "ignored"})
        except StorageUnavailableError as err:
            return IngestResult("unavailable", "none", err.detail)
        return IngestResult("ignored", "none")

    async def _route(self, event: PaymentEvent) -> IngestResult:
        if self.uses_queue(event):  # recorded first (an id seen lately): publish now
            return await self._publish_or_fallback(event)
        return await self._inline(event, "sync")

    async def _publish_or_fallback(self, event: PaymentEvent, *, under_lease: bool = False) -> IngestResult:
        """Publish (taking the record's publish lease first for a re-drive); process inline if that fails."""
        assert self._publisher is not None
        if under_lease:
            started = time.perf_counter()
            attempt = await publish_under_lease(self._records, self._publisher, event, self._lease_s)
            if attempt.status == "leased_elsewhere":
                return IngestResult("duplicate", "none")
            metrics.REDRIVEN.inc()
            published = _Published(attempt, round((time.perf_counter() - started) * 1000, 2))
        else:
            published = await self._publish(event)
        if not published.confirmed:
            return await self._fallback(event, published.attempt)
        return self._queued(event, published)

    async def _fallback(self, event: PaymentEvent, attempt: PublishAttempt) -> IngestResult:
        """The publish failed: process the event inline, as in sync mode."""
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

    def _queued(
        self, event: PaymentEvent, published: _Published, *, mark: bool = True, detail: str = ""
    ) -> IngestResult:
        """The publish was confirmed: the event is durable in Pub/Sub, the worker processes it."""
        metrics.PUBLISH_LATENCY.observe(published.ms / 1000)
        if mark:
            # Record `publishedAt` off the answer's path. If that write is lost, the record stays
            # `queued` and a later redelivery or `sweep` publishes it again, which the worker
            # answers "already processed".
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
            publish_ms=published.ms,
        )
        return IngestResult("queued", "queue", detail)

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


def _trace_event(span: Span, event: PaymentEvent, outcome: str) -> None:
    """The event's ids and a step's outcome on its span (nothing built when the span records nothing)."""
    if span.is_recording():
        span.set_attributes(
            {
                tracing.EVENT_ID: event.event_id,
                tracing.EVENT_TYPE: event.event_type,
                tracing.ORDERING_KEY: event.resolved_ordering_key(),
                tracing.OUTCOME: outcome,
            }
        )
