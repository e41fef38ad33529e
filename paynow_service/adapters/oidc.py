"""Google-signed OIDC ID tokens: who is calling the push endpoint and PointsService (SPEC 6).

`IdTokenVerifier.verify` takes the raw Authorization header and returns the caller's
email, or raises `UnauthenticatedError` (no valid token for us: missing, malformed,
unsigned, signed by a key we do not know, expired, wrong audience or issuer),
`PermissionDeniedError` (a valid token of an account that may not call) or
`CertsUnavailableError` (no signing certs yet: try again later).

Google's signing certs are fetched off the request path (adapters/google_certs.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
from google.auth import jwt

from paynow_service.adapters.google_certs import CertsTimings as CertsTimings
from paynow_service.adapters.google_certs import GoogleCerts, first_line
from paynow_service.domain.errors import CertsUnavailableError as CertsUnavailableError
from paynow_service.domain.errors import PermissionDeniedError as PermissionDeniedError
from paynow_service.domain.errors import UnauthenticatedError as UnauthenticatedError

GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
_MAX_TOKEN_BYTES = 16 * 1024


class IdTokenVerifier:
    """Verifies `Authorization: Bearer <Google ID token>` for one audience and a list of emails."""

    def __init__(
        self,
        audience: str,
        allowed_emails: Collection[str],
        certs_url: str,
        request: google.auth.transport.Request | None = None,
        *,
        clock_skew_s: int = 10,
        timings: CertsTimings | None = None,
    ) -> None:
        if not audience:
            raise ValueError("an ID-token audience is required")
        self._audience = audience
        self._allowed = frozenset(e.strip().lower() for e in allowed_emails if e.strip())
        self._skew = clock_skew_s
        self.certs = GoogleCerts(
            certs_url, request or google.auth.transport.requests.Request(), timings or CertsTimings()
        )

    def start(self) -> None:
        """Start fetching the signing certs in the background now (at start-up; `verify` also
        calls it, so a verifier nobody started still gets its refresher). Idempotent."""
        self.certs.start()

    async def aclose(self) -> None:
        """Stop the background refresher."""
        await self.certs.aclose()

    def ready(self) -> bool:
        """True with keys, or without them for the grace after it was built (at start-up); then false."""
        return self.certs.ready()

    async def verify(self, authorization: str | None) -> str:
        """The verified caller email; raises UnauthenticatedError, PermissionDeniedError or
        CertsUnavailableError (no keys yet)."""
        token = _bearer(authorization)
        try:
            header = jwt.decode_header(token)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError, google.auth.exceptions.GoogleAuthError):
            raise UnauthenticatedError("the bearer token is not a JWT") from None
        # Google signs ID tokens with RS256 only: refuse `none`, HMAC and anything else up front.
        if header.get("alg") != "RS256":
            raise UnauthenticatedError("the token is not signed with RS256")
        kid = header.get("kid")
        certs = await self.certs.keys_for(kid if isinstance(kid, str) else None)
        try:
            claims: Mapping[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
                token, certs=certs, audience=self._audience, clock_skew_in_seconds=self._skew
            )
        except (ValueError, TypeError, google.auth.exceptions.GoogleAuthError) as err:
            raise UnauthenticatedError(f"the token was refused: {first_line(err)}") from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise UnauthenticatedError("the token was not issued by Google")
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            raise PermissionDeniedError("the token carries no email")
        if claims.get("email_verified") not in (True, "true"):
            raise PermissionDeniedError("the token's email is not verified")
        if email.lower() not in self._allowed:
            raise PermissionDeniedError("this account may not call this endpoint")
        return email


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise UnauthenticatedError("missing Authorization: Bearer <Google ID token>")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UnauthenticatedError("the Authorization header is not 'Bearer <token>'")
    if len(token) > _MAX_TOKEN_BYTES:
        raise UnauthenticatedError("the bearer token is too large")
    return token
