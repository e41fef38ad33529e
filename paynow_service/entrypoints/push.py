"""POST /api/tasks/paynow/process: the Pub/Sub push endpoint (the worker over HTTP).

Only Pub/Sub's own pushes get in: a Google-signed OIDC token for PUSH_AUDIENCE from
PUSH_SERVICE_ACCOUNT (401 without a valid token, 403 for another account). Every
authenticated message is answered 204 once done (processed, duplicate, or terminal
and dead-lettered, undecodable ones included) and 503 when it should come back.
A 4xx would be a nack, so none is ever used for a message.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from paynow_service.adapters.oidc import CertsUnavailableError, PermissionDeniedError, UnauthenticatedError
from paynow_service.entrypoints.message_handler import COMPONENT, MessageHandler
from paynow_service.logs import LogSampler, log

logger = logging.getLogger("paynow_service.worker")
PATH = "/api/tasks/paynow/process"
MAX_PUSH_BYTES = 10 * 1024 * 1024  # Pub/Sub's message limit, plus envelope


class TokenVerifier(Protocol):
    async def verify(self, authorization: str | None) -> str: ...


def _attributes(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str | int | float)}


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
            except UnauthenticatedError as err:
                self._refusals.log(
                    "unauthenticated",
                    logging.WARNING,
                    "Push refused - unauthenticated",
                    component=COMPONENT,
                    reason=str(err)[:120],
                )
                return JSONResponse(
                    {"error": "unauthenticated", "detail": "a valid Google ID token is required"},
                    status_code=401,
                )
            except PermissionDeniedError:
                self._refusals.log(
                    "wrong_account", logging.WARNING, "Push refused - wrong account", component=COMPONENT
                )
                return JSONResponse(
                    {"error": "permission_denied", "detail": "token of another account"}, status_code=403
                )
            except CertsUnavailableError:
                # Google's certs are unreachable: the message must come back, not be refused.
                log(
                    logger,
                    logging.WARNING,
                    "Transient failure - will retry",
                    component=COMPONENT,
                    reason="certs_unavailable",
                )
                return JSONResponse(
                    {"error": "retry", "detail": "signing certs unavailable"}, status_code=503
                )
        body = await request.body()
        data, attributes, message_id, attempt, problem = self._unwrap(body)
        if problem:
            # Authenticated but unreadable: keep it, as it came, in the DLQ.
            outcome = await self._handler.handle_undecodable(
                body[:MAX_PUSH_BYTES], attributes, problem, message_id=message_id
            )
        else:
            outcome = await self._handler.handle(
                data, attributes, message_id=message_id, delivery_attempt=attempt
            )
        if outcome.done:
            return Response(status_code=204)
        return JSONResponse({"error": "retry", "detail": outcome.reason}, status_code=503)

    @staticmethod
    def _unwrap(body: bytes) -> tuple[bytes, dict[str, str], str, int | None, str]:
        """(data, attributes, message id, delivery attempt, problem) of a push envelope."""
        try:
            envelope = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return b"", {}, "", None, "push body is not JSON"
        if not isinstance(envelope, dict) or not isinstance(envelope.get("message"), dict):
            return b"", {}, "", None, "push body has no message object"
        message = envelope["message"]
        attributes = _attributes(message.get("attributes"))
        message_id = str(message.get("messageId") or message.get("message_id") or "")
        attempt = _attempt(envelope)
        raw = message.get("data", "")
        if not isinstance(raw, str):
            return b"", attributes, message_id, attempt, "message data is not a base64 string"
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return b"", attributes, message_id, attempt, "message data is not valid base64"
        ordering_key = message.get("orderingKey") or message.get("ordering_key")
        if isinstance(ordering_key, str) and ordering_key and "ordering_key" not in attributes:
            attributes["ordering_key"] = ordering_key
        return data, attributes, message_id, attempt, ""
