"""`migrate orders` as a use case: the app's ledger entries in, one user at a time; each of that
user's orders classified (service/order_migration.py) and, with --apply, written in a
transaction of its own. Memory holds one user's order entries at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from paynow_service.service.order_migration import (
    OrderCandidate,
    SeenOrders,
    Tally,
    UserEntries,
    Verdict,
    classify,
    passes_since,
    read_order_entry,
)


class LedgerEntries(Protocol):
    """The app's ledger entries as (uid, entry id, document), one user's together."""

    def entries(self) -> AsyncIterator[tuple[str, str, dict[str, Any]]]: ...


class OrderDocuments(Protocol):
    """paynowOrders as they are (dry run), and one order migrated per transaction (--apply)."""

    async def existing(self, order_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]: ...

    async def migrate(self, candidate: OrderCandidate, *, other_uid: str = "") -> Verdict: ...


@dataclass
class Migration:
    """One run: the scan's entries in, one user at a time, verdicts and lines out."""

    orders: OrderDocuments
    apply: bool
    since: datetime | None
    tally: Tally
    say: Callable[[str], None]  # one line per order written (or that would be) and per ambiguous one
    seen: SeenOrders = field(default_factory=SeenOrders)

    async def run(self, scan: LedgerEntries, progress: Callable[[Tally], None]) -> None:
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
            progress(self.tally)
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
            self.say(f"ambiguous {candidate.order_id}: {verdict.reason}")
        elif verdict.action == "write":
            verb = "wrote" if self.apply else "would write"
            parked = f" parked={verdict.parked}" if verdict.parked else ""
            self.say(
                f"{verb} {candidate.order_id} uid={candidate.uid} entries={len(candidate.credits)} "
                f"points={candidate.points}{parked}"
            )
