"""The process's one Pub/Sub publisher: ordered, low batch latency, bounded waits.

With an ordering key the client library retries forever, so each publish is one
attempt with a timeout (`retry=None`) and the wait is bounded again on our side. After
a failure the key is paused by the library: it is resumed at once, because the caller
falls back to inline processing and later events of that user must still publish.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from google.cloud.pubsub_v1 import PublisherClient
from google.cloud.pubsub_v1.types import BatchSettings, PublisherOptions

from paynow_service.adapters.event_codec import encode_event
from paynow_service.config import Settings
from paynow_service.domain.errors import TransientError
from paynow_service.domain.events import PaymentEvent


class PublishError(TransientError):
    """The message could not be published within the bounded wait."""

    reason = "publish_failed"


class PubSubPublisher:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeout = settings.publish_timeout_s
        self._client = PublisherClient(
            batch_settings=BatchSettings(max_latency=settings.publish_batch_latency_s, max_messages=100),
            publisher_options=PublisherOptions(enable_message_ordering=True),
        )
        self.events_topic = settings.topic_path(settings.pubsub_topic)
        self.dlq_topic = settings.topic_path(settings.pubsub_dlq_topic)

    async def publish(
        self, topic: str, data: bytes, attributes: Mapping[str, str], ordering_key: str = ""
    ) -> str:
        """Publish and wait for the server's message id, at most PUBLISH_TIMEOUT_S."""
        try:
            future = self._client.publish(
                topic, data, ordering_key=ordering_key, retry=None, timeout=self._timeout, **dict(attributes)
            )
            message_id: str = await asyncio.wait_for(asyncio.wrap_future(future), timeout=self._timeout + 0.5)
            return message_id
        except Exception as err:
            if ordering_key:
                with contextlib.suppress(Exception):  # not paused (e.g. our own timeout): nothing to resume
                    self._client.resume_publish(topic, ordering_key)
            raise PublishError(f"publish to {topic.rsplit('/', 1)[-1]} failed: {type(err).__name__}") from err

    async def publish_event(self, event: PaymentEvent) -> str:
        """Publish a PaymentEvent to the events topic under its ordering key."""
        data, attributes = encode_event(event)
        return await self.publish(
            self.events_topic, data, attributes, ordering_key=event.resolved_ordering_key()
        )

    async def check(self) -> None:
        """Readiness: the events topic can be read (raises on failure)."""
        await asyncio.wait_for(
            asyncio.to_thread(self._client.get_topic, topic=self.events_topic, timeout=2), timeout=3
        )

    def close(self) -> None:
        """Flush pending batches and stop (on shutdown)."""
        with contextlib.suppress(Exception):
            self._client.stop()
