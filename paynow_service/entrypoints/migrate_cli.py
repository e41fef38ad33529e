"""`paynow-service migrate orders [--apply] [--since DATE]`: `paynowOrders` for the app's orders.

Orders the app credited before cut-over have no `paynowOrders/{order_id}` document, so
their refunds and chargebacks (which name only the PayNow order id) find nothing to
reverse: they are parked, then dead-lettered. This command builds those documents from
the app's ledger entries (service/order_migration.py says which, and when an order is
left to a human as ambiguous). A dry run unless `--apply`; safe to run again: an order
already migrated is skipped, so a second `--apply` writes nothing.

Streaming with bounded memory: the scan holds one page of entries, and this command one
user's order entries; each user's orders are classified, printed and written when the
scan moves on to the next user. One order credited under two users is caught by the
existing document's uid and, within a run, by remembering the first uid of up to
1,000,000 order ids (SeenOrders); past that cap only the document check applies, so the
first user's copy of such an order may be written and the second reported ambiguous.

Output: on stdout one line per order written (`wrote`) or that would be (`would write`),
one per ambiguous order, and a summary; on stderr a progress line at most every 2 s.
Ids and amounts only. Exit 0 on success, 1 when Firestore fails, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from google.api_core import exceptions as gexc
from google.auth.exceptions import GoogleAuthError

from paynow_service import bootstrap
from paynow_service.adapters.app_ledger_scan import DEFAULT_PAGE_SIZE, AppLedgerScan, MigratedOrders
from paynow_service.config import Settings
from paynow_service.domain.errors import DomainError
from paynow_service.service.order_migration import (
    OrderCandidate,
    SeenOrders,
    Tally,
    UserEntries,
    Verdict,
    classify,
    parse_since,
    passes_since,
    read_order_entry,
)

PROGRAM = "paynow-service migrate orders"
EXIT_FIRESTORE = 1
EXIT_USAGE = 2
PROGRESS_EVERY_S = 2.0


class LedgerEntries(Protocol):
    """The app's ledger entries as (uid, entry id, document), one user's together."""

    def entries(self) -> AsyncIterator[tuple[str, str, dict[str, Any]]]: ...


class OrderDocuments(Protocol):
    """paynowOrders as they are (dry run), and one order migrated per transaction (--apply)."""

    async def existing(self, order_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]: ...

    async def migrate(self, candidate: OrderCandidate, *, other_uid: str = "") -> Verdict: ...


@dataclass
class Progress:
    """A progress line on stderr, at most every `every_s` seconds."""

    every_s: float = PROGRESS_EVERY_S
    clock: Callable[[], float] = time.monotonic
    _last: float = field(default=0.0)

    def __post_init__(self) -> None:
        self._last = self.clock()

    def tick(self, tally: Tally) -> None:
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            print(f"{PROGRAM}: {tally.progress()}", file=sys.stderr, flush=True)


@dataclass
class Migration:
    """One run: the scan's entries in, one user at a time, verdicts and lines out."""

    orders: OrderDocuments
    apply: bool
    since: datetime | None
    tally: Tally
    seen: SeenOrders = field(default_factory=SeenOrders)

    async def run(self, scan: LedgerEntries, progress: Progress) -> None:
        user: UserEntries | None = None
        async for uid, entry_id, data in scan.entries():
            if user is None or uid != user.uid:
                if user is not None:
                    await self.flush(user)
                user = UserEntries(uid)
                self.tally.users += 1
            self.tally.entries += 1
            item = read_order_entry(uid, entry_id, data)
            if item is None:
                self.tally.not_order_entries += 1
            else:
                user.add(item)
            progress.tick(self.tally)
        if user is not None:
            await self.flush(user)

    async def flush(self, user: UserEntries) -> None:
        """Classify, print and (with --apply) write one user's orders."""
        found: list[tuple[OrderCandidate, str]] = []
        for candidate in user.orders():
            # Remembered even before --since: a newer copy under another user is still a second uid.
            other_uid = self.seen.other_uid(candidate.order_id, candidate.uid)
            if passes_since(candidate, self.since):
                found.append((candidate, other_uid))
            else:
                self.tally.older += 1
        self.tally.found += len(found)
        if self.apply:
            for candidate, other_uid in found:
                verdict = classify(candidate, None, other_uid=other_uid)
                if verdict.action != "ambiguous":  # its own entries are fine: decide against the document
                    verdict = await self.orders.migrate(candidate, other_uid=other_uid)
                self._report(candidate, verdict)
            return
        existing = await self.orders.existing([c.order_id for c, _ in found])
        for candidate, other_uid in found:
            self._report(candidate, classify(candidate, existing[candidate.order_id], other_uid=other_uid))

    def _report(self, candidate: OrderCandidate, verdict: Verdict) -> None:
        self.tally.count(verdict)
        if verdict.action == "ambiguous":
            print(f"ambiguous {candidate.order_id}: {verdict.reason}")
        elif verdict.action == "write":
            verb = "wrote" if self.apply else "would write"
            parked = f" parked={verdict.parked}" if verdict.parked else ""
            print(
                f"{verb} {candidate.order_id} uid={candidate.uid} entries={len(candidate.credits)} "
                f"points={candidate.points}{parked}"
            )


async def migrate_orders(settings: Settings, *, apply: bool, since: datetime | None, page_size: int) -> Tally:
    tally = Tally(apply=apply)
    db = bootstrap.firestore_client(settings)
    try:
        scan = AppLedgerScan(db, page_size=page_size, timeout_s=settings.firestore_timeout_s)
        orders = MigratedOrders(db, timeout_s=settings.firestore_timeout_s)
        await Migration(orders, apply, since, tally).run(scan, Progress())
    finally:
        db.close()  # type: ignore[no-untyped-call]
    return tally


def _usage(message: str) -> int:
    print(f"{PROGRAM}: {message}", file=sys.stderr)
    return EXIT_USAGE


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as err:
        return _usage(str(err))
    page_size = getattr(args, "page_size", DEFAULT_PAGE_SIZE)
    if not 1 <= page_size <= 10_000:
        return _usage(f"--page-size {page_size}: expected 1 to 10000")
    try:
        tally = asyncio.run(migrate_orders(settings, apply=args.apply, since=since, page_size=page_size))
    except (DomainError, gexc.GoogleAPIError, GoogleAuthError) as err:
        # One line: what was written so far stays, and a re-run carries on from there.
        detail = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        print(f"{PROGRAM}: Firestore failed: {detail}", file=sys.stderr)
        return EXIT_FIRESTORE
    print(tally.summary(since))
    return 0
