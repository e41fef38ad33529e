"""Cross-site request forgery: every form carries the token of the `console_csrf` cookie.

A double-submit cookie: a random token set on the first page, repeated in a hidden field of
every form; a POST whose field differs from its cookie is refused. The cookie is SameSite=Strict
and HttpOnly too, so another site can neither send nor read it.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

CSRF_COOKIE = "console_csrf"
CSRF_FIELD = "csrf"


def token_of(request: Request) -> tuple[str, bool]:
    """The request's CSRF token, and whether it is new (then the answer sets the cookie)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if len(current) >= 32:
        return current, False
    return secrets.token_urlsafe(32), True


def valid(request: Request, sent: object) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and isinstance(sent, str) and hmac.compare_digest(cookie.encode(), sent.encode())


def set_csrf_cookie(response: Response, token: str, path: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, path=path, secure=True, httponly=True, samesite="strict")
