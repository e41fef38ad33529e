"""The operator console (HTTP_ROUTES `console`): find an event, see what happened to it, fix it.

Server-rendered pages (Jinja templates in templates/, a little script in static/) mounted at
/console by entrypoints/http_app.py. Every page and action needs an operator (auth.py), every
form a CSRF token (csrf.py); the pages read through service/console_queries.py, the DLQ's through
service/console_dlq.py, the same code as `paynow-service dlq`. docs/console.md shows each page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from paynow_service import bootstrap
from paynow_service.config import Settings
from paynow_service.domain.errors import AuthError, CertsUnavailableError
from paynow_service.entrypoints.console.actions import Actions
from paynow_service.entrypoints.console.auth import OperatorAuth, Verifier, refusal
from paynow_service.entrypoints.console.pages import Pages
from paynow_service.entrypoints.console.render import Renderer
from paynow_service.service.console_dlq import DeadLetterReaderPort
from paynow_service.service.console_queries import ConsoleQueries
from paynow_service.service.dead_letter_replay import RecordsPort, TopicPort

Handler = Callable[[Request], Awaitable[Response]]


def console_app(settings: Settings, c: bootstrap.Container, verifier: Verifier | None) -> Starlette:
    """The console on the process's clients; `verifier` None: the open console (local emulators only)."""

    def open_dlq() -> DeadLetterReaderPort[Any]:
        return bootstrap.dead_letter_queue(settings)

    return build_console(verifier, bootstrap.console_queries(c), open_dlq, c.records, c.publisher)


def build_console(
    verifier: Verifier | None,
    queries: ConsoleQueries,
    open_dlq: Callable[[], DeadLetterReaderPort[Any]],
    records: RecordsPort,
    topic: TopicPort,
) -> Starlette:
    """The console's ASGI app over these ports (tests pass fakes)."""
    auth = OperatorAuth(verifier)
    renderer = Renderer(open_console=auth.open)
    pages = Pages(queries, open_dlq, renderer)
    actions = Actions(auth, renderer, open_dlq, records, topic)

    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                request.state.operator = await auth.operator(request)
            except (AuthError, CertsUnavailableError) as err:
                status, message = refusal(err)
                headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
                response = renderer.page(request, "refused.html", status, message=message)
                response.headers.update(headers)
                return response
            return await handler(request)

        return endpoint

    routes = [
        Route("/", guarded(pages.home), methods=["GET"]),
        Route("/event", guarded(pages.event), methods=["GET"]),
        Route("/user", guarded(pages.user), methods=["GET"]),
        Route("/dlq", guarded(pages.dlq), methods=["GET"]),
        Route("/dlq/{action}", guarded(actions.dlq), methods=["POST"]),
        Route("/report", guarded(pages.report), methods=["GET"]),
        Route("/signin", pages.signin, methods=["GET"]),
        Route("/signin", actions.signin, methods=["POST"]),
        Route("/signout", actions.signout, methods=["POST"]),
        Route("/static/{name}", pages.static, methods=["GET"]),
    ]
    return Starlette(routes=routes)
