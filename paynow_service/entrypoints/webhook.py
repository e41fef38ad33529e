"""POST /api/paynow/webhook: PayNow's front door (SPEC sections 2 and 3).

Bytes in, verified and parsed at the edge, handed to the ingest service. Two tables
give every answer: `REJECTIONS` for a delivery refused before ingest (405 other methods;
400 malformed; 401 bad signature, stale timestamp or foreign store; 413 too large) and
`STATUS_BY_OUTCOME` for what the ingest did (200 done, whatever happened; 503 not durable,
PayNow retries). Bad input never gets a 500, and no answer or log echoes a secret.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from typing import NamedTuple

from opentelemetry.trace import SpanKind
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from paynow_service import metrics, tracing
from paynow_service.config import Settings
from paynow_service.domain.errors import (
    ClientDisconnectedError,
    ForeignStoreError,
    InvalidEventError,
    MalformedWebhookError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    SignatureError,
    WebhookRejectedError,
)
from paynow_service.domain.events import PaymentEvent
from paynow_service.domain.paynow import decode_envelope, event_from_envelope, payload_hash
from paynow_service.domain.signature import verify_signature
from paynow_service.logs import LogSampler, log
from paynow_service.service.ingest import COMPONENT, IngestOutcome, IngestResult, IngestService

logger = logging.getLogger("paynow_service.webhook")
PATH = "/api/paynow/webhook"
SPAN = f"POST {PATH}"


class Rejection(NamedTuple):
    """The answer to a refused delivery; its error code is the exception's `reason`."""

    status: int
    logged: bool  # through the sampler; a wrong method or a dropped connection is not worth a line


# First match wins: subclasses before their bases.
REJECTIONS: tuple[tuple[type[WebhookRejectedError], Rejection], ...] = (
    (MethodNotAllowedError, Rejection(405, logged=False)),
    (PayloadTooLargeError, Rejection(413, logged=True)),
    (ClientDisconnectedError, Rejection(400, logged=False)),
    (MalformedWebhookError, Rejection(400, logged=True)),
    (SignatureError, Rejection(401, logged=True)),  # invalid_signature, invalid_timestamp
    (ForeignStoreError, Rejection(401, logged=True)),
)
# What the ingest did -> HTTP status: anything but 200 makes PayNow deliver the event again.
STATUS_BY_OUTCOME: Mapping[IngestOutcome, int] = {
    "queued": 200,
    "processed": 200,
    "duplicate": 200,
    "conflict": 200,
    "ignored": 200,
    "failed_terminal": 200,
    "dead_lettered": 200,
    "unavailable": 503,
    "transient": 503,
}
NOT_DURABLE_CODE = "unavailable"


def rejection_for(err: WebhookRejectedError) -> Rejection:
    """The row of `err` in REJECTIONS (a test checks every rejection has one)."""
    return next((rejection for error_type, rejection in REJECTIONS if isinstance(err, error_type)), _BAD)


_BAD = Rejection(400, logged=True)


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


async def _read_limited(request: Request, limit: int) -> bytes:
    too_large = f"body exceeds {limit} bytes"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(too_large)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(too_large)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientDisconnectedError("client disconnected before the body was read") from None
    return b"".join(chunks)


