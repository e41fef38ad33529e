"""The console's actions (POST): sign in, sign out, and replay or purge dead letters.

Every action checks the CSRF token; a DLQ action runs only once confirmed (the page's script asks
with confirm(); without it the server answers a confirmation page first) and goes through the
same code as `paynow-service dlq replay | purge` (service/console_dlq.py). Each done action logs
one line with the operator's email and the event ids, reason and counts: ids only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from paynow_service.domain.errors import AuthError, CertsUnavailableError
from paynow_service.entrypoints.console.auth import (
    OperatorAuth,
    clear_token_cookie,
    refusal,
    set_token_cookie,
)
from paynow_service.entrypoints.console.csrf import CSRF_FIELD, valid
from paynow_service.entrypoints.console.render import SECURITY_HEADERS, Renderer, base_of
from paynow_service.logs import log
from paynow_service.service.console_dlq import DeadLetterReaderPort, dlq_action
from paynow_service.service.dead_letter_replay import RecordsPort, TopicPort

logger = logging.getLogger("paynow_service.console")
MAX_FORM_FIELDS = 200
MAX_FORM_BYTES = 64 * 1024
MAX_TOKEN_CHARS = 16 * 1024
DLQ_ACTIONS = ("replay", "purge")
EXPIRED = "The form expired: reload the page."


class Actions:
    def __init__(
        self,
        auth: OperatorAuth,
        renderer: Renderer,
        open_dlq: Callable[[], DeadLetterReaderPort[Any]],
        records: RecordsPort,
        topic: TopicPort,
    ) -> None:
        self._auth = auth
        self._render = renderer
        self._open_dlq = open_dlq
        self._records = records
        self._topic = topic

    async def signin(self, request: Request) -> Response:
        """The token pasted in the sign-in form, checked, then kept in an HttpOnly cookie."""
        form = await _form(request)
        if not valid(request, form.get(CSRF_FIELD)):
            return self._render.page(request, "signin.html", 403, error="The form expired: try again.")
        token = form.get("token").strip()
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        if not token or len(token) > MAX_TOKEN_CHARS:
            return self._render.page(request, "signin.html", 401, error="Paste a Google ID token.")
        try:
            operator = await self._auth.check(f"Bearer {token}")
        except (AuthError, CertsUnavailableError) as err:
            status, message = refusal(err)
            return self._render.page(request, "signin.html", status, error=message)
        log(logger, logging.INFO, "Console sign-in", component="console", operator=operator)
        base = base_of(request)
        response = RedirectResponse(base + "/", status_code=303, headers=SECURITY_HEADERS)
        set_token_cookie(response, token, base + "/")
        return response

    async def signout(self, request: Request) -> Response:
        form = await _form(request)
        base = base_of(request)
        if not valid(request, form.get(CSRF_FIELD)):
            return self._render.page(request, "refused.html", 403, message=EXPIRED)
        response = RedirectResponse(base + "/signin", status_code=303, headers=SECURITY_HEADERS)
        clear_token_cookie(response, base + "/")
        return response

    async def dlq(self, request: Request) -> Response:
        """POST /dlq/replay or /dlq/purge: the letters of `event_id` fields, or of `reason`."""
        action = str(request.path_params.get("action", ""))
        form = await _form(request)
        if action not in DLQ_ACTIONS:
            return self._render.page(request, "missing.html", 404, what="action", name=action)
        if not valid(request, form.get(CSRF_FIELD)):
            return self._render.page(request, "refused.html", 403, message=EXPIRED)
        event_ids = [v.strip() for v in form.getlist("event_id") if v.strip()]
        reason = form.get("reason").strip()
        if not event_ids and not reason:
            return self._render.page(request, "refused.html", 400, message="Choose an event or a reason.")
        if form.get("confirm") != "yes":
            return self._render.page(
                request, "confirm.html", action=action, event_ids=event_ids, reason=reason
            )
        report = await dlq_action(
            self._open_dlq,
            action,
            event_ids=event_ids,
            reason="" if event_ids else reason,
            records=self._records,
            topic=self._topic,
        )
        log(
            logger,
            logging.INFO,
            f"Console DLQ {action}",
            component="console",
            operator=request.state.operator,
            action=f"dlq_{action}",
            reason=reason or None,
            event_ids=[d.event_id or d.message_id for d in report.done],
            done=len(report.done),
            failed=len(report.failed),
            missing=report.missing,
        )
        return self._render.page(request, "done.html", report=report, reason=reason)


class Form:
    """An urlencoded form's fields (the console's forms post nothing else)."""

    def __init__(self, fields: dict[str, list[str]] | None = None) -> None:
        self._fields = fields or {}

    def get(self, name: str) -> str:
        values = self._fields.get(name)
        return values[0] if values else ""

    def getlist(self, name: str) -> list[str]:
        return list(self._fields.get(name, []))


async def _form(request: Request) -> Form:
    """The posted form, read up to MAX_FORM_BYTES; anything else is an empty form (refused by
    the CSRF check that follows)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return Form()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return Form()
    try:
        return Form(parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS))
    except ValueError:  # not UTF-8, or too many fields
        return Form()
