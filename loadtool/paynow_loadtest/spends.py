"""The app's spends in the load tool's traffic (planned with it: `traffic.plan_spends`): users
spending their points while their credits, duplicates, refunds and renewals are still arriving.

- `SpendTurn` runs one turn's spends from the tool's process with the app's own code
  (`app_double`, attempts=10, 1 s backoff) on an AsyncClient of its own; a spend whose origin
  was never accepted is skipped, as the app's user had nothing.
- `SpendBook` records each outcome in the run's `Expectation`: spent, or refused
  (INSUFFICIENT_POINTS); any other outcome (contention exhausted, timeout, an unexpected
  error) is unknown until `resolve` re-reads `users/{uid}/ledger/{action_id}` after the
  run. INCONSISTENT_PROMO_BALANCE is counted apart: it means a wallet was broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from typing import Any

from google.cloud import firestore

from paynow_loadtest.app_double import INCONSISTENT_PROMO_BALANCE, INSUFFICIENT_POINTS, AppDouble, AppError
from paynow_loadtest.expectation import Expectation
from paynow_loadtest.results import SPEND_OUTCOMES, SpendSample, SpendStats
from paynow_loadtest.traffic import Spend

APP_ATTEMPTS = 10  # the app's 5 are not enough on the emulator under contention (app_double's author)
APP_BACKOFF_S = 1.0  # firebase-admin's initial backoff
SPEND_TIMEOUT_S = 30.0
SPEND_ACTION = "load.unlock"
Spender = Callable[[Spend, float], Coroutine[Any, Any, None]]


def spend_outcome(error: BaseException | None) -> str:
    """spent, refused (not enough points: nothing written), inconsistent, or unknown (re-read it)."""
    if error is None:
        return "spent"
    if isinstance(error, AppError) and error.code == INSUFFICIENT_POINTS:
        return "refused"
    if isinstance(error, AppError) and error.code == INCONSISTENT_PROMO_BALANCE:
        return "inconsistent"
    return "unknown"


class SpendBook:
    """Every spend of the run and what it did, recorded in the expectation once known."""

    def __init__(
        self, expectation: Expectation, project: str, *, attempts: int = APP_ATTEMPTS,
        backoff_initial_s: float = APP_BACKOFF_S, timeout_s: float = SPEND_TIMEOUT_S,
    ) -> None:  # fmt: skip
        self.expectation, self.project = expectation, project
        self.attempts, self.backoff_initial_s, self.timeout_s = attempts, backoff_initial_s, timeout_s
        self.outcomes: Counter[str] = Counter()
        self.unresolved: list[Spend] = []
        self._seen: set[str] = set()
        self.inconsistent: list[str] = []  # uid/action id of each INCONSISTENT_PROMO_BALANCE
        self.reread_written = self.reread_unwritten = 0
        self.skipped = self.retries = 0
        self.retried_by: Counter[str] = Counter()

    def record(self, spend: Spend, outcome: str) -> None:
        if spend.action_id in self._seen or spend.action_id in self.expectation.spends:
            raise AssertionError(f"spend {spend.action_id} recorded twice")
        self._seen.add(spend.action_id)
        self.outcomes[outcome] += 1
        if outcome in ("spent", "refused"):
            self.expectation.spend(spend.action_id, spend.uid, spend.cost, spent=outcome == "spent")
            return
        if outcome == "inconsistent":
            self.inconsistent.append(f"{spend.uid}/{spend.action_id}")
        self.unresolved.append(spend)

    def resolve_with(self, written: Iterable[str]) -> None:
        """Record the unresolved spends: spent when their ledger entry exists (`written`: action ids)."""
        found = set(written)
        for spend in self.unresolved:
            spent = spend.action_id in found
            self.expectation.spend(spend.action_id, spend.uid, spend.cost, spent=spent)
            self.reread_written += spent
            self.reread_unwritten += not spent
        self.unresolved = []

    def resolve(self) -> None:
        """Re-read the ledger entry of every spend whose outcome the app's code did not tell."""
        if not self.unresolved:
            return
        client = firestore.Client(project=self.project)
        try:
            refs = [client.document("users", s.uid, "ledger", s.action_id) for s in self.unresolved]
            written = [snap.id for snap in client.get_all(refs, timeout=30) if snap.exists]
        finally:
            client.close()  # type: ignore[no-untyped-call]
        self.resolve_with(written)

    def summary(self) -> dict[str, Any]:
        return {
            "attempted": sum(self.outcomes.values()),
            **{name: self.outcomes[name] for name in SPEND_OUTCOMES},
            "unknown_reread_written": self.reread_written,
            "unknown_reread_unwritten": self.reread_unwritten,
            "skipped": self.skipped,
            "retries": self.retries,
            "retried_by": dict(self.retried_by),
            "inconsistent_examples": self.inconsistent[:5],
        }


class SpendTurn:
    """One turn's spends on this turn's event loop: an AsyncClient and the app's code of their own."""

    def __init__(self, book: SpendBook, stats: SpendStats, accepted: Callable[[str], bool]) -> None:
        self.book, self.stats, self.accepted = book, stats, accepted
        self.db: firestore.AsyncClient | None = None
        self.app: AppDouble | None = None

    def _retried(self, error: BaseException) -> None:
        self.stats.retries += 1
        self.book.retries += 1
        self.book.retried_by[type(error).__name__] += 1

    async def __aenter__(self) -> SpendTurn:
        self.db = firestore.AsyncClient(project=self.book.project)
        self.app = AppDouble(
            self.db, attempts=self.book.attempts, backoff_initial_s=self.book.backoff_initial_s,
            on_retry=self._retried,
        )  # fmt: skip
        # Its channel opened outside the measurement, as the sender's connections and the floor's are.
        with contextlib.suppress(Exception):  # a failure shows in the spends themselves
            await self.db.document("users", "load-warm-up").get(timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.db is not None:
            self.db.close()  # type: ignore[no-untyped-call]

    async def one(self, spend: Spend, start: float) -> None:
        assert self.app is not None, "use SpendTurn as an async context manager"
        if not self.accepted(spend.needs):
            self.stats.skipped += 1
            self.book.skipped += 1
            return
        began = time.perf_counter()
        error: BaseException | None = None
        try:
            async with asyncio.timeout(self.book.timeout_s):
                await self.app.spend(spend.uid, spend.cost, SPEND_ACTION, spend.action_id)
        except Exception as err:  # every outcome is recorded, none stops the run
            error = err
        ms = (time.perf_counter() - began) * 1000
        outcome = spend_outcome(error)
        detail = "" if error is None else (getattr(error, "code", "") or type(error).__name__)
        self.stats.samples.append(SpendSample(began - start, ms, outcome, detail))
        self.book.record(spend, outcome)


@contextlib.asynccontextmanager
async def spend_turn(
    book: SpendBook | None, spends: Sequence[Spend], stats: SpendStats, accepted: Callable[[str], bool]
) -> AsyncIterator[Spender | None]:
    """The turn's spender (`SpendTurn.one`), or None when the turn has no spends."""
    if book is None or not spends:
        yield None
        return
    async with SpendTurn(book, stats, accepted) as turn:
        yield turn.one
