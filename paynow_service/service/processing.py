"""The processing core: one event in, one outcome out. Shared by the push endpoint, the
pull worker and the sync webhook, so every path gives identical results.

- processed / duplicate / ignored: done, acknowledge.
- terminal (unknown product, unknown user, invalid event ...): publish to the dead-letter
  topic with its reason, then mark `failed_terminal`; acknowledge only once the DLQ
  publish is confirmed, otherwise report transient so the message is retried. A
  `payload_conflict` (the event id recorded with another body) is dead-lettered and its
  record left as it is: the record belongs to the other body.
- transient (Firestore unavailable, contention, order not credited yet): retry, except
  at the last delivery attempt, where the core dead-letters it itself (`dead_lettered`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import pluggy

from paynow_service import metrics
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.decisions import Decision, EventState
from paynow_service.domain.errors import DomainError, PayloadConflictError, TerminalError, TransientError
from paynow_service.domain.events import PaymentEvent
from paynow_service.domain.statuses import DecisionResult, FailedStatus, OutcomeStatus
from paynow_service.logs import log
from paynow_service.service.decide import decide

logger = logging.getLogger("paynow_service.processing")


class EventUnitOfWork(Protocol):
    """One event, one transaction: read its `EventState`, call `decide` with it, apply the
    `Decision`, all or nothing. A retried transaction reads and decides again."""

    async def process(
        self, event: PaymentEvent, decide: Callable[[EventState], Decision], *, component: str
    ) -> Decision: ...


class DeadLetterPort(Protocol):
    """Publishes a dead letter and waits for the server's confirmation (raises if not confirmed)."""

    async def dead_letter(
        self,
        event: PaymentEvent | None,
        *,
        reason: str,
        error_class: str,
        detail: str,
        raw: tuple[bytes, Mapping[str, str]] | None = None,
    ) -> str: ...


class EventMarkerPort(Protocol):
    async def mark_failed(self, event_id: str, status: FailedStatus, reason: str, detail: str) -> None: ...


@dataclass(frozen=True)
class Outcome:
    status: OutcomeStatus
    reason: str = ""
    detail: str = ""
    decision: Decision | None = None
    processing_ms: float = 0.0

    @property
    def done(self) -> bool:
        """True when the message may be acknowledged (everything but transient)."""
        return self.status != "transient"

    @property
    def points(self) -> int:
        return self.decision.points if self.decision else 0


class ProcessingCore:
    def __init__(
        self,
        processor: EventUnitOfWork,
        dead_letters: DeadLetterPort,
        events: EventMarkerPort,
        hooks: pluggy.HookRelay,
        catalog: Catalog,
        *,
        max_delivery_attempts: int,
    ) -> None:
        self._processor = processor
        self._dead_letters = dead_letters
        self._events = events
        self._hooks = hooks
        self._catalog = catalog
        self._max_attempts = max_delivery_attempts

    async def process(
        self,
        event: PaymentEvent,
        *,
        component: str,
        delivery_attempt: int | None = None,
        raw: tuple[bytes, Mapping[str, str]] | None = None,
    ) -> Outcome:
        """The event through one unit of work; a failure is dead-lettered or reported transient.

        `delivery_attempt`: Pub/Sub's count; at the last one a transient failure is dead-lettered
        here (with its reason). `raw`: the message as it came, dead-lettered unchanged."""
        started = time.perf_counter()

        def elapsed() -> float:
            return round((time.perf_counter() - started) * 1000, 2)

        last_attempt = delivery_attempt is not None and delivery_attempt >= self._max_attempts
        try:
            decision = await self._processor.process(
                event, lambda state: decide(event, state, self._hooks, self._catalog), component=component
            )
            outcome = Outcome(_outcome_status(decision.result), decision=decision, processing_ms=elapsed())
        except TerminalError as err:
            outcome = await self._fail(event, err, "failed_terminal", component, raw, elapsed)
        except Exception as err:  # noqa: BLE001 (a bug must not lose the event: retry, then dead-letter)
            transient = err if isinstance(err, TransientError) else self._unexpected(event, err, component)
            if last_attempt:
                outcome = await self._fail(event, transient, "dead_lettered", component, raw, elapsed)
            else:
                outcome = Outcome("transient", transient.reason, transient.detail, processing_ms=elapsed())
        metrics.observe_outcome(component, outcome.status, outcome.processing_ms, outcome.points)
        return outcome

    @staticmethod
    def _unexpected(event: PaymentEvent, err: Exception, component: str) -> TransientError:
        """A bug or an error nobody classified: logged, then retried like a transient failure."""
        log(
            logger,
            logging.ERROR,
            "Unexpected error while processing",
            component=component,
            event_id=event.event_id,
            error_type=type(err).__name__,
            detail=str(err)[:300],
        )
        return TransientError(f"{type(err).__name__}: {str(err)[:200]}", reason="internal_error")

    async def fail_terminal(
        self,
        event: PaymentEvent,
        error: TerminalError,
        *,
        component: str,
        raw: tuple[bytes, Mapping[str, str]] | None = None,
    ) -> Outcome:
        """Dead-letter an event that failed before processing (an invalid body at ingest, or an
        invalid event the worker decoded: `raw` is then the message, dead-lettered as it came)."""
        started = time.perf_counter()
        return await self._fail(
            event,
            error,
            "failed_terminal",
            component,
            raw,
            lambda: round((time.perf_counter() - started) * 1000, 2),
        )

    async def _fail(
        self,
        event: PaymentEvent,
        err: DomainError,
        status: FailedStatus,
        component: str,
        raw: tuple[bytes, Mapping[str, str]] | None,
        elapsed: Callable[[], float],
    ) -> Outcome:
        """Dead-letter, then record the status; transient if the DLQ publish is not confirmed."""
        error_class = "terminal" if isinstance(err, TerminalError) else "transient"
        try:
            await self._dead_letters.dead_letter(
                event, reason=err.reason, error_class=error_class, detail=err.detail, raw=raw
            )
            if not isinstance(err, PayloadConflictError):
                # A payload conflict's record is another body's, still to be processed or done.
                await self._events.mark_failed(event.event_id, status, err.reason, err.detail)
            metrics.DEAD_LETTERS.labels(err.reason, error_class).inc()
        except Exception as dlq_err:  # noqa: BLE001 (not confirmed: the message must come back)
            log(
                logger,
                logging.WARNING,
                "Dead-letter publish not confirmed - will retry",
                component=component,
                event_id=event.event_id,
                reason=err.reason,
                error_type=type(dlq_err).__name__,
            )
            return Outcome("transient", "dead_letter_failed", str(dlq_err)[:200], processing_ms=elapsed())
        return Outcome(status, err.reason, err.detail, processing_ms=elapsed())


def _outcome_status(result: DecisionResult) -> OutcomeStatus:
    if result == "duplicate":
        return "duplicate"
    if result == "ignored":
        return "ignored"
    return "processed"  # a parked refund or dispute too: it is stored on its order and applied with it
