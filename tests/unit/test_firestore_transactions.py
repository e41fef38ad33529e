"""FirestoreTransactions without Firestore: per-key locks, the retry policy, the deadline.

Each test replaces the runner's one attempt (`_attempt`: a fresh transaction, one commit
try) with a fake that runs the work with no transaction; the emulator tests
(tests/integration/test_firestore_ledger.py) run real ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from paynow_service.adapters.firestore_transactions import FirestoreTransactions, is_contention, within
from paynow_service.domain.errors import ContentionError, InvalidEventError, StorageUnavailableError


def runner(*, bounded: bool = True, **limits: Any) -> FirestoreTransactions:
    """A runner whose attempt runs the work with no transaction (`bounded`: within its time limit)."""
    transactions = FirestoreTransactions(object(), **limits)  # type: ignore[arg-type]

    async def attempt(
        fn: Callable[[Any], Awaitable[Any]], limit_s: float, begin_with_first_read: bool
    ) -> Any:
        return await (within(fn(None), limit_s) if bounded else fn(None))

    transactions._attempt = attempt  # type: ignore[method-assign]
    return transactions


def failing(*errors: BaseException) -> tuple[Callable[[Any], Awaitable[str]], list[int]]:
    """Work that raises `errors` in turn, then returns "done"; and its call count."""
    calls = [0]

    async def work(tx: Any) -> str:
        calls[0] += 1
        if calls[0] <= len(errors):
            raise errors[calls[0] - 1]
        return "done"

    return work, calls


async def test_contention_is_retried_until_an_attempt_commits() -> None:
    work, calls = failing(gexc.Aborted("contended"), ValueError("Failed to commit transaction in 1 attempts"))
    assert await runner().run({"u1"}, work) == "done"
    assert calls == [3]


async def test_contention_that_never_ends_is_a_contention_error() -> None:
    work, calls = failing(*[gexc.Aborted("Transaction lock timeout")] * 10)
    with pytest.raises(ContentionError, match="3 attempts"):
        await runner(max_attempts=3).run({"u1"}, work)
    assert calls == [3]


@pytest.mark.parametrize(
    "error", [gexc.ServiceUnavailable("down"), gexc.DeadlineExceeded("slow"), TimeoutError()]
)
async def test_an_outage_is_not_retried_here_but_reported(error: BaseException) -> None:
    work, calls = failing(error)
    with pytest.raises(StorageUnavailableError):
        await runner().run({"u1"}, work)
    assert calls == [1]


async def test_domain_errors_and_bugs_leave_as_they_are() -> None:
    work, calls = failing(InvalidEventError("no"))
    with pytest.raises(InvalidEventError):
        await runner().run({"u1"}, work)
    work, calls = failing(KeyError("bug"))
    with pytest.raises(KeyError):
        await runner().run((), work)
    assert calls == [1]


async def test_one_key_runs_one_transaction_at_a_time_other_keys_in_parallel() -> None:
    transactions = runner()
    running: dict[str, int] = {}
    peak: dict[str, int] = {}

    def work_on(key: str) -> Callable[[Any], Awaitable[None]]:
        async def work(tx: Any) -> None:
            running[key] = running.get(key, 0) + 1
            peak[key] = max(peak.get(key, 0), running[key])
            await asyncio.sleep(0.01)
            running[key] -= 1

        return work

    await asyncio.gather(*(transactions.run({"u1"}, work_on("u1")) for _ in range(5)))
    assert peak["u1"] == 1
    both = asyncio.Event()
    arrived = 0

    async def meet(tx: Any) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 1)  # only returns if the other key's work runs meanwhile

    await asyncio.gather(transactions.run({"u1"}, meet), transactions.run({"u2"}, meet))


async def test_keys_are_locked_in_one_order_so_batches_never_deadlock() -> None:
    transactions = runner()

    async def work(tx: Any) -> None:
        await asyncio.sleep(0.005)

    jobs = [transactions.run(["a", "b"], work), transactions.run(["b", "a"], work)] * 5
    await asyncio.wait_for(asyncio.gather(*jobs), 2)


async def test_waiting_for_a_lock_past_the_deadline_is_contention() -> None:
    transactions = runner(bounded=False, timeout_s=0.05, total_timeout_s=0.1)
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold(tx: Any) -> None:
        holding.set()
        await release.wait()

    async def quick(tx: Any) -> None:
        return None

    holder = asyncio.ensure_future(transactions.run({"u1"}, hold))
    await holding.wait()
    with pytest.raises(ContentionError, match="wallet lock"):
        await transactions.run({"u1"}, quick)
    release.set()
    await holder
    await transactions.run({"u1"}, quick)  # the lock is free again


async def test_an_attempt_that_hangs_is_abandoned_at_its_limit() -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(StorageUnavailableError, match=r"0\.05"):
        await within(asyncio.sleep(10), 0.05)
    assert asyncio.get_running_loop().time() - started < 1


def test_what_counts_as_contention() -> None:
    chained = ValueError("wrapped")
    chained.__cause__ = gexc.Aborted("aborted")
    assert is_contention(chained)
    assert is_contention(gexc.AlreadyExists("lost a create race"))
    assert is_contention(RuntimeError("Transaction lock timeout"))
    assert not is_contention(ValueError("something else"))
    assert not is_contention(gexc.PermissionDenied("no"))
