"""Dead letters: the original message (or the encoded event) plus `reason` and `error_class`.

A message dead-lettered by the worker keeps its data and every attribute, `event_mac` included
(a forged one stays unverified, a genuine one verifies again when replayed). An event this
process encodes itself (the webhook's own terminal failures) came from our webhook: it is signed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from paynow_service.adapters.pubsub_publisher import PubSubPublisher
from paynow_service.domain.events import PaymentEvent
from paynow_service.logs import redact

# Attributes added by the worker itself; dlq list reads these.
DLQ_ATTRIBUTES = ("reason", "error_class", "failed_at", "detail")


class PubSubDeadLetters:
    def __init__(self, publisher: PubSubPublisher) -> None:
        self._publisher = publisher

    async def dead_letter(
        self,
        event: PaymentEvent | None,
        *,
        reason: str,
        error_class: str,
        detail: str,
        raw: tuple[bytes, Mapping[str, str]] | None = None,
    ) -> str:
        """Publish to the DLQ topic and return the message id once the server confirmed it."""
        if raw is not None:
            data, attributes = raw[0], dict(raw[1])
        elif event is not None:
            data, attributes = self._publisher.encode_signed(event)
        else:
            raise ValueError("a dead letter needs the event or the raw message")
        if event is not None:
            attributes.setdefault("event_id", event.event_id)
            attributes.setdefault("event_type", event.event_type)
            attributes.setdefault("ordering_key", event.resolved_ordering_key())
        attributes.update(
            reason=reason,
            error_class=error_class,
            failed_at=dt.datetime.now(dt.UTC).isoformat(),
            detail=redact(detail)[:256],
        )
        return await self._publisher.publish(self._publisher.dlq_topic, data, attributes)
