"""Google-signed OIDC ID tokens: who is calling the push endpoint and PointsService (SPEC 6).

`IdTokenVerifier.verify` takes the raw Authorization header and returns the caller's
email, or raises `UnauthenticatedError` (no valid token for us: missing, malformed,
unsigned, signed by a key we do not know, expired, wrong audience or issuer) or
`PermissionDeniedError` (a valid token of an account that may not call). Google's
signing certs are cached for the max-age Google gives them; a token naming an unknown
key id triggers at most one refresh a minute (keys rotate, but a stream of forged kids
must not make us hammer the certs URL). The fetch blocks, so it runs in a thread.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Collection, Mapping
from typing import Any

import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
from google.auth import jwt

from paynow_service.domain.errors import TransientError

GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
_MAX_TOKEN_BYTES = 16 * 1024
_DEFAULT_TTL_S = 3600.0
_MIN_REFRESH_S = 60.0
_FETCH_TIMEOUT_S = 10.0
_MAX_AGE = re.compile(r"max-age=(\d+)")


class UnauthenticatedError(Exception):
    """No valid Google ID token for this audience (answered 401 / UNAUTHENTICATED)."""


class PermissionDeniedError(Exception):
    """A valid token of an account that may not call, or with an unverified email (403)."""


class CertsUnavailableError(TransientError):
    """Google's signing certs could not be fetched and none are cached: try again later."""

    reason = "certs_unavailable"


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
    ) -> None:
        if not audience:
            raise ValueError("an ID-token audience is required")
        self._audience = audience
        self._allowed = frozenset(e.strip().lower() for e in allowed_emails if e.strip())
        self._certs_url = certs_url
        self._request = request or google.auth.transport.requests.Request()
        self._skew = clock_skew_s
        self._certs: Mapping[str, str] = {}
        self._fresh_until = 0.0
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def verify(self, authorization: str | None) -> str:
        """The verified caller email; raises UnauthenticatedError or PermissionDeniedError."""
        token = _bearer(authorization)
        try:
            header = jwt.decode_header(token)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError, google.auth.exceptions.GoogleAuthError):
            raise UnauthenticatedError("the bearer token is not a JWT") from None
        # Google signs ID tokens with RS256 only: refuse `none`, HMAC and anything else up front.
        if header.get("alg") != "RS256":
            raise UnauthenticatedError("the token is not signed with RS256")
        kid = header.get("kid")
        certs = await self._certs_for(kid if isinstance(kid, str) else None)
        try:
            claims: Mapping[str, Any] = jwt.decode(  # type: ignore[no-untyped-call]
                token, certs=certs, audience=self._audience, clock_skew_in_seconds=self._skew
            )
        except (ValueError, TypeError, google.auth.exceptions.GoogleAuthError) as err:
            raise UnauthenticatedError(f"the token was refused: {_first_line(err)}") from None
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

    async def _certs_for(self, kid: str | None) -> Mapping[str, str]:
        if self._usable(kid, time.monotonic()):
            return self._certs
        async with self._lock:  # one fetch at a time; the others use its result
            now = time.monotonic()
            if self._usable(kid, now):
                return self._certs
            if now >= self._fresh_until or now - self._fetched_at >= _MIN_REFRESH_S:
                try:
                    certs, ttl = await asyncio.to_thread(self._fetch)
                except (OSError, ValueError, google.auth.exceptions.TransportError) as err:
                    if not self._certs:
                        raise CertsUnavailableError(
                            f"fetching the signing certs failed: {_first_line(err)}"
                        ) from None
                    # Google's certs outlive their max-age by days: a stale copy beats refusing everyone.
                    self._fetched_at = now
                else:
                    self._certs, self._fetched_at, self._fresh_until = certs, now, now + ttl
        return self._certs

    def _usable(self, kid: str | None, now: float) -> bool:
        return now < self._fresh_until and (kid is None or kid in self._certs)

    def _fetch(self) -> tuple[dict[str, str], float]:
        response = self._request(url=self._certs_url, method="GET", timeout=_FETCH_TIMEOUT_S)
        if response.status != 200:
            raise ValueError(f"the certs URL answered {response.status}")
        data = json.loads(response.data)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError("the certs URL did not answer {kid: PEM}")
        headers = {str(k).lower(): str(v) for k, v in (response.headers or {}).items()}
        match = _MAX_AGE.search(headers.get("cache-control", ""))
        ttl = float(match.group(1)) if match else _DEFAULT_TTL_S
        return {str(k): v for k, v in data.items()}, min(max(ttl, _MIN_REFRESH_S), 86400.0)


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


def _first_line(err: BaseException) -> str:
    # Messages from google-auth may quote claims; keep them short and single-line for logs.
    return (str(err).splitlines() or [type(err).__name__])[0][:160]
