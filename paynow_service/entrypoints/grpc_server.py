"""`paynow-service grpc`: PointsService over native gRPC, with grpc.health.v1 and reflection.

Reflection is served as `grpc.reflection.v1` (what current clients, `buf curl` and grpcurl
among them, ask first) and as `grpc.reflection.v1alpha` (older clients). grpcio-reflection
ships only v1alpha; the two protocols are the same messages under another package, so the
v1 service is the same servicer registered under the v1 name, with the v1 file described
in the descriptor pool so that reflection can describe itself too.

Every PointsService call passes the auth interceptor (Google ID token, or "local" with
POINTS_AUTH=disabled); health and reflection stay open for probes and tooling. On
SIGTERM the health status turns NOT_SERVING, new calls still land for `drain_s` while
load balancers notice, then the server stops accepting and in-flight calls get
`grace_s` to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from paynow_service import bootstrap, tracing
from paynow_service.adapters.oidc import IdTokenVerifier
from paynow_service.config import Settings
from paynow_service.entrypoints.points_api import (
    CALLER,
    SERVICE_NAME,
    Authenticator,
    PointsApi,
    answer_failure,
    rpc_span,
    status_for,
    traced_result,
)
from paynow_service.gen.paynow.points.v1 import points_service_pb2_grpc as pb_grpc
from paynow_service.logs import log
from paynow_service.service.points import PointsCore

logger = logging.getLogger("paynow_service.grpc")
COMPONENT = "points_grpc"
_OPTIONS = (
    # Linux gRPC sets SO_REUSEPORT by default: a second server on a taken port would start
    # silently and share its traffic. Fail loudly instead.
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 1024 * 1024),
)


_UNDECODABLE = object()
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
_REFLECTION_V1_FILE = "grpc/reflection/v1/reflection.proto"


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates PointsService calls and puts the caller in CALLER for the handler."""

    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        if (
            handler is None
            or handler.unary_unary is None
            or not handler_call_details.method.startswith(f"/{SERVICE_NAME}/")
        ):
            return handler
        inner = handler.unary_unary
        auth = self._auth
        decode = handler.request_deserializer

        def safe_decode(raw: bytes) -> Any:
            # grpc answers UNKNOWN when a deserializer raises; bad bytes are the caller's fault.
            try:
                return decode(raw)
            except Exception:  # noqa: BLE001 (DecodeError and friends)
                return _UNDECODABLE

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if request is _UNDECODABLE:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protobuf message"
                )
            metadata = dict(context.invocation_metadata() or ())
            try:
                caller = await auth.verify(metadata.get("authorization"))
            except Exception as exc:  # noqa: BLE001 (mapped to a status, never leaked)
                name, message = status_for(exc)
                await context.abort(grpc.StatusCode[name], message)
            token = CALLER.set(caller)
            try:
                return await inner(request, context)
            finally:
                CALLER.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=safe_decode,
            response_serializer=handler.response_serializer,
        )


