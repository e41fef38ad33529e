"""The app's spends in the load tool's traffic (`bench/load.py`): users spending their points
while their credits, duplicates, refunds and renewals are still arriving.

- `plan_spends` plans them with the deliveries, on the same open-loop schedule: a share of
  the deliveries (`--spend-share`), each spend at the midpoint after a delivery, on a user
  whose order or subscription (the spend's `needs`) was sent at least `delay_s` before,
  preferring recent ones; a random cost, mostly small, sometimes more than a wallet holds;
  a unique action id. Deterministic for a seed.
- `SpendTurn` runs one turn's spends from the tool's process with the app's own code
  (`tests/support/app_double.py`, attempts=10, 1 s backoff) on an AsyncClient of its own;
  a spend whose origin was never accepted is skipped, as the app's user had nothing.
- `SpendBook` records each outcome in the run's `Expectation`: spent, or refused
  (INSUFFICIENT_POINTS); any other outcome (contention exhausted, timeout, an unexpected
  error) is unknown until `resolve` re-reads `users/{uid}/ledger/{action_id}` after the
  run. INCONSISTENT_PROMO_BALANCE is counted apart: it means a wallet was broken.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.cloud import firestore

from bench.benchlib import percentile
from tests.support.app_double import INCONSISTENT_PROMO_BALANCE, INSUFFICIENT_POINTS, AppDouble, AppError
from tests.support.invariants import Expectation, PlannedEvent

CREDITING = ("order", "burst", "subscription", "renewal")  # delivery labels that credit a wallet
SMALL_COSTS = (10, 25, 50, 100, 150, 250, 400)
LARGE_COSTS = (1500, 3000, 6000)  # more than most wallets hold early on: refused, mostly
LARGE_SHARE = 0.1
APP_ATTEMPTS = 10  # the app's 5 are not enough on the emulator under contention (app_double's author)
APP_BACKOFF_S = 1.0  # firebase-admin's initial backoff
SPEND_TIMEOUT_S = 30.0
SPEND_ACTION = "load.unlock"
OUTCOMES = ("spent", "refused", "unknown", "inconsistent")


class PlannedDelivery(Protocol):
    """What `plan_spends` reads of load.py's `Delivery`."""

    due: float
    planned: PlannedEvent
    duplicate: bool
    label: str


@dataclass(frozen=True)
class Spend:
    due: float  # seconds after the phase starts, as a delivery's
    uid: str
    cost: int
    action_id: str
    needs: str  # the order or subscription event that credited the user: it must have been accepted
    label: str = "spend"


def plan_spends(
    deliveries: Sequence[PlannedDelivery], *, share: float, rng: random.Random, delay_s: float = 1.0,
    recent_s: float = 10.0,
) -> list[Spend]:  # fmt: skip
    """`floor(share * len(deliveries))` spends (fewer only when no user had credit early enough), one at
    most after each delivery, at the midpoint to the next one (spread between the deliveries, not on
    them); by due time."""
    if share <= 0 or not deliveries:
        return []
    origins = [
        d for d in deliveries
        if not d.duplicate and d.label in CREDITING and d.planned.expected.uid
        and sum(d.planned.expected.entries.values()) > 0
    ]  # fmt: skip
    origin_dues = [d.due for d in origins]
    spends: list[Spend] = []
    for i, delivery in enumerate(deliveries):
        if len(spends) >= math.floor((i + 1) * share + 1e-9):
            continue
        if i + 1 < len(deliveries):
            at = (delivery.due + deliveries[i + 1].due) / 2
        else:  # the last one: half the last gap after it
            at = delivery.due + (delivery.due - deliveries[i - 1].due) / 2 if i else delivery.due
        ready = bisect.bisect_right(origin_dues, at - delay_s)
        if not ready:
            continue  # nobody has bought anything yet: the spend waits for the next delivery
        recent = bisect.bisect_left(origin_dues, at - recent_s, 0, ready)
        origin = origins[rng.randrange(recent if recent < ready else 0, ready)]
        costs = LARGE_COSTS if rng.random() < LARGE_SHARE else SMALL_COSTS
        spends.append(
            Spend(
                at, origin.planned.expected.uid, rng.choice(costs), f"load-spend-{rng.getrandbits(64):016x}",
                origin.planned.event_id,
            )
        )  # fmt: skip
    return spends


def spend_outcome(error: BaseException | None) -> str:
    """spent, refused (not enough points: nothing written), inconsistent, or unknown (re-read it)."""
    if error is None:
        return "spent"
    if isinstance(error, AppError) and error.code == INSUFFICIENT_POINTS:
        return "refused"
    if isinstance(error, AppError) and error.code == INCONSISTENT_PROMO_BALANCE:
        return "inconsistent"
    return "unknown"


@dataclass
class SpendSample:
    t: float  # when the spend started, seconds after the phase started
    ms: float
    outcome: str
    detail: str = ""  # the error's class when not spent


@dataclass
class SpendStats:
    """One phase's spends: outcomes and latency as the tool saw them (unknowns not yet re-read)."""

    samples: list[SpendSample] = field(default_factory=list)
    skipped: int = 0  # the origin was never accepted
    retries: int = 0  # contention retries (AppDouble's on_retry)

    def absorb(self, part: SpendStats, offset_s: float) -> None:
        for sample in part.samples:
            sample.t += offset_s
        self.samples += part.samples
        self.skipped += part.skipped
        self.retries += part.retries

    def summary(self) -> dict[str, Any]:
        ms = [s.ms for s in self.samples]
        outcomes = Counter(s.outcome for s in self.samples)
        return {
            "attempted": len(self.samples),
            **{name: outcomes[name] for name in OUTCOMES},
            "skipped": self.skipped,
            "retries": self.retries,
            "p50_ms": round(percentile(ms, 50), 2),
            "p95_ms": round(percentile(ms, 95), 2),
            "p99_ms": round(percentile(ms, 99), 2),
            "max_ms": round(max(ms), 2) if ms else float("nan"),
            "errors": dict(
                Counter(s.detail for s in self.samples if s.outcome in ("unknown", "inconsistent"))
            ),
        }


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
            client.close()
        self.resolve_with(written)

    def summary(self) -> dict[str, Any]:
        return {
            "attempted": sum(self.outcomes.values()),
            **{name: self.outcomes[name] for name in OUTCOMES},
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
