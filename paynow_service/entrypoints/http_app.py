"""The ASGI app: one Starlette app whose routes follow HTTP_ROUTES (SPEC section 3).

The public webhook service runs with HTTP_ROUTES=webhook and serves nothing else;
/healthz and /readyz are always there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from paynow_service import bootstrap, tracing
from paynow_service.config import Settings
from paynow_service.entrypoints.request_guard import RequestGuard
from paynow_service.logs import flush_logs, log

if TYPE_CHECKING:
    from paynow_service.adapters.oidc import IdTokenVerifier

logger = logging.getLogger("paynow_service.http")
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# How long an idle keep-alive connection stays open. uvicorn's default (5 s) closes a caller's
# pooled connection between two webhooks a few seconds apart, and the next one pays a new
# handshake on a request already waiting behind others (docs/performance.md). 75 s keeps a
# front end's pool warm without holding idle sockets long.
KEEP_ALIVE_S = 75
# Probes closer together than this share one readiness check (and a burst of them, one
# Firestore read): an uncached /readyz lets a probe storm become a Firestore load.
READYZ_CACHE_S = 2.0


def create_app(settings: Settings, container: bootstrap.Container | None = None) -> Starlette:
    """The app for these settings; `container` lets tests pass adapters built their own way."""
    _require_route_settings(settings)
    c = container or bootstrap.build_container(settings)
    push_verifier = bootstrap.push_verifier(settings) if "push" in settings.http_routes else None
    verifiers = [push_verifier] if push_verifier is not None else []
    routes: list[BaseRoute] = [
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", _Readiness(c, push_verifier).handle, methods=["GET"]),
    ]
    if "webhook" in settings.http_routes:
        from paynow_service.entrypoints.webhook import PATH, WebhookEndpoint

        routes.append(Route(PATH, WebhookEndpoint(settings, c.ingest).handle, methods=ALL_METHODS))
    if "push" in settings.http_routes:
        routes.append(_push_route(c, push_verifier))
    if "metrics" in settings.http_routes:
        from paynow_service.metrics import metrics_endpoint

        routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
    if "points" in settings.http_routes:
        routes.append(_points_mount(settings, c, verifiers))
    if "console" in settings.http_routes:
        routes.append(_console_mount(settings, c, verifiers))
    # Innermost of Starlette's own: what escapes a route is a 503 here, never ServerErrorMiddleware's 500.
    guard = Middleware(RequestGuard, deadline_s=settings.request_deadline_s)
    return Starlette(routes=routes, lifespan=_lifespan(settings, c, verifiers), middleware=[guard])


def _require_route_settings(settings: Settings) -> None:
    routes = settings.http_routes
    if "webhook" in routes:
        settings.require("PAYNOW_WEBHOOK_SECRETS")
    if "webhook" in routes or "push" in routes:
        # The webhook signs what it publishes and dead-letters; the push endpoint verifies.
        settings.require("EVENT_SIGNING_KEYS")
    if "push" in routes and settings.push_auth == "enabled":
        settings.require("PUSH_AUDIENCE", "PUSH_SERVICE_ACCOUNT")
    if "points" in routes and settings.points_auth == "enabled":
        settings.require("POINTS_AUDIENCE", "POINTS_ALLOWED_CALLERS")
    if "console" in routes and not settings.console_open:
        # Open without operators only on both local emulators (`dev`): anywhere else, name them.
        settings.require("CONSOLE_OPERATORS", "CONSOLE_AUDIENCE")


def _points_mount(settings: Settings, c: bootstrap.Container, verifiers: list[IdTokenVerifier]) -> Mount:
    from paynow_service.adapters.oidc import IdTokenVerifier
    from paynow_service.entrypoints.connect_points import build_points_asgi

    points_auth = bootstrap.points_authenticator(settings)
    if isinstance(points_auth, IdTokenVerifier):
        verifiers.append(points_auth)  # warmed at start like the push verifier
    path, points_app = build_points_asgi(settings, c.ledger, points_auth)
    return Mount(path, app=points_app)


def _console_mount(settings: Settings, c: bootstrap.Container, verifiers: list[IdTokenVerifier]) -> Mount:
    from paynow_service.entrypoints.console import console_app

    verifier = bootstrap.console_verifier(settings)
    if verifier is not None:
        verifiers.append(verifier)  # warmed at start like the others
    return Mount("/console", app=console_app(settings, c, verifier))


def _lifespan(
    settings: Settings, c: bootstrap.Container, verifiers: list[IdTokenVerifier]
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for verifier in verifiers:
            verifier.start()  # a fresh instance fetches the signing certs now, not on the first call
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
            for verifier in verifiers:
                await verifier.aclose()
            await c.aclose()
            log(logger, logging.INFO, "HTTP app stopped", component="http")

    return lifespan


def _push_route(c: bootstrap.Container, verifier: IdTokenVerifier | None) -> Route:
    from paynow_service.entrypoints.push import PATH, PushEndpoint

    return Route(PATH, PushEndpoint(c.message_handler(), verifier).handle, methods=ALL_METHODS)


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


Readiness = tuple[bool, dict[str, str]]


class _Readiness:
    """GET /readyz: Firestore answers, Pub/Sub too in queue mode, and the push endpoint has its
    signing certs (or is still within the start-up grace); 200 when all are ok, else 503.

    One check answers every probe for `cache_s`, and probes that arrive while it runs wait for
    that one. Each check reads "ok", "unavailable" or "not ready": why goes to the log only.
    """

    def __init__(
        self, c: bootstrap.Container, push_verifier: IdTokenVerifier | None, cache_s: float = READYZ_CACHE_S
    ) -> None:
        self._c = c
        self._push_verifier = push_verifier
        self._cache_s = cache_s
        self._last: Readiness = (False, {})
        self._checked_at = float("-inf")
        self._check: asyncio.Task[Readiness] | None = None

    async def handle(self, request: Request) -> Response:
        ready, checks = await self._current()
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    async def _current(self) -> Readiness:
        if time.monotonic() - self._checked_at < self._cache_s:
            return self._last
        if self._check is None or self._check.done():
            self._check = asyncio.create_task(self._run_checks(), name="readyz-check")
        # Shielded: a probe that hangs up must not cancel the check the others wait for.
        return await asyncio.shield(self._check)

    async def _run_checks(self) -> Readiness:
        settings = self._c.settings
        checks = {"firestore": await self._firestore()}
        if settings.webhook_mode == "queue" and "webhook" in settings.http_routes:
            checks["pubsub"] = await self._pubsub()
        if self._push_verifier is not None:
            checks["push_certs"] = "ok" if self._push_verifier.ready() else "not ready"
        self._last = (all(v == "ok" for v in checks.values()), checks)
        self._checked_at = time.monotonic()
        return self._last

    async def _firestore(self) -> str:
        probe = self._c.db.collection("readyz").document("probe")
        try:
            await asyncio.wait_for(probe.get(timeout=2), timeout=3)
        except Exception as err:  # noqa: BLE001 (any failure means not ready)
            return _unavailable("firestore", err)
        return "ok"

    async def _pubsub(self) -> str:
        try:
            await self._c.publisher.check()
        except Exception as err:  # noqa: BLE001 (any failure means not ready)
            return _unavailable("pubsub", err)
        return "ok"


def _unavailable(check: str, err: BaseException) -> str:
    # The class name helps an operator; the probe's caller gets nothing of the inside.
    log(
        logger,
        logging.WARNING,
        "Readiness check failed",
        component="http",
        check=check,
        error_type=type(err).__name__,
    )
    return "unavailable"


class _Server(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM or SIGINT once it has shut down gracefully, and that ends
    the process without exit handlers: the queued log lines (its own shutdown lines and "HTTP app
    stopped" among them) and the spans not exported yet are written before that."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                tracing.flush()
                flush_logs()


def run(settings: Settings) -> int:
    """`paynow-service serve`: uvicorn on PORT, draining in-flight requests on SIGTERM."""
    app = create_app(settings)
    if settings.disabled_auths:  # an open endpoint must not be reachable from the network
        log(
            logger,
            logging.WARNING,
            "Auth disabled: listening on 127.0.0.1 only",
            component="http",
            disabled=list(settings.disabled_auths),
            host=settings.listen_host,
        )
    config = uvicorn.Config(
        app,
        host=settings.listen_host,
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
