"""`reconcile` as a use case: every wallet, event and order audited in passes, findings streamed out.

Passes, in order, each resumable from the last key it finished (`RunTally.phase`/`after`):
1. users: wallets and ledgers arrive grouped by uid (one user's documents in memory at a
   time), audited by domain/reconcile_wallets.py; with `fix`, paid and promo drift are
   repaired in a transaction of their own that audits again what it reads; entries of ours
   are checked against the events they name, a batch of users at a time;
2. events: every `webhookEvents` record (domain/reconcile_records.py), a page at a time;
3. orders: every `paynowOrders` document against its entries and what is parked on it;
4. the dead-letter queue's size and oldest age.
After every batch the findings file is flushed and the cursor with the counters saved, so a
killed run resumes where it was and counts nothing twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from paynow_service.domain import reconcile_findings as rf
from paynow_service.domain.reconcile_findings import Finding
from paynow_service.domain.reconcile_records import (
    audit_event,
    audit_order,
    entry_event_finding,
    event_entry_ids,
    order_entry_ids,
)
from paynow_service.domain.reconcile_report import RunTally
from paynow_service.domain.reconcile_wallets import (
    FixOutcome,
    UserDocs,
    WalletAudit,
    audit_wallet,
    paid_fix_entry_id,
)

Docs = Sequence[tuple[str, dict[str, Any]]]


class ReconcileStore(Protocol):
    def users(self, after: str) -> AsyncIterator[UserDocs]: ...

    def events(self, after: str) -> AsyncIterator[Docs]: ...

    def orders(self, after: str) -> AsyncIterator[Docs]: ...

    async def events_by_id(self, event_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]: ...

    async def entries_present(self, refs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]: ...

    async def fix_wallet(self, uid: str, report_id: str, now: datetime) -> FixOutcome: ...

    async def save_run(self, report_id: str, checkpoint: Mapping[str, Any]) -> None: ...


class FindingsSink(Protocol):
    def write(self, finding: Finding) -> None: ...

    def flush(self) -> int:
        """Make what was written durable; the file's length in bytes."""
        ...


class DeadLetterAge(Protocol):
    async def oldest(self) -> dict[str, Any]:
        """{available, count, oldestAgeS} (or {available: False, error})."""
        ...


@dataclass(frozen=True)
class Limits:
    page_size: int
    lease_s: int
    park_max_hours: int
    ttl_days: int