class WebhookEndpoint:
    def __init__(self, settings: Settings, ingest: IngestService) -> None:
        self._settings = settings
        self._ingest = ingest
        # Anyone can send a bad signature: a flood logs 20 lines per reason per 10 s, then a count.
        self._rejections = LogSampler(logger)

    def _count(self, status: int, outcome: str, started: float) -> None:
        mode = self._settings.webhook_mode
        metrics.WEBHOOK_RESPONSES.labels(str(status), mode, outcome).inc()
        metrics.WEBHOOK_LATENCY.labels(mode).observe(time.perf_counter() - started)

    def _reject(
        self, err: WebhookRejectedError, started: float, fields: Mapping[str, object]
    ) -> JSONResponse:
        rejection, reason = rejection_for(err), err.reason
        tracing.current_span().set_attribute(tracing.OUTCOME, reason)
        if rejection.logged:
            self._rejections.log(
                reason,
                logging.WARNING,
                f"Webhook rejected - {reason}",
                component=COMPONENT,
                rejection_reason=reason,
                processing_ms=round((time.perf_counter() - started) * 1000, 2),
                **fields,
            )
        self._count(rejection.status, reason, started)
        return _error(rejection.status, reason, err.detail)

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        fields: dict[str, object] = {}  # the event's id and type, once the envelope is read
        # A trace of its own: a caller's traceparent is not trusted on the public route.
        with tracing.span(SPAN, kind=SpanKind.SERVER, root=True) as span:
            try:
                response = await self._accept(request, started, fields)
            except WebhookRejectedError as err:
                response = self._reject(err, started, fields)
            if span.is_recording():
                span.set_attributes(
                    {
                        "http.request.method": request.method,
                        "http.route": PATH,
                        "http.response.status_code": response.status_code,
                        **_span_ids(fields),
                    }
                )
            return response

    async def _accept(self, request: Request, started: float, fields: dict[str, object]) -> Response:
        """Verify, decode and ingest the delivery; a refused one raises a WebhookRejectedError."""
        if request.method != "POST":
            raise MethodNotAllowedError("use POST")
        settings = self._settings
        body = await _read_limited(request, settings.paynow_max_body_bytes)
        now_ms = int(time.time() * 1000)
        sent_at_ms = verify_signature(
            request.headers,
            body,
            settings.paynow_webhook_secrets,
            now_ms=now_ms,
            tolerance_s=settings.paynow_timestamp_tolerance_s,
        )
        envelope = decode_envelope(body)
        fields.update(event_id=envelope.event_id, event_type=envelope.event_type)
        log(logger, logging.INFO, "Webhook received", component=COMPONENT, **fields)
        if settings.paynow_store_id and envelope.store_id and envelope.store_id != settings.paynow_store_id:
            raise ForeignStoreError("event belongs to another store")
        body_hash = payload_hash(envelope.body)
        try:
            parsed = event_from_envelope(envelope, received_at_ms=now_ms, sent_at_ms=sent_at_ms)
        except InvalidEventError as err:
            bare = PaymentEvent(
                event_id=envelope.event_id,
                event_type=envelope.event_type,
                received_at_ms=now_ms,
                sent_at_ms=sent_at_ms,
                payload_hash=body_hash,
            )
            return self._answer(
                await _durably(self._ingest.ingest_invalid(bare, body_hash, err)), bare, started
            )
        # The event carries its body's hash: a copy published before the webhook knows whether the id
        # was recorded with another body is refused by the worker (payload_conflict).
        event = replace(parsed, payload_hash=body_hash)
        return self._answer(await _durably(self._ingest.ingest(event, body_hash)), event, started)

    def _answer(self, result: IngestResult, event: PaymentEvent, started: float) -> Response:
        elapsed = round((time.perf_counter() - started) * 1000, 2)
        fields = {
            "component": COMPONENT,
            "event_id": event.event_id,
            "event_type": event.event_type,
            "ordering_key": event.resolved_ordering_key(),
            "processing_ms": elapsed,
            "path": result.path,
            "outcome": result.outcome,
        }
        status = STATUS_BY_OUTCOME[result.outcome]
        self._count(status, result.outcome, started)
        span = tracing.current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    tracing.ORDERING_KEY: event.resolved_ordering_key(),
                    tracing.OUTCOME: result.outcome,
                    "paynow.path": result.path,
                }
            )
        if status != 200:
            log(
                logger,
                logging.ERROR,
                "Webhook not durable - PayNow will retry",
                reason=result.detail,
                **fields,
            )
            return _error(status, NOT_DURABLE_CODE, "the event could not be made durable; retry later")
        if result.outcome != "queued":  # the queue path logged its own success line with status=queued
            log(
                logger,
                logging.INFO,
                "Webhook processed successfully",
                points=result.points,
                status=result.outcome,
                **fields,
            )
        return JSONResponse({"status": result.outcome, "event_id": event.event_id})


def _span_ids(fields: Mapping[str, object]) -> dict[str, str]:
    """The event's id and type as span attributes, once the envelope was read."""
    ids = {tracing.EVENT_ID: fields.get("event_id"), tracing.EVENT_TYPE: fields.get("event_type")}
    return {name: str(value) for name, value in ids.items() if value is not None}


async def _durably(ingest: Awaitable[IngestResult]) -> IngestResult:
    """The ingest's answer; an error it did not classify is not durable (PayNow retries), never a 500."""
    try:
        return await ingest
    except Exception as err:  # noqa: BLE001 (any failure here means the event may not be durable)
        return IngestResult("unavailable", "none", f"unexpected {type(err).__name__}")
