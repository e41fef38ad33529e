"""One Pub/Sub message in, one outcome out: shared by the push endpoint and the pull worker.

Before anything is credited, in this order: a message of the app's old publisher is
dead-lettered as `legacy_message`, one of a schema version this worker cannot read as
`incompatible_schema`, one whose `event_mac` no signing key verifies as `unverified_event`
(only events our webhook or `sweep` signed are credited: anyone who can publish to the
topic could otherwise mint points), one that does not decode as `malformed_message`. Each
is dead-lettered as it came and touches no `webhookEvents` record: its claimed event id is
not proven, and marking it would let a forged message fail a real event. A decoded event
then passes the webhook's own input checks (`validate_event`), or is dead-lettered as
`invalid_event`. Then the processing core runs, and the worker's log lines are written (SPEC 5b).
Attributes the worker does not know (`traceparent`: tracing.py) are ignored.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping

from opentelemetry.trace import SpanKind

from paynow_service import metrics, tracing
from paynow_service.adapters.event_codec import check_schema_version, decode_event
from paynow_service.adapters.legacy_messages import legacy_message_detail
from paynow_service.domain.errors import (
    IncompatibleSchemaError,
    InvalidEventError,
    LegacyMessageError,
    MalformedMessageError,
    UnverifiedEventError,
)
from paynow_service.domain.events import PaymentEvent
from paynow_service.domain.paynow import validate_event
from paynow_service.domain.provenance import ATTR_EVENT_MAC, EventSigner
from paynow_service.logs import log
from paynow_service.service.processing import DeadLetterPort, Outcome, ProcessingCore

logger = logging.getLogger("paynow_service.worker")
COMPONENT = "paynow_worker"


# Refused before decoding: dead-lettered as they came, no record marked.
Refused = LegacyMessageError | IncompatibleSchemaError | UnverifiedEventError | MalformedMessageError


class MessageHandler:
    def __init__(self, core: ProcessingCore, dead_letters: DeadLetterPort, signer: EventSigner) -> None:
        self._core = core
        self._dead_letters = dead_letters
        self._signer = signer

    def admit(self, data: bytes, attributes: Mapping[str, str]) -> PaymentEvent:
        """The message's event, if it is one we published: legacy, schema version, MAC, then decoding.

        Raises LegacyMessageError, IncompatibleSchemaError, UnverifiedEventError or
        MalformedMessageError (each terminal)."""
        legacy = legacy_message_detail(data)
        if legacy is not None:
            raise LegacyMessageError(legacy)
        check_schema_version(attributes)
        mac = attributes.get(ATTR_EVENT_MAC)
        if not mac:
            raise UnverifiedEventError("message has no event_mac attribute")
        if not self._signer.verify(data, mac):
            raise UnverifiedEventError("event_mac does not verify under any signing key")
        return decode_event(data, attributes)

    async def handle(
        self,
        data: bytes,
        attributes: Mapping[str, str],
        *,
        message_id: str,
        delivery_attempt: int | None,
        published_at: dt.datetime | None = None,
    ) -> Outcome:
        """`published_at`: when Pub/Sub accepted the message (its publishTime), for the success line's
        `publish_lag_ms` (publish -> processed, the lag the alerts watch). Traced as a child of the
        publish whose `traceparent` the message carries (a new trace without one)."""
        parent = tracing.extract(attributes)
        with tracing.span("worker.handle", kind=SpanKind.CONSUMER, parent=parent) as span:
            outcome = await self._handle(
                data,
                attributes,
                message_id=message_id,
                delivery_attempt=delivery_attempt,
                published_at=published_at,
            )
            if span.is_recording():
                traced = {
                    tracing.EVENT_ID: attributes.get("event_id"),
                    tracing.EVENT_TYPE: attributes.get("event_type"),
                    tracing.ORDERING_KEY: attributes.get("ordering_key"),
                    tracing.OUTCOME: outcome.status,
                    "paynow.reason": outcome.reason or None,
                    "messaging.system": "gcp_pubsub",
                    "messaging.message.id": message_id,
                    "messaging.gcp_pubsub.message.delivery_attempt": delivery_attempt,
                }
                span.set_attributes({k: v for k, v in traced.items() if v is not None})
            return outcome

    async def _handle(
        self,
        data: bytes,
        attributes: Mapping[str, str],
        *,
        message_id: str,
        delivery_attempt: int | None,
        published_at: dt.datetime | None,
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
            event = self.admit(data, attributes)
        except (
            LegacyMessageError,
            IncompatibleSchemaError,
            UnverifiedEventError,
            MalformedMessageError,
        ) as err:
            return await self._undecodable(data, attributes, err, base)
        try:
            validate_event(event)
        except InvalidEventError as err:
            # Signed by us, yet not what the webhook accepts: dead-lettered as it came, the event marked.
            outcome = await self._core.fail_terminal(event, err, component=COMPONENT, raw=(data, attributes))
        else:
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
                publish_lag_ms=publish_lag_ms(published_at),
                points=outcome.points,
                result=outcome.decision.result if outcome.decision else None,
                **fields,
            )
        elif outcome.status == "duplicate":
            flag = outcome.decision.flag if outcome.decision else ""
            log(logger, logging.INFO, "Event already processed - skipping", flag=flag or None, **fields)
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
        self, data: bytes, attributes: Mapping[str, str], err: Refused, base: dict[str, object]
    ) -> Outcome:
        """Dead-letter the message as it came (its `event_mac` too); no webhookEvents record is marked."""
        try:
            await self._dead_letters.dead_letter(
                None, reason=err.reason, error_class="terminal", detail=err.detail, raw=(data, attributes)
            )
            metrics.DEAD_LETTERS.labels(err.reason, "terminal").inc()
        except Exception as dlq_err:  # noqa: BLE001 (unconfirmed: let Pub/Sub redeliver)
            log(
                logger,
                logging.WARNING,
                "Transient failure - will retry",
                reason="dead_letter_failed",
                error_type=type(dlq_err).__name__,
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


def publish_lag_ms(published_at: dt.datetime | None) -> float | None:
    """Milliseconds from Pub/Sub's publish time to now (None when the message did not say)."""
    if published_at is None or published_at.tzinfo is None:
        return None
    return round((dt.datetime.now(dt.UTC) - published_at).total_seconds() * 1000, 1)
