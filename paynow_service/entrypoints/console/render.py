"""Server-rendered pages: one Jinja environment (autoescaped), the filters, and the answer's headers.

Every page gets the mount's path (`base`), the operator, the CSRF token of its forms and whether
the console is open. Answers are never cached and carry a strict Content-Security-Policy: scripts
and styles come from the console's own static files only.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from paynow_service.entrypoints.console.csrf import set_csrf_cookie, token_of

HERE = Path(__file__).resolve().parent
STATIC_TYPES = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


EPOCH = dt.datetime.fromtimestamp(0, dt.UTC)  # what the ledger reader gives an entry without a time


def when(value: object) -> str:
    if not isinstance(value, dt.datetime) or value == EPOCH:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: object) -> str:
    if not isinstance(seconds, int):
        return "-"
    days, rest = divmod(max(seconds, 0), 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{rest // 60:02d}m" if hours or rest >= 60 else f"{rest}s"


def points(value: object) -> str:
    """A `{paid, promo}` pair as paid/promo."""
    paid, promo = getattr(value, "paid", None), getattr(value, "promo", None)
    return "-" if paid is None or promo is None else f"{paid}/{promo}"


class Renderer:
    def __init__(self, *, open_console: bool) -> None:
        self.open_console = open_console
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._env.filters.update(when=when, age=age, points=points)
        self._static = {name: (HERE / "static" / name).read_bytes() for name in STATIC_TYPES}

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        token, new = token_of(request)
        base = base_of(request)
        html = self._env.get_template(template).render(
            base=base,
            open_console=self.open_console,
            operator=getattr(request.state, "operator", ""),
            csrf=token,
            **context,
        )
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
        response = HTMLResponse(html, status_code=status, headers=headers)
        if new:
            set_csrf_cookie(response, token, base + "/")
        return response

    def static(self, name: str) -> Response:
        if name not in self._static:
            return Response("not found", status_code=404, media_type="text/plain")
        headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=300"}
        return Response(self._static[name], media_type=STATIC_TYPES[name], headers=headers)


def base_of(request: Request) -> str:
    """Where the console is mounted (`/console`)."""
    return str(request.scope.get("root_path", "")).rstrip("/")
