"""PointsService over Connect (binary protobuf and proto3 JSON), mounted in the HTTP app.

    path, app = build_points_asgi(settings, PointsCore(container.ledger))
    routes.append(Mount(path, app=app))

Authentication is a metadata interceptor, so a refused caller is answered before its
body is even read; the verified caller travels to the handler in `CALLER`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from contextvars import Token
from typing import Any

from connectrpc.code import Code
from connectrpc.codec import Codec
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from starlette.types import ASGIApp

from paynow_service import bootstrap, tracing
from paynow_service.config import Settings
from paynow_service.entrypoints.points_api import (
    CALLER,
    Authenticator,
    PointsApi,
    answer_failure,
    rpc_span,
    status_for,
    traced_result,
)
from paynow_service.gen.paynow.points.v1.points_service_connect import PointsServiceASGIApplication
from paynow_service.service.points import PointsCore, PointsLedger

logger = logging.getLogger("paynow_service.connect")
COMPONENT = "points_connect"


class ConnectAuth:
    """A connectrpc MetadataInterceptor: verifies the caller before the request is read."""

    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    async def on_start(self, ctx: RequestContext[Any, Any]) -> Token[str | None]:
        try:
            caller = await self._auth.verify(ctx.request_headers.get("authorization"))
        except Exception as exc:  # noqa: BLE001 (mapped to a Connect code, never leaked)
            name, message = status_for(exc)
            raise ConnectError(Code[name], message) from None
        return CALLER.set(caller)

    async def on_end(
        self, token: Token[str | None], ctx: RequestContext[Any, Any], error: Exception | None
    ) -> None:
        CALLER.reset(token)


class ConnectPoints:
    """The generated `PointsService` protocol, each method a call into PointsApi."""

    def __init__(self, api: PointsApi) -> None:
        self._api = api

    async def credit_points(self, request: Any, ctx: RequestContext[Any, Any]) -> Any:
        return await _answer("CreditPoints", self._api.credit_points, request, ctx)

    async def reverse_points(self, request: Any, ctx: RequestContext[Any, Any]) -> Any:
        return await _answer("ReversePoints", self._api.reverse_points, request, ctx)

    async def get_balance(self, request: Any, ctx: RequestContext[Any, Any]) -> Any:
        return await _answer("GetBalance", self._api.get_balance, request, ctx)

    async def list_ledger(self, request: Any, ctx: RequestContext[Any, Any]) -> Any:
        return await _answer("ListLedger", self._api.list_ledger, request, ctx)


async def _answer(
    method: str, call: Callable[[Any], Awaitable[Any]], request: Any, ctx: RequestContext[Any, Any]
) -> Any:
    with rpc_span(method, "connect_rpc", ctx.request_headers if tracing.enabled() else None) as span:
        try:
            response = await call(request)
        except Exception as exc:  # noqa: BLE001 (every error becomes a Connect code; bugs are logged)
            traced_result(span, exc)
            failure = exc
        else:
            traced_result(span)
            return response
    name, message = answer_failure(logger, COMPONENT, method, failure)
    raise ConnectError(Code[name], message) from None


class StrictJSONCodec(Codec[Message, Any]):
    """proto3 JSON, refusing what google.protobuf's parser silently rounds.

    Its parser turns an enum given as 1.5 or `true` into a member (int(value)): a
    credit could land in the wrong balance. Enum fields must be a name or an integer.
    """

    def __init__(self) -> None:
        self._inner = google_protobuf_json_codec()

    def name(self) -> str:
        return self._inner.name()

    def encode(self, message: Message) -> bytes:
        return self._inner.encode(message)

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            document = None  # the parser below reports it in its own words
        if isinstance(document, dict):
            _check_enums(document, message_class.DESCRIPTOR)
        return self._inner.decode(data, message_class)


def _check_enums(document: dict[str, Any], descriptor: Descriptor) -> None:
    for field in descriptor.fields:
        value = document.get(field.json_name, document.get(field.name))
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if field.enum_type is not None:
            for item in values:
                if isinstance(item, bool) or not isinstance(item, str | int):
                    raise json_format.ParseError(f"{field.name}: an enum is a name or an integer")
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            for item in values:
                if isinstance(item, dict):
                    _check_enums(item, field.message_type)


def build_points_asgi(
    settings: Settings, points: PointsCore | PointsLedger, auth: Authenticator | None = None
) -> tuple[str, ASGIApp]:
    """The mount path and the Connect ASGI app; `points` may be the core or just the ledger; `auth`
    the caller's verifier when the app owns its life cycle (started and closed with the app)."""
    core = points if isinstance(points, PointsCore) else PointsCore(points)
    app = PointsServiceASGIApplication(
        ConnectPoints(PointsApi(core)),
        interceptors=[ConnectAuth(auth or bootstrap.points_authenticator(settings))],
        codecs=[google_protobuf_binary_codec(), StrictJSONCodec()],
    )
    path: str = app.path
    return path, app
