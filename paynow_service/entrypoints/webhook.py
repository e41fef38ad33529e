"""POST /api/paynow/webhook: PayNow's front door (SPEC sections 2 and 3).

Bytes in, verified and parsed at the edge, handed to the ingest service. Answers:
200 accepted / duplicate / ignored; 405 other methods; 400 malformed; 401 bad
signature, stale timestamp or foreign store; 413 too large; 503 not durable (PayNow
retries). Bad input never gets a 500, and no answer or log echoes a secret.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from paynow_service import metrics
from paynow_service.config import Settings
from paynow_service.domain.errors import InvalidEventError
from paynow_service.domain.events import PaymentEvent
from paynow_service.domain.paynow import (
    MalformedWebhookError,
    decode_envelope,
    event_from_envelope,
    payload_hash,
)
from paynow_service.domain.signature import SignatureError, verify_signature
from paynow_service.logs import LogSampler, log
from paynow_service.service.ingest import COMPONENT, IngestResult, IngestService

logger = logging.getLogger("paynow_service.webhook")
PATH = "/api/paynow/webhook"


class _TooLarge(Exception):
    pass


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
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
        self, status: int, reason: str, detail: str, started: float, **fields: object
    ) -> JSONResponse:
        self._rejections.log(
            reason,
            logging.WARNING,
            f"Webhook rejected - {reason}",
            component=COMPONENT,
            rejection_reason=reason,
            processing_ms=round((time.perf_counter() - started) * 1000, 2),
            **fields,
        )
        self._count(status, reason, started)
        return _error(status, reason, detail)

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        if request.method != "POST":
            self._count(405, "method_not_allowed", started)
            return _error(405, "method_not_allowed", "use POST")
        settings = self._settings
        try:
            body = await _read_limited(request, settings.paynow_max_body_bytes)
        except _TooLarge:
            return self._reject(
                413, "too_large", f"body exceeds {settings.paynow_max_body_bytes} bytes", started
            )
        except ClientDisconnect:
            self._count(400, "malformed", started)
            return _error(400, "malformed", "client disconnected before the body was read")
        now_ms = int(time.time() * 1000)
        try:
            sent_at_ms = verify_signature(
                request.headers,
                body,
                settings.paynow_webhook_secrets,
                now_ms=now_ms,
                tolerance_s=settings.paynow_timestamp_tolerance_s,
            )
        except SignatureError as err:
            return self._reject(401, err.reason, err.detail, started)
        try:
            envelope = decode_envelope(body)
        except MalformedWebhookError as err:
            return self._reject(400, "malformed", err.detail, started)
        fields = {"event_id": envelope.event_id, "event_type": envelope.event_type}
        log(logger, logging.INFO, "Webhook received", component=COMPONENT, **fields)
        if settings.paynow_store_id and envelope.store_id and envelope.store_id != settings.paynow_store_id:
            return self._reject(401, "foreign_store", "event belongs to another store", started, **fields)
        body_hash = payload_hash(envelope.body)
        try:
            event = event_from_envelope(envelope, received_at_ms=now_ms, sent_at_ms=sent_at_ms)
        except InvalidEventError as err:
            bare = PaymentEvent(
                event_id=envelope.event_id,
                event_type=envelope.event_type,
                received_at_ms=now_ms,
                sent_at_ms=sent_at_ms,
            )
            return self._answer(
                await _durably(self._ingest.ingest_invalid(bare, body_hash, err)), bare, started
            )
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
        self._count(result.status_code, result.outcome, started)
        if result.status_code >= 500:
            log(
                logger,
                logging.ERROR,
                "Webhook not durable - PayNow will retry",
                reason=result.detail,
                **fields,
            )
            return _error(503, "unavailable", "the event could not be made durable; retry later")
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


async def _durably(ingest: Awaitable[IngestResult]) -> IngestResult:
    """The ingest's answer; an error it did not classify is a 503 (not durable: PayNow retries), not a 500."""
    try:
        return await ingest
    except Exception as err:  # noqa: BLE001 (any failure here means the event may not be durable)
        return IngestResult(503, "unavailable", "none", f"unexpected {type(err).__name__}")