class PointsServicer:
    """The generated servicer's four methods, each a call into PointsApi."""

    def __init__(self, api: PointsApi) -> None:
        self._api = api

    async def CreditPoints(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await _answer("CreditPoints", self._api.credit_points, request, context)

    async def ReversePoints(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await _answer("ReversePoints", self._api.reverse_points, request, context)

    async def GetBalance(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await _answer("GetBalance", self._api.get_balance, request, context)

    async def ListLedger(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await _answer("ListLedger", self._api.list_ledger, request, context)


async def _answer(
    method: str, call: Callable[[Any], Awaitable[Any]], request: Any, context: grpc.aio.ServicerContext
) -> Any:
    started = time.perf_counter()
    metadata = dict(context.invocation_metadata() or ()) if tracing.enabled() else None
    with rpc_span(method, "grpc", metadata) as span:
        try:
            response = await call(request)
        except Exception as exc:  # noqa: BLE001 (every error becomes a status; bugs are logged)
            traced_result(span, exc)
            elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
            name, message = answer_failure(logger, COMPONENT, method, exc, processing_ms=elapsed_ms)
        else:
            traced_result(span)
            return response
    await context.abort(grpc.StatusCode[name], message)


async def serve_grpc(
    settings: Settings,
    *,
    points: PointsCore | None = None,
    host: str | None = None,
    port: int | None = None,
    stop: asyncio.Event | None = None,
    ready: Callable[[int], None] | None = None,
    drain_s: float = 1.0,
    grace_s: float = 8.0,
) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT when no event is given), then drain.

    `host` defaults to the settings' (every interface); with an auth disabled it is always
    loopback, whatever the caller asks: an open PointsService must not face the network.
    """
    if host is None or settings.disabled_auths:
        host = settings.listen_host
    if settings.disabled_auths:
        log(
            logger,
            logging.WARNING,
            "Auth disabled: listening on 127.0.0.1 only",
            component=COMPONENT,
            disabled=list(settings.disabled_auths),
            host=host,
        )
    auth = bootstrap.points_authenticator(settings)
    core = points or bootstrap.points_core(settings)
    server, health_servicer = _server(auth, core)
    bound = server.add_insecure_port(f"{host}:{settings.grpc_port if port is None else port}")
    await server.start()
    if isinstance(auth, IdTokenVerifier):
        auth.start()  # fetch the signing certs now, not on the first call
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log(
        logger,
        logging.INFO,
        "gRPC server started",
        component=COMPONENT,
        host=host,
        port=bound,
        auth=settings.points_auth,
    )
    if ready is not None:
        ready(bound)
    stop = stop or _signal_event()
    try:
        await stop.wait()
    finally:
        log(logger, logging.INFO, "gRPC server draining", component=COMPONENT)
        await health_servicer.enter_graceful_shutdown()
        await asyncio.sleep(drain_s)
        await server.stop(grace_s)
        if isinstance(auth, IdTokenVerifier):
            await auth.aclose()
        log(logger, logging.INFO, "gRPC server stopped", component=COMPONENT)


def _server(auth: Authenticator, core: PointsCore) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """PointsService behind the auth interceptor, grpc.health.v1 and reflection, on one server."""
    server = grpc.aio.server(interceptors=[AuthInterceptor(auth)], options=_OPTIONS)
    pb_grpc.add_PointsServiceServicer_to_server(PointsServicer(PointsApi(core)), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    _enable_reflection((SERVICE_NAME, health_name, REFLECTION_V1, reflection.SERVICE_NAME), server)
    return server, health_servicer


def _enable_reflection(service_names: tuple[str, ...], server: grpc.aio.Server) -> None:
    """Reflection v1alpha (grpcio-reflection) and v1: the same servicer under both names."""
    _describe_reflection_v1()
    reflection.enable_server_reflection(service_names, server)
    servicer = reflection.aio.ReflectionServicer(service_names)
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": info}),)
    )


def _describe_reflection_v1() -> None:
    """Add grpc/reflection/v1/reflection.proto to the default pool (v1alpha's, renamed), once."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_REFLECTION_V1_FILE)
        return
    except KeyError:
        pass
    alpha = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(alpha)
    old, new = f".{alpha.package}.", ".grpc.reflection.v1."
    v1 = descriptor_pb2.FileDescriptorProto()
    v1.CopyFrom(alpha)
    v1.name, v1.package = _REFLECTION_V1_FILE, "grpc.reflection.v1"
    v1.ClearField("options")
    for message in v1.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old) :]
    for method in (m for service in v1.service for m in service.method):
        method.input_type = new + method.input_type[len(old) :]
        method.output_type = new + method.output_type[len(old) :]
    pool.Add(v1)


def _signal_event() -> asyncio.Event:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, event.set)
    return event


def run(settings: Settings, *, host: str | None = None, drain_s: float = 1.0) -> int:
    """`paynow-service grpc`: serve on GRPC_PORT until SIGTERM; 0 after a clean drain."""
    from paynow_service.bootstrap import freeze_startup_heap

    freeze_startup_heap()
    asyncio.run(serve_grpc(settings, host=host, drain_s=drain_s))
    return 0
