"""The ASGI app: one Starlette app whose routes follow HTTP_ROUTES (SPEC section 3).

The public webhook service runs with HTTP_ROUTES=webhook and serves nothing else;
/healthz and /readyz are always there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paynow_service import bootstrap
from paynow_service.config import Settings
from paynow_service.logs import log

logger = logging.getLogger("paynow_service.http")


def create_app(settings: Settings) -> Starlette:
    db = bootstrap.firestore_client(settings)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(db.collection("readyz").document("probe").get(timeout=2), timeout=3)
            checks["firestore"] = "ok"
        except Exception as err:  # noqa: BLE001 (any failure means not ready)
            checks["firestore"] = f"unavailable: {type(err).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log(
            logger,
            logging.INFO,
            "HTTP app started",
            component="http",
            routes=list(settings.http_routes),
            webhook_mode=settings.webhook_mode,
        )
        yield
        db.close()  # type: ignore[no-untyped-call]

    routes = [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
    return Starlette(routes=routes, lifespan=lifespan)


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
        lifespan="on",
    )
    uvicorn.Server(config).run()
    return 0
