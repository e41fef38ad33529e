"""The console's pages (GET): search, an event's timeline, a wallet and its ledger, the DLQ, the
reconciliation report, and the sign-in page. Each is a thin call into the service layer
(service/console_queries.py, service/console_dlq.py) rendered by a template."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from paynow_service.domain.errors import InvalidRequestError
from paynow_service.entrypoints.console.render import Renderer
from paynow_service.service.console_dlq import DeadLetterReaderPort, read_dead_letters
from paynow_service.service.console_queries import ConsoleQueries

MAX_QUERY_CHARS = 300


class Pages:
    def __init__(
        self,
        queries: ConsoleQueries,
        open_dlq: Callable[[], DeadLetterReaderPort[Any]],
        renderer: Renderer,
    ) -> None:
        self._queries = queries
        self._open_dlq = open_dlq
        self._render = renderer

    async def home(self, request: Request) -> Response:
        q = request.query_params.get("q", "")[:MAX_QUERY_CHARS].strip()
        result = await self._queries.search(q) if q else None
        return self._render.page(request, "search.html", q=q, result=result)

    async def event(self, request: Request) -> Response:
        event_id = request.query_params.get("id", "")[:MAX_QUERY_CHARS]
        timeline = await self._queries.timeline(event_id) if event_id else None
        if timeline is None:
            return self._render.page(request, "missing.html", 404, what="event", name=event_id)
        return self._render.page(request, "event.html", t=timeline)

    async def user(self, request: Request) -> Response:
        uid = request.query_params.get("uid", "")[:MAX_QUERY_CHARS]
        page = request.query_params.get("page", "")[:2000]
        try:
            wallet = await self._queries.wallet(uid, page) if uid else None
        except InvalidRequestError:  # not a usable uid, or a page token of another listing
            wallet = None
        if wallet is None:
            return self._render.page(request, "missing.html", 404, what="user", name=uid)
        return self._render.page(request, "wallet.html", w=wallet)

    async def dlq(self, request: Request) -> Response:
        groups = await read_dead_letters(self._open_dlq)
        total = sum(g.count for g in groups)
        return self._render.page(request, "dlq.html", groups=groups, total=total)

    async def report(self, request: Request) -> Response:
        report = await self._queries.latest_report()
        return self._render.page(request, "report.html", report=report)

    async def signin(self, request: Request) -> Response:
        return self._render.page(request, "signin.html", error="")

    async def static(self, request: Request) -> Response:
        return self._render.static(str(request.path_params.get("name", "")))
