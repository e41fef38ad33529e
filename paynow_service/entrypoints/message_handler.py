"""One Pub/Sub message in, one outcome out: shared by the push endpoint and the pull worker.

Decodes the PaymentEvent (a message that cannot be decoded, or of a schema version
this worker cannot read, is dead-lettered as it came), then runs the processing core
and writes the worker's log lines (SPEC 5b).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from paynow_service.adapters.event_codec import decode_event
from paynow_service.domain.errors import IncompatibleSchemaError, MalformedMessageError
from paynow_service.logs import log
from paynow_service.service.processing import DeadLetterPort, EventMarkerPort, Outcome, ProcessingCore

logger = logging.getLogger("paynow_service.worker")
COMPONENT = "paynow_worker"


class MessageHandler:
    def __init__(self, core: ProcessingCore, dead_letters: DeadLetterPort, events: EventMarkerPort) -> None:
        self._core = core
        self._dead_letters = dead_letters
        self._events = events

    async def handle(
        self, data: bytes, attributes: Mapping[str, str], *, message_id: str, delivery_attempt: int | None
    ) -> Outcome:
        base: dict[str, object] = {
            "component": COMPONENT,
            "message_id": message_id,
            "delivery_attempt": delivery_attempt,
            "event_id": attributes.get("event_id"),
            "event_type": attributes.get("event_type"),
            "ordering_key": attributes.get("ordering_key"),
        }
        log(logger, logging.INFO, "Worker received message", **base)
        try:
            event = decode_event(data, attributes)
        except (MalformedMessageError, IncompatibleSchemaError) as err:
            return await self._undecodable(data, attributes, err, base)
        outcome = await self._core.process(
            event, component=COMPONENT, delivery_attempt=delivery_attempt, raw=(data, attributes)
        )
        fields = {
            **base,
            "processing_ms": outcome.processing_ms,
            "status": outcome.status,
            "uid": outcome.decision.uid if outcome.decision and outcome.decision.uid else None,
        }
        if outcome.status in ("processed", "ignored"):
            log(
                logger,
                logging.INFO,
                "Worker processed event successfully",
                points=outcome.points,
                result=outcome.decision.result if outcome.decision else None,
                **fields,
            )
        elif outcome.status == "duplicate":
            log(logger, logging.INFO, "Event already processed - skipping", **fields)
        elif outcome.status in ("failed_terminal", "dead_lettered"):
            log(
                logger,
                logging.ERROR,
                "Terminal failure - dead-lettered",
                reason=outcome.reason,
                error_class="terminal" if outcome.status == "failed_terminal" else "transient",
                **fields,
            )
        else:
            log(logger, logging.WARNING, "Transient failure - will retry", reason=outcome.reason, **fields)
        return outcome

    async def handle_undecodable(
        self, data: bytes, attributes: Mapping[str, str], problem: str, *, message_id: str
    ) -> Outcome:
        """A push whose envelope itself is broken (no JSON, bad base64): dead-letter it as it came."""
        base: dict[str, object] = {
            "component": COMPONENT,
            "message_id": message_id,
            "event_id": attributes.get("event_id"),
        }
        log(logger, logging.INFO, "Worker received message", **base)
        return await self._undecodable(data, attributes, MalformedMessageError(problem), base)

    async def _undecodable(
        self,
        data: bytes,
        attributes: Mapping[str, str],
        err: MalformedMessageError | IncompatibleSchemaError,
        base: dict[str, object],
    ) -> Outcome:
        try:
            await self._dead_letters.dead_letter(
                None, reason=err.reason, error_class="terminal", detail=err.detail, raw=(data, attributes)
            )
            event_id = attributes.get("event_id", "")
            if event_id and "/" not in event_id and len(event_id) <= 128:
                await self._events.mark_failed(event_id, "failed_terminal", err.reason, err.detail)
        except Exception as dlq_err:  # noqa: BLE001 (unconfirmed: let Pub/Sub redeliver)
            log(
                logger,
                logging.WARNING,
                "Transient failure - will retry",
                reason="dead_letter_failed",
                error_class=type(dlq_err).__name__,
                **base,
            )
            return Outcome("transient", "dead_letter_failed", str(dlq_err)[:200])
        log(
            logger,
            logging.ERROR,
            "Terminal failure - dead-lettered",
            reason=err.reason,
            error_class="terminal",
            **base,
        )
        return Outcome("failed_terminal", err.reason, err.detail)
