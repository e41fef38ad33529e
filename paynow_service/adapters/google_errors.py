"""One classification of Google API errors, and one way to bound a call, for every adapter.

Firestore and Pub/Sub calls fail in many shapes: gRPC statuses mapped to
`google.api_core.exceptions` (ServiceUnavailable, DeadlineExceeded, ResourceExhausted,
Unknown, Aborted ...), a client-side `RetryError` once its own retries ran out, a socket
error, or no answer at all. On a request path each of them means the same thing: the
storage did not answer in time, so nothing may be assumed durable and the caller is told
to retry (503 / UNAVAILABLE). `bounded` also puts a hard stop on a call: the clients'
own deadlines do not cover every wait (a channel that hangs while connecting, retries
that restart the deadline), which had left webhooks waiting 50 s and more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from google.api_core import exceptions as gexc

from paynow_service.domain.errors import StorageUnavailableError

T = TypeVar("T")

# Errors that say "not now", not "never": the same call may succeed later.
TRANSIENT_GOOGLE_ERRORS: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
    gexc.Aborted,
    gexc.Cancelled,
    gexc.Unknown,
    gexc.RetryError,
    TimeoutError,
    ConnectionError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_GOOGLE_ERRORS)


def unavailable(what: str, exc: BaseException) -> StorageUnavailableError:
    """The domain's "storage did not answer" for `exc` (its class named, never its message)."""
    if isinstance(exc, TimeoutError):
        return StorageUnavailableError(f"{what}: no answer in time")
    return StorageUnavailableError(f"{what} failed: {type(exc).__name__}")


async def bounded(call: Awaitable[T], limit_s: float, what: str) -> T:
    """Await `call` for at most `limit_s`; a transient error or the limit raises StorageUnavailableError.

    Other Google API errors (NotFound, AlreadyExists, FailedPrecondition ...) are answers, not
    outages: they pass through for the caller to interpret.
    """
    try:
        async with asyncio.timeout(limit_s):
            return await call
    except TRANSIENT_GOOGLE_ERRORS as exc:
        raise unavailable(what, exc) from exc
