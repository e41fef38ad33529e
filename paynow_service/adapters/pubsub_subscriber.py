"""Unary Pull, Acknowledge and ModifyAckDeadline as raw gRPC calls on the async client's channel.

For the pipelined pull worker (`entrypoints/ordered_pull.py`), which runs on the worker's event
loop: the calls are awaited there, with no thread hop per batch, and with the raw protobuf
messages (as `pubsub_publisher.py` publishes): the GAPIC client's proto-plus conversion and
retry wrappers cost more CPU than the calls. The channel is the client's own (credentials, the
emulator's settings unchanged); a failure leaves as the `google.api_core` exception the client
raises. The client is created on first use, inside the loop it belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.api_core import exceptions as gexc
from google.api_core.gapic_v1 import routing_header
from google.protobuf import empty_pb2
from google.pubsub_v1 import SubscriberAsyncClient
from google.pubsub_v1.types import AcknowledgeRequest, ModifyAckDeadlineRequest, PullRequest, PullResponse

_PullRequest: Any = PullRequest.pb()
_PullResponse: Any = PullResponse.pb()
_AcknowledgeRequest: Any = AcknowledgeRequest.pb()
_ModifyAckDeadlineRequest: Any = ModifyAckDeadlineRequest.pb()
SERVICE = "/google.pubsub.v1.Subscriber/"
# Acknowledge and ModifyAckDeadline take at most this many ack ids per call (Pub/Sub's limit is
# about 2,500 and 512 KB of request).
IDS_PER_CALL = 1000


class SubscriberWire:
    def __init__(self, subscription: str) -> None:
        self.subscription = subscription
        self._client: SubscriberAsyncClient | None = None
        self._stubs: dict[str, Any] = {}
        self._metadata = (routing_header.to_grpc_metadata((("subscription", subscription),)),)  # type: ignore[no-untyped-call]

    async def pull(self, max_messages: int, deadline_s: float) -> Sequence[Any]:
        """Up to `max_messages` ReceivedMessage protobufs; waits up to `deadline_s` for the first
        (DeadlineExceeded when none came)."""
        request = _PullRequest(subscription=self.subscription, max_messages=max_messages)
        response = await self._call("Pull", _PullRequest, _PullResponse, request, deadline_s)
        received: Sequence[Any] = response.received_messages
        return received

    async def acknowledge(self, ack_ids: Sequence[str], deadline_s: float) -> None:
        for start in range(0, len(ack_ids), IDS_PER_CALL):
            chunk = ack_ids[start : start + IDS_PER_CALL]
            request = _AcknowledgeRequest(subscription=self.subscription, ack_ids=chunk)
            await self._call("Acknowledge", _AcknowledgeRequest, empty_pb2.Empty, request, deadline_s)

    async def modify_ack_deadline(self, ack_ids: Sequence[str], seconds: int, deadline_s: float) -> None:
        for start in range(0, len(ack_ids), IDS_PER_CALL):
            chunk = ack_ids[start : start + IDS_PER_CALL]
            request = _ModifyAckDeadlineRequest(
                subscription=self.subscription, ack_ids=chunk, ack_deadline_seconds=seconds
            )
            await self._call(
                "ModifyAckDeadline", _ModifyAckDeadlineRequest, empty_pb2.Empty, request, deadline_s
            )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.transport.close()  # type: ignore[no-untyped-call]
            self._client = None
            self._stubs.clear()

    async def _call(
        self, method: str, request_type: Any, response_type: Any, request: Any, deadline_s: float
    ) -> Any:
        stub = self._stubs.get(method)
        if stub is None:
            if self._client is None:
                self._client = SubscriberAsyncClient()
            transport: Any = self._client.transport  # the grpc_asyncio transport: it has the channel
            stub = self._stubs[method] = transport.grpc_channel.unary_unary(
                SERVICE + method,
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )
        try:
            return await stub(request, metadata=self._metadata, timeout=deadline_s)
        except grpc.RpcError as err:
            raise gexc.from_grpc_error(err) from err  # type: ignore[no-untyped-call]
