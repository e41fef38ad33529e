"""The one way adapters run a Firestore transaction: per-key locks, retries, a deadline.

Firestore locks pessimistically, so concurrent transactions on one wallet mostly abort each
other: `run` first takes an in-process lock per key (a uid, an ordering key), in one global
order so that two callers never deadlock. Each attempt is a fresh transaction with a single
commit try; contention (Aborted, a lock timeout, a lost create race) is retried with jittered
exponential backoff until `max_attempts` or the deadline. Google exceptions leave as domain
errors (StorageUnavailableError, ContentionError), so nothing above the adapters sees one.
An attempt is a `WireTransaction` (firestore_wire_transaction.py): the client's transaction
with its calls made as raw gRPC messages, which halves the worker's CPU per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud.firestore import AsyncClient
from opentelemetry.trace import SpanKind

from paynow_service import tracing
from paynow_service.adapters.firestore_wire import FirestoreWire
from paynow_service.adapters.firestore_wire_transaction import WireTransaction
from paynow_service.adapters.google_errors import TRANSIENT_GOOGLE_ERRORS
from paynow_service.domain.errors import ContentionError, DomainError, StorageUnavailableError

T = TypeVar("T")
Work = Callable[[WireTransaction], Awaitable[T]]
# Every transient error but Aborted, which in a transaction is contention: retried here, not reported.
UNAVAILABLE = tuple(e for e in TRANSIENT_GOOGLE_ERRORS if e is not gexc.Aborted)
BACKOFF_BASE_S = 0.02
BACKOFF_CAP_S = 1.0
ROLLBACK_GRACE_S = 0.5


class FirestoreTransactions:
    """Runs transactions for every adapter that shares it (and so shares its locks)."""

    def __init__(
        self,
        db: AsyncClient,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 8,
        total_timeout_s: float | None = None,
    ) -> None:
        self._db = db
        self._wire: FirestoreWire | None = None  # made on first use (the client's channel is lazy too)
        self._timeout_s = timeout_s  # one attempt
        self._max_attempts = max_attempts
        self._total_s = total_timeout_s if total_timeout_s is not None else 3 * timeout_s
        # One lock per key while someone holds or awaits it; dropped when unused.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def run(self, lock_keys: Collection[str], fn: Work[T], *, begin_with_first_read: bool = False) -> T:
        """Run `fn` in a fresh transaction per attempt, holding the keys' locks, retrying contention.

        `fn` does all its reads before its first write and may run more than once.
        `begin_with_first_read`: `fn`'s first read is `tx.read_all`, which begins the transaction
        (one round trip fewer: firestore_wire_transaction.py).
        """
        deadline = time.monotonic() + self._total_s
        async with contextlib.AsyncExitStack() as stack:
            for key in sorted(set(lock_keys)):
                lock = self._locks.get(key)
                if lock is None:
                    lock = self._locks[key] = asyncio.Lock()
                try:
                    async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                        await stack.enter_async_context(lock)
                except TimeoutError:
                    raise ContentionError(f"waited {self._total_s:.0f} s for the wallet lock") from None
            return await self._attempts(fn, deadline, begin_with_first_read)

    async def _attempts(self, fn: Work[T], deadline: float, begin_with_first_read: bool) -> T:
        last: BaseException | None = None
        for attempt in range(self._max_attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                limit_s = min(self._timeout_s, remaining)
                return await self._traced_attempt(fn, limit_s, attempt, begin_with_first_read)
            except DomainError:
                raise
            except Exception as exc:
                if isinstance(exc, UNAVAILABLE):
                    raise unavailable(exc) from exc
                if not is_contention(exc):
                    raise  # a bug, not weather: let it surface as it is
                last = exc
            pause = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))  # noqa: S311
            await asyncio.sleep(min(pause, max(deadline - time.monotonic(), 0)))
        raise ContentionError(f"transaction still contended after {self._max_attempts} attempts") from last

    async def _traced_attempt(
        self, fn: Work[T], limit_s: float, attempt: int, begin_with_first_read: bool
    ) -> T:
        """`_attempt` in a span of its own: the attempt's number, and whether it committed."""
        with tracing.span("firestore.transaction.attempt", kind=SpanKind.CLIENT) as span:
            if span.is_recording():
                span.set_attributes(
                    {"db.system": "firestore", "paynow.attempt": attempt + 1, "paynow.retry_count": attempt}
                )
            try:
                result = await self._attempt(fn, limit_s, begin_with_first_read)
            except Exception as exc:
                if span.is_recording():
                    span.set_attribute(tracing.OUTCOME, "contention" if is_contention(exc) else "failed")
                raise
            span.set_attribute(tracing.OUTCOME, "committed")
            return result

    async def _attempt(self, fn: Work[T], limit_s: float, begin_with_first_read: bool) -> T:
        # A single commit try per transaction: the retry policy is ours.
        if self._wire is None:
            self._wire = FirestoreWire(self._db)
        tx = WireTransaction(self._wire, limit_s, begin_with_first_read=begin_with_first_read)
        return await within(tx.run(fn), limit_s)


async def within(attempt: Awaitable[T], limit_s: float) -> T:
    """Await one transaction attempt for at most `limit_s`.

    Every call of an attempt has the attempt's deadline, but a channel that hangs while
    connecting ignores deadlines, and after a cancellation the attempt awaits its rollback.
    So the attempt runs as a task: cancelled at the limit, and cancelled again if its
    rollback outlives a short grace.
    """
    task = asyncio.ensure_future(attempt)
    try:
        done, _ = await asyncio.wait({task}, timeout=limit_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=ROLLBACK_GRACE_S)
    if not done:
        task.cancel()
    task.add_done_callback(_consume)
    raise StorageUnavailableError(f"Firestore did not answer within {limit_s:g} s")


def _consume(task: asyncio.Future[Any]) -> None:
    # Retrieve the abandoned attempt's outcome so asyncio does not log it as lost.
    if not task.cancelled():
        task.exception()


def is_contention(exc: BaseException) -> bool:
    """Aborted, a lock timeout, a commit that gave up, or a create that lost a race: worth another attempt."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if isinstance(current, gexc.Aborted | gexc.AlreadyExists) or "Transaction lock timeout" in text:
            return True
        if isinstance(current, ValueError) and text.startswith("Failed to commit transaction"):
            return True
        current = current.__cause__ or current.__context__
    return False


def unavailable(exc: BaseException) -> StorageUnavailableError:
    return StorageUnavailableError(f"Firestore unavailable: {type(exc).__name__}")