@dataclass
class Reconciliation:
    store: ReconcileStore
    sink: FindingsSink
    dead_letters: DeadLetterAge | None
    limits: Limits
    clock: Callable[[], datetime]
    progress: Callable[[RunTally], None]

    async def run(self, tally: RunTally) -> RunTally:
        if tally.phase == "users":
            await self._users(tally)
            await self._next_phase(tally, "events")
        if tally.phase == "events":
            await self._events(tally)
            await self._next_phase(tally, "orders")
        if tally.phase == "orders":
            await self._orders(tally)
            await self._next_phase(tally, "dlq")
        if tally.phase == "dlq":
            await self._dlq(tally)
        tally.phase, tally.after = "done", ""
        tally.finished_at = self.clock()
        return tally

    async def _next_phase(self, tally: RunTally, phase: str) -> None:
        tally.phase, tally.after = phase, ""
        await self._checkpoint(tally)

    async def _checkpoint(self, tally: RunTally) -> None:
        tally.findings_bytes = self.sink.flush()
        await self.store.save_run(tally.report_id, tally.checkpoint())
        self.progress(tally)

    def _add(self, tally: RunTally, finding: Finding) -> None:
        self.sink.write(finding)
        tally.add(finding)

    async def _users(self, tally: RunTally) -> None:
        batch: list[WalletAudit] = []
        async for user in self.store.users(tally.after):
            audit = audit_wallet(user.uid, user.wallet, user.entries)
            tally.users += 1
            tally.users_this_run += 1
            tally.entries += audit.entries
            batch.append(audit)
            if len(batch) >= self.limits.page_size:
                await self._users_batch(tally, batch)
                batch = []
            else:
                self.progress(tally)
        if batch:
            await self._users_batch(tally, batch)

    async def _users_batch(self, tally: RunTally, batch: list[WalletAudit]) -> None:
        now = self.clock()
        # Records expire TTL days after they were received; an entry may come up to PARK_MAX_HOURS
        # later (a parked refund), so only younger entries must still find their event.
        kept_since = now - timedelta(days=self.limits.ttl_days, hours=-(self.limits.park_max_hours + 24))
        refs = [(a.uid, ref) for a in batch for ref in a.event_refs if ref.created_at >= kept_since]
        events = await self.store.events_by_id(sorted({ref.event_id for _, ref in refs}))
        for audit in batch:
            for finding in await self._fixed(tally, audit, now):
                self._add(tally, finding)
        for uid, ref in refs:
            event = events.get(ref.event_id)
            found = entry_event_finding(
                uid, ref.entry_id, ref.event_id, ref.created_at, event, kept_since=kept_since
            )
            if found is not None:
                self._add(tally, found)
        tally.after = batch[-1].uid
        await self._checkpoint(tally)

    async def _fixed(self, tally: RunTally, audit: WalletAudit, now: datetime) -> list[Finding]:
        """The user's findings, the fixable ones repaired with `fix` (each marked `fixed`)."""
        findings = list(audit.findings)
        fix_id = paid_fix_entry_id(tally.report_id, audit.uid)
        if tally.resumed_from and fix_id in audit.has_fix:
            # Fixed by this report before the run was stopped: the ledger explains the wallet now.
            detail = "fixed by this report before it was resumed"
            findings.append(Finding(rf.PAID_DRIFT, uid=audit.uid, entry_id=fix_id, detail=detail, fixed=True))
        if not tally.fix or not any(f.fixable for f in findings if not f.fixed):
            return findings
        outcome = await self.store.fix_wallet(audit.uid, tally.report_id, now)
        repaired = {rf.PAID_DRIFT: outcome.paid_fixed, rf.PROMO_DRIFT: outcome.promo_fixed}
        return [
            replace(f, fixed=True, entry_id=fix_id if f.kind == rf.PAID_DRIFT else f.entry_id)
            if repaired.get(f.kind)
            else f
            for f in findings
        ]

    async def _events(self, tally: RunTally) -> None:
        async for page in self.store.events(tally.after):
            now = self.clock()
            for event_id, data, seen in await self._with_entries(page, event_entry_ids):
                for finding in audit_event(event_id, data, seen, now=now, lease_s=self.limits.lease_s):
                    self._add(tally, finding)
                tally.events += 1
            tally.after = page[-1][0]
            await self._checkpoint(tally)

    async def _orders(self, tally: RunTally) -> None:
        async for page in self.store.orders(tally.after):
            now = self.clock()
            limit = self.limits.park_max_hours
            for order_id, data, seen in await self._with_entries(page, order_entry_ids):
                for finding in audit_order(order_id, data, seen, now=now, park_max_hours=limit):
                    self._add(tally, finding)
                tally.orders += 1
            tally.after = page[-1][0]
            await self._checkpoint(tally)

    async def _with_entries(
        self,
        page: Sequence[tuple[str, dict[str, Any]]],
        entry_ids: Callable[[Mapping[str, Any]], tuple[str, list[str]]],
    ) -> list[tuple[str, dict[str, Any], dict[str, bool]]]:
        """Each document of the page with, for each entry id it names, whether that ledger entry exists
        (one batched read for the whole page)."""
        wanted = {key: entry_ids(data) for key, data in page}
        refs = [(uid, entry_id) for uid, ids in wanted.values() for entry_id in ids]
        present = await self.store.entries_present(refs)
        found = []
        for key, data in page:
            uid, ids = wanted[key]
            found.append((key, data, {entry_id: (uid, entry_id) in present for entry_id in ids}))
        return found

    async def _dlq(self, tally: RunTally) -> None:
        if self.dead_letters is None:
            tally.dlq = {"available": False, "error": "skipped (--no-dlq)"}
            return
        tally.dlq = await self.dead_letters.oldest()
        count = int(tally.dlq.get("count") or 0)
        if tally.dlq.get("available") and count:
            hours = int(tally.dlq.get("oldestAgeS") or 0) / 3600
            detail = f"{count} letter(s), the oldest {hours:.1f} h old"
            self._add(tally, Finding(rf.DLQ_BACKLOG, detail=detail))
