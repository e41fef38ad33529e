"""The ASGI app: one Starlette app whose routes follow HTTP_ROUTES (SPEC section 3).

The public webhook service runs with HTTP_ROUTES=webhook and serves nothing else;
/healthz and /readyz are always there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from paynow_service import bootstrap
from paynow_service.config import Settings
from paynow_service.logs import flush_logs, log

logger = logging.getLogger("paynow_service.http")
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# How long an idle keep-alive connection stays open. uvicorn's default (5 s) closes a caller's
# pooled connection between two webhooks a few seconds apart, and the next one pays a new
# handshake (measured at 100/s: 4-8 new connections every 5 s, each on a request already
# waiting behind others). 75 s keeps a front end's pool warm without holding idle sockets long.
KEEP_ALIVE_S = 75


def create_app(settings: Settings, container: bootstrap.Container | None = None) -> Starlette:
    """The app for these settings; `container` lets tests pass adapters built their own way."""
    if "webhook" in settings.http_routes:
        settings.require("PAYNOW_WEBHOOK_SECRETS")
    if "webhook" in settings.http_routes or "push" in settings.http_routes:
        # The webhook signs what it publishes and dead-letters; the push endpoint verifies.
        settings.require("EVENT_SIGNING_KEYS")
    if "push" in settings.http_routes and settings.push_auth == "enabled":
        settings.require("PUSH_AUDIENCE", "PUSH_SERVICE_ACCOUNT")
    if "points" in settings.http_routes and settings.points_auth == "enabled":
        settings.require("POINTS_AUDIENCE", "POINTS_ALLOWED_CALLERS")
    c = container or bootstrap.build_container(settings)
    routes: list[BaseRoute] = [
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", _readyz(c), methods=["GET"]),
    ]
    if "webhook" in settings.http_routes:
        from paynow_service.entrypoints.webhook import PATH, WebhookEndpoint

        routes.append(Route(PATH, WebhookEndpoint(settings, c.ingest).handle, methods=ALL_METHODS))
    if "push" in settings.http_routes:
        routes.append(_push_route(settings, c))
    if "metrics" in settings.http_routes:
        from paynow_service.metrics import metrics_endpoint

        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    if "points" in settings.http_routes:
        from paynow_service.entrypoints.connect_points import build_points_asgi

        path, points_app = build_points_asgi(settings, c.ledger)
        routes.append(Mount(path, app=points_app))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log(
            logger,
            logging.INFO,
            "HTTP app started",
            component="http",
            routes=list(settings.http_routes),
            webhook_mode=settings.webhook_mode,
            queue_percent=settings.webhook_queue_percent,
        )
        try:
            yield
        finally:
            # In-flight requests are drained by uvicorn first; then flush pending publishes.
            await c.aclose()
            log(logger, logging.INFO, "HTTP app stopped", component="http")

    return Starlette(routes=routes, lifespan=lifespan)


def _push_route(settings: Settings, c: bootstrap.Container) -> Route:
    from paynow_service.adapters.dead_letters import PubSubDeadLetters
    from paynow_service.domain.provenance import EventSigner
    from paynow_service.entrypoints.message_handler import MessageHandler
    from paynow_service.entrypoints.push import PATH, PushEndpoint

    verifier = None
    if settings.push_auth == "enabled":
        from paynow_service.adapters.oidc import IdTokenVerifier

        verifier = IdTokenVerifier(
            audience=settings.push_audience,
            allowed_emails=[settings.push_service_account],
            certs_url=settings.push_certs_url,
        )
    handler = MessageHandler(c.core, PubSubDeadLetters(c.publisher), EventSigner(settings.event_signing_keys))
    return Route(PATH, PushEndpoint(handler, verifier).handle, methods=ALL_METHODS)


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _readyz(c: bootstrap.Container) -> Callable[[Request], Awaitable[Response]]:
    async def readyz(request: Request) -> Response:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(c.db.collection("readyz").document("probe").get(timeout=2), timeout=3)
            checks["firestore"] = "ok"
        except Exception as err:  # noqa: BLE001 (any failure means not ready)
            checks["firestore"] = f"unavailable: {type(err).__name__}"
        if c.settings.webhook_mode == "queue" and "webhook" in c.settings.http_routes:
            try:
                await c.publisher.check()
                checks["pubsub"] = "ok"
            except Exception as err:  # noqa: BLE001
                checks["pubsub"] = f"unavailable: {type(err).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    return readyz


class _Server(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM or SIGINT once it has shut down gracefully, and that ends
    the process without exit handlers: the queued log lines (its own shutdown lines and "HTTP app
    stopped" among them) are written before that."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                flush_logs()


def run(settings: Settings) -> int:
    """`paynow-service serve`: uvicorn on PORT, draining in-flight requests on SIGTERM."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="0.0.0.0",
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
        timeout_keep_alive=KEEP_ALIVE_S,
        proxy_headers=False,  # the app never reads the caller's address (and logs no IP)
        lifespan="on",
    )
    bootstrap.freeze_startup_heap()
    _Server(config).run()
    return 0
