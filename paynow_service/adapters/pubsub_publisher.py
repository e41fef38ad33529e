"""The process's one Pub/Sub publisher: async, ordered by key, every wait bounded.

Built on the GAPIC `PublisherAsyncClient` rather than the batching `PublisherClient`:
- the message carries SPEC's `ordering_key` attribute, which the batching client's
  `publish(..., ordering_key=..., **attributes)` cannot accept (the names collide);
- with an ordering key the batching client retries forever and pauses the key after a
  failure (needing `resume_publish`); here each publish is one RPC with a deadline and
  no hidden state, so a failed key never blocks the user's later events;
- no batch timer and no thread hop: the answer comes as soon as the server confirms;
- the Publish call itself is made on the client's channel with the raw protobuf messages: the
  client's proto-plus request and its retry/timeout wrappers cost more CPU than the call
  (docs/performance.md, "Raw calls on the hot path"); errors still leave as
  `google.api_core` exceptions.
Per-key order holds because a webhook answers only after its publish is confirmed.
The client is created on first use, inside the serving event loop it belongs to.
Every event this process encodes is signed (`event_mac`, domain/provenance.py) with the
first of EVENT_SIGNING_KEYS; `publish` sends data and attributes as given (a replay
forwards a dead letter's MAC, it never signs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.api_core.gapic_v1 import routing_header
from google.pubsub_v1 import PublisherAsyncClient
from google.pubsub_v1.types import PublishRequest, PublishResponse, PubsubMessage

from paynow_service import tracing
from paynow_service.adapters.event_codec import encode_event
from paynow_service.config import ConfigError, Settings
from paynow_service.domain.errors import PublishError as PublishError
from paynow_service.domain.events import PaymentEvent
from paynow_service.domain.provenance import ATTR_EVENT_MAC, EventSigner

_PublishRequest: Any = PublishRequest.pb()
_PublishResponse: Any = PublishResponse.pb()
_PubsubMessage: Any = PubsubMessage.pb()
PUBLISH = "/google.pubsub.v1.Publisher/Publish"


class PubSubPublisher:
    def __init__(self, settings: Settings) -> None:
        self._timeout = settings.publish_timeout_s
        self._client: PublisherAsyncClient | None = None
        self._publish: Any = None
        keys = settings.event_signing_keys
        self._signer = EventSigner(keys) if keys else None
        self.events_topic = settings.topic_path(settings.pubsub_topic)
        self.dlq_topic = settings.topic_path(settings.pubsub_dlq_topic)

    def _api(self) -> PublisherAsyncClient:
        if self._client is None:
            self._client = PublisherAsyncClient()
        return self._client

    def _publish_call(self) -> Any:
        if self._publish is None:
            transport: Any = self._api().transport  # the grpc_asyncio transport: it has the channel
            self._publish = transport.grpc_channel.unary_unary(
                PUBLISH,
                request_serializer=_PublishRequest.SerializeToString,
                response_deserializer=_PublishResponse.FromString,
            )
        return self._publish

    async def publish(
        self, topic: str, data: bytes, attributes: Mapping[str, str], ordering_key: str = ""
    ) -> str:
        """Publish one message and return the server's message id, waiting at most PUBLISH_TIMEOUT_S."""
        message = _PubsubMessage(data=data, attributes=attributes, ordering_key=ordering_key)
        request = _PublishRequest(topic=topic, messages=[message])
        metadata = (routing_header.to_grpc_metadata((("topic", topic),)),)  # type: ignore[no-untyped-call]
        try:
            # The RPC's own deadline, and a hard stop half a second later in case the channel
            # itself hangs (asyncio.timeout, not wait_for: no extra task per publish).
            async with asyncio.timeout(self._timeout + 0.5):
                try:
                    response = await self._publish_call()(request, metadata=metadata, timeout=self._timeout)
                except grpc.RpcError as err:
                    raise gexc.from_grpc_error(err) from err  # type: ignore[no-untyped-call]
        except (gexc.GoogleAPIError, TimeoutError, OSError) as err:
            raise PublishError(f"publish to {topic.rsplit('/', 1)[-1]} failed: {type(err).__name__}") from err
        message_id: str = response.message_ids[0]
        return message_id

    def encode_signed(self, event: PaymentEvent) -> tuple[bytes, dict[str, str]]:
        """The message data and attributes of `event`, `event_mac` included."""
        if self._signer is None:
            # Every command that publishes events refuses to start without keys: a bug if reached.
            raise ConfigError("EVENT_SIGNING_KEYS is required to publish events")
        data, attributes = encode_event(event)
        attributes[ATTR_EVENT_MAC] = self._signer.sign(data)
        return data, attributes

    async def publish_event(self, event: PaymentEvent) -> str:
        """Publish a signed PaymentEvent to the events topic under its ordering key, with the current
        span's `traceparent` when tracing is on (outside the MAC, which covers the data only)."""
        data, attributes = self.encode_signed(event)
        tracing.inject(attributes)
        return await self.publish(
            self.events_topic, data, attributes, ordering_key=event.resolved_ordering_key()
        )

    async def check(self) -> None:
        """Readiness: the events topic can be read (raises on failure)."""
        await asyncio.wait_for(self._api().get_topic(topic=self.events_topic, timeout=2), timeout=3)

    async def aclose(self) -> None:
        """Close the channel. Nothing is buffered: every publish was confirmed before its caller answered."""
        if self._client is not None:
            await self._client.transport.close()  # type: ignore[no-untyped-call]
            self._client = None
            self._publish = None
