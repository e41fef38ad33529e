"""POST /api/tasks/paynow/process: the Pub/Sub push endpoint (the worker over HTTP).

Only Pub/Sub's own pushes get in: a Google-signed OIDC token for PUSH_AUDIENCE from
PUSH_SERVICE_ACCOUNT (401 without a valid token, 403 for another account). Every
authenticated message is answered 204 once done (processed, duplicate, or terminal
and dead-lettered, undecodable ones included) and 503 when it should come back.
A 4xx would be a nack, so none is ever used for a message. `REFUSALS` is the one table
from the token verifier's errors to answers and log lines.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from paynow_service.domain.errors import (
    CertsUnavailableError,
    PaynowServiceError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from paynow_service.entrypoints.message_handler import COMPONENT, MessageHandler
from paynow_service.logs import LogSampler, log

logger = logging.getLogger("paynow_service.worker")
PATH = "/api/tasks/paynow/process"
MAX_PUSH_BYTES = 10 * 1024 * 1024  # Pub/Sub's message limit, plus envelope


class TokenVerifier(Protocol):
    async def verify(self, authorization: str | None) -> str: ...


class Refusal(NamedTuple):
    """A push the token verifier refused: the answer, and its log line."""

    status: int
    error: str
    detail: str
    message: str
    sample_key: str  # "": logged every time (not something a caller can provoke at will)
    log_reason: Callable[[BaseException], str | None]


# A refused token is never a message's fault: 401/403 for a bad caller, 503 (retry) when the
# certs to check it are missing. First match wins.
REFUSALS: tuple[tuple[type[PaynowServiceError], Refusal], ...] = (
    (
        UnauthenticatedError,
        Refusal(
            401,
            "unauthenticated",
            "a valid Google ID token is required",
            "Push refused - unauthenticated",
            "unauthenticated",
            lambda err: str(err)[:120],
        ),
    ),
    (
        PermissionDeniedError,
        Refusal(
            403,
            "permission_denied",
            "token of another account",
            "Push refused - wrong account",
            "wrong_account",
            lambda err: None,
        ),
    ),
    (
        # Google's certs are unreachable: the message must come back, not be refused.
        CertsUnavailableError,
        Refusal(
            503,
            "retry",
            "signing certs unavailable",
            "Transient failure - will retry",
            "",
            lambda err: CertsUnavailableError.reason,
        ),
    ),
)
_REFUSED = tuple(error_type for error_type, _ in REFUSALS)


def _attributes(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int | float)}


def _publish_time(message: Mapping[str, Any]) -> dt.datetime | None:
    """The message's publishTime (RFC 3339, as Pub/Sub sends it), or None if absent or unreadable."""
    value = message.get("publishTime", message.get("publish_time"))
    if not isinstance(value, str):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo is not None else None


def _attempt(envelope: Mapping[str, Any]) -> int | None:
    value = envelope.get("deliveryAttempt", envelope.get("delivery_attempt"))
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class PushEndpoint:
    def __init__(self, handler: MessageHandler, verifier: TokenVerifier | None) -> None:
        self._handler = handler
        self._verifier = verifier  # None only with PUSH_AUTH=disabled (emulator)
        # Anyone who reaches the URL can send a bad token: a flood logs a sample and a count.
        self._refusals = LogSampler(logger)

    async def handle(self, request: Request) -> Response:
        if request.method != "POST":
            return JSONResponse({"error": "method_not_allowed", "detail": "use POST"}, status_code=405)
        if self._verifier is not None:
            try:
                await self._verifier.verify(request.headers.get("authorization"))
            except _REFUSED as err:
                return self._refuse(err)
        body = await request.body()
        data, attributes, message_id, attempt, published_at, problem = self._unwrap(body)
        if problem:
            # Authenticated but unreadable: keep it, as it came, in the DLQ.
            outcome = await self._handler.handle_undecodable(
                body[:MAX_PUSH_BYTES], attributes, problem, message_id=message_id
            )
        else:
            outcome = await self._handler.handle(
                data, attributes, message_id=message_id, delivery_attempt=attempt, published_at=published_at
            )
        if outcome.done:
            return Response(status_code=204)
        return JSONResponse({"error": "retry", "detail": outcome.reason}, status_code=503)

    def _refuse(self, err: PaynowServiceError) -> Response:
        refusal = next(refusal for error_type, refusal in REFUSALS if isinstance(err, error_type))
        fields = {"component": COMPONENT, "reason": refusal.log_reason(err)}
        if refusal.sample_key:
            self._refusals.log(refusal.sample_key, logging.WARNING, refusal.message, **fields)
        else:
            log(logger, logging.WARNING, refusal.message, **fields)
        return JSONResponse({"error": refusal.error, "detail": refusal.detail}, status_code=refusal.status)

    @staticmethod
    def _unwrap(body: bytes) -> tuple[bytes, dict[str, str], str, int | None, dt.datetime | None, str]:
        """(data, attributes, message id, delivery attempt, publish time, problem) of a push envelope."""
        try:
            envelope = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return b"", {}, "", None, None, "push body is not JSON"
        if not isinstance(envelope, dict) or not isinstance(envelope.get("message"), dict):
            return b"", {}, "", None, None, "push body has no message object"
        message = envelope["message"]
        attributes = _attributes(message.get("attributes"))
        message_id = str(message.get("messageId") or message.get("message_id") or "")
        attempt = _attempt(envelope)
        raw = message.get("data", "")
        if not isinstance(raw, str):
            return b"", attributes, message_id, attempt, None, "message data is not a base64 string"
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return b"", attributes, message_id, attempt, None, "message data is not valid base64"
        ordering_key = message.get("orderingKey") or message.get("ordering_key")
        if isinstance(ordering_key, str) and ordering_key and "ordering_key" not in attributes:
            attributes["ordering_key"] = ordering_key
        return data, attributes, message_id, attempt, _publish_time(message), ""
