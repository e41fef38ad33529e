"""Who may use the console: a Google ID token of an operator (CONSOLE_OPERATORS), or nobody asked.

The token comes as `Authorization: Bearer <token>` (what a proxy or a script sends), or from the
`console_token` cookie that the sign-in page sets (a browser cannot add a header to a link it
follows). Either way the same verifier as PointsService's (adapters/oidc.py) checks its signature,
issuer, audience (CONSOLE_AUDIENCE), expiry, `email_verified` and that the email is listed.
Without a verifier (on the local emulators without CONSOLE_OPERATORS) every request is the open
console's and every page says so.
"""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from paynow_service.domain.errors import CertsUnavailableError, PermissionDeniedError, UnauthenticatedError

TOKEN_COOKIE = "console_token"  # noqa: S105 (a cookie's name)
OPEN_OPERATOR = "open-console"  # who the log names when the console is open (local emulators only)
TOKEN_COOKIE_MAX_AGE_S = 3600  # a Google ID token lives an hour: the cookie no longer
# Refusals: status and what the page says (never why a token failed in detail: that helps a guesser).
REFUSALS: dict[type[Exception], tuple[int, str]] = {
    UnauthenticatedError: (401, "Sign in with a Google ID token of an operator."),
    PermissionDeniedError: (403, "This account is not an operator of this console."),
    CertsUnavailableError: (503, "Google's signing keys are not loaded yet: try again shortly."),
}


def refusal(err: Exception) -> tuple[int, str]:
    """The status and message of a refused request."""
    for kind, answer in REFUSALS.items():
        if isinstance(err, kind):
            return answer
    return 401, REFUSALS[UnauthenticatedError][1]


class Verifier(Protocol):
    async def verify(self, authorization: str | None) -> str: ...


class OperatorAuth:
    """The operator of a request: a verified email, or OPEN_OPERATOR on an open console."""

    def __init__(self, verifier: Verifier | None) -> None:
        self._verifier = verifier

    @property
    def open(self) -> bool:
        return self._verifier is None

    async def operator(self, request: Request) -> str:
        """The operator's email; raises UnauthenticatedError, PermissionDeniedError or
        CertsUnavailableError."""
        return await self.check(authorization_of(request))

    async def check(self, authorization: str | None) -> str:
        if self._verifier is None:
            return OPEN_OPERATOR
        return await self._verifier.verify(authorization)


def authorization_of(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        return header
    cookie = request.cookies.get(TOKEN_COOKIE)
    return f"Bearer {cookie}" if cookie else None


def set_token_cookie(response: Response, token: str, path: str) -> None:
    response.set_cookie(
        TOKEN_COOKIE,
        token,
        max_age=TOKEN_COOKIE_MAX_AGE_S,
        path=path,
        secure=True,  # browsers keep Secure cookies of http://127.0.0.1 and localhost too
        httponly=True,
        samesite="strict",
    )


def clear_token_cookie(response: Response, path: str) -> None:
    response.delete_cookie(TOKEN_COOKIE, path=path, secure=True, httponly=True, samesite="strict")
