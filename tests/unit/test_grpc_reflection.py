"""`paynow-service grpc` serves server reflection as grpc.reflection.v1 and v1alpha.

Current clients (`buf curl`, grpcurl, Postman) ask v1 first; grpcio-reflection ships only
v1alpha, which the server also registers under the v1 name. Both answer the same, and v1
describes itself. No emulator needed: the PointsService behind it is never called.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from paynow_service.entrypoints.grpc_server import REFLECTION_V1, _server
from paynow_service.entrypoints.points_api import SERVICE_NAME

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"


class _NoAuth:
    async def verify(self, authorization: str | None) -> str:
        raise AssertionError("reflection must not need a token")


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server, _ = _server(_NoAuth(), object())  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


async def _ask(channel: grpc.aio.Channel, service: str, **request: Any) -> Any:
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    responses = [r async for r in call(iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=10)]
    (response,) = responses
    return response


@pytest.mark.parametrize("service", [REFLECTION_V1, V1ALPHA])
async def test_both_versions_list_every_service(channel: grpc.aio.Channel, service: str) -> None:
    response = await _ask(channel, service, list_services="")
    names = {s.name for s in response.list_services_response.service}
    assert names == {SERVICE_NAME, "grpc.health.v1.Health", REFLECTION_V1, V1ALPHA}


@pytest.mark.parametrize("symbol", [SERVICE_NAME, REFLECTION_V1])
async def test_v1_describes_points_and_itself(channel: grpc.aio.Channel, symbol: str) -> None:
    response = await _ask(channel, REFLECTION_V1, file_containing_symbol=symbol)
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    package, _, name = symbol.rpartition(".")
    (described,) = [f for f in files if f.package == package]
    assert name in {s.name for s in described.service}
    if symbol == REFLECTION_V1:
        (method,) = described.service[0].method
        assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"
        assert {m.name for m in described.message_type} >= {
            "ServerReflectionRequest",
            "ServerReflectionResponse",
        }
