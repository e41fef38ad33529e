"""The last line of the HTTP app: every answer within REQUEST_DEADLINE_S, and never a 500.

Each route handles the failures it knows (the webhook answers 503 for an event it could not
make durable, Connect maps domain errors to codes). What is left, an error nobody expected
or a wait nobody bounded, reaches this middleware: it answers 503 (the caller retries:
PayNow redelivers, Pub/Sub redelivers, a Connect client sees `unavailable`) and logs one
"not durable" line. Cancelling a handler at the deadline is safe: an event is only ever
acknowledged as done after its record or its transaction committed, and what was cut short
is retried (a recorded, unpublished event is also re-published by a redelivery or `sweep`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paynow_service import metrics
from paynow_service.logs import log

logger = logging.getLogger("paynow_service.http")
# The HTTP error shape (`error`, `detail`), and Connect's (`code`, `message`) for its clients.
_BODY = json.dumps(
    {
        "error": "unavailable",
        "detail": "not durable; retry later",
        "code": "unavailable",
        "message": "not durable; retry later",
    }
).encode()


def component_of(path: str) -> str:
    """The log component of a route (SPEC 5b names), for the line this middleware writes."""
    if path.startswith("/api/paynow/webhook"):
        return "paynow_webhook"
    if path.startswith("/api/tasks/"):
        return "paynow_worker"
    if path.startswith("/paynow.points."):
        return "points_connect"
    return "http"


class RequestGuard:
    """ASGI middleware: a deadline per HTTP request, and a 503 for whatever escaped a route."""

    def __init__(self, app: ASGIApp, *, deadline_s: float) -> None:
        self._app = app
        self._deadline_s = deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            async with asyncio.timeout(self._deadline_s):
                await self._app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 (the point: nothing escapes as a 500)
            cause = "deadline" if isinstance(exc, TimeoutError) else "unexpected_error"
            self._report(scope, exc, cause, started, response_started)
            if not response_started:
                await _unavailable(send)

    @staticmethod
    def _report(scope: Scope, exc: Exception, cause: str, started: float, response_started: bool) -> None:
        path = str(scope.get("path", ""))
        metrics.REQUESTS_NOT_DURABLE.labels(cause).inc()
        log(
            logger,
            logging.ERROR,
            "Request not durable - answered 503" if not response_started else "Request failed mid-answer",
            component=component_of(path),
            path=path,
            cause=cause,
            error_type=type(exc).__name__,
            processing_ms=round((time.perf_counter() - started) * 1000, 2),
        )


async def _unavailable(send: Send) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_BODY)).encode()),
        (b"retry-after", b"5"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": _BODY})
