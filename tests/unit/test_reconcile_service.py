"""`Reconciliation` (service/reconcile.py) on in-memory fakes: passes, fixes, checkpoints, resume, reports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from paynow_service.adapters.ledger_documents import entry_document
from paynow_service.domain import reconcile_findings as rf
from paynow_service.domain.reconcile_findings import Finding
from paynow_service.domain.reconcile_report import (
    MARKDOWN_MAX_BYTES,
    RunTally,
    render_markdown,
    summary_document,
    truncate_utf8,
)
from paynow_service.domain.reconcile_wallets import FixOutcome, UserDocs, audit_wallet, paid_fix_entry
from paynow_service.service.reconcile import Limits, Reconciliation

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def credit(entry_id: str, paid: int, event_id: str = "") -> dict[str, Any]:
    return {
        "amount": paid,
        "type": "credit",
        "channel": "paid",
        "action": "paynow.order",
        "pre": {"paid": 0, "promo": 0},
        "post": {"paid": paid, "promo": 0},
        "delta": {"paid": paid, "promo": 0},
        "metadata": {"eventId": event_id} if event_id else {},
        "createdAt": NOW - timedelta(minutes=1),
    }


class FakeStore:
    def __init__(self) -> None:
        self.wallets: dict[str, dict[str, Any]] = {}
        self.ledgers: dict[str, dict[str, dict[str, Any]]] = {}
        self.events_docs: dict[str, dict[str, Any]] = {}
        self.orders_docs: dict[str, dict[str, Any]] = {}
        self.runs: list[dict[str, Any]] = []
        self.fixes = 0
        self.page_size = 2

    async def users(self, after: str) -> AsyncIterator[UserDocs]:
        for uid in sorted(set(self.wallets) | set(self.ledgers)):
            if uid > after:
                yield UserDocs(uid, self.wallets.get(uid), list(self.ledgers.get(uid, {}).items()))

    async def _pages(
        self, docs: dict[str, dict[str, Any]], after: str
    ) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
        ids = [i for i in sorted(docs) if i > after]
        for start in range(0, len(ids), self.page_size):
            yield [(i, docs[i]) for i in ids[start : start + self.page_size]]

    def events(self, after: str) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
        return self._pages(self.events_docs, after)

    def orders(self, after: str) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
        return self._pages(self.orders_docs, after)

    async def events_by_id(self, event_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        return {i: self.events_docs.get(i) for i in event_ids}

    async def entries_present(self, refs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        return {(u, e) for u, e in refs if e in self.ledgers.get(u, {})}

    async def fix_wallet(self, uid: str, report_id: str, now: datetime) -> FixOutcome:
        audit = audit_wallet(uid, self.wallets.get(uid), list(self.ledgers.get(uid, {}).items()))
        entry = paid_fix_entry(audit, report_id, now)
        if entry is not None and entry.entry_id in self.ledgers.get(uid, {}):
            entry = None
        if entry is not None:
            self.ledgers.setdefault(uid, {})[entry.entry_id] = entry_document(entry)
        promo = bool(audit.promo_drift)
        if promo and audit.wallet is not None:
            self.wallets[uid]["promoBalance"] = audit.wallet.lots_sum
        self.fixes += int(entry is not None) + int(promo)
        return FixOutcome(paid_fixed=entry is not None, promo_fixed=promo)

    async def save_run(self, report_id: str, checkpoint: Mapping[str, Any]) -> None:
        self.runs.append(dict(checkpoint))


class Sink:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def write(self, finding: Finding) -> None:
        self.findings.append(finding)

    def flush(self) -> int:
        return len(self.findings)


class Letters:
    async def oldest(self) -> dict[str, Any]:
        return {"available": True, "count": 2, "oldestAgeS": 7200}


def world() -> FakeStore:
    store = FakeStore()
    store.wallets = {f"u{n}": {"paidBalance": 10, "promoBalance": 0, "promoLots": []} for n in range(5)}
    store.ledgers = {f"u{n}": {f"c{n}": credit(f"c{n}", 10, f"e{n}")} for n in range(5)}
    store.events_docs = {f"e{n}": {"status": "processed", "eventType": "E"} for n in range(4)}  # e4 missing
    store.wallets["u1"]["paidBalance"] = 25  # paid drift +15
    store.wallets["u3"]["promoBalance"] = 9  # promo drift
    store.orders_docs = {"o1": {"parked": {"e9": {"parkedAt": NOW - timedelta(hours=100)}}}}
    return store


def run(store: FakeStore, tally: RunTally, sink: Sink | None = None, dlq: Letters | None = None) -> Sink:
    sink = sink or Sink()
    limits = Limits(page_size=2, lease_s=30, park_max_hours=72, ttl_days=30)
    asyncio.run(Reconciliation(store, sink, dlq, limits, lambda: NOW, lambda _: None).run(tally))
    return sink


def test_a_run_finds_and_reports_without_writing() -> None:
    store = world()
    tally = RunTally("r1", fix=False, started_at=NOW)
    sink = run(store, tally, dlq=Letters())
    found = sorted((f.kind, f.uid or f.order_id or f.event_id) for f in sink.findings)
    assert found == [
        (rf.DLQ_BACKLOG, ""),
        (rf.ENTRY_WITHOUT_EVENT, "u4"),
        (rf.PAID_DRIFT, "u1"),
        (rf.PROMO_DRIFT, "u3"),
        (rf.STALE_PARKED, "o1"),
    ]
    assert store.fixes == 0
    assert tally.drift == 5
    assert tally.fixed == 0
    assert tally.unfixed_drift == 5
    assert (tally.users, tally.events, tally.orders, tally.phase) == (5, 4, 1, "done")
    # A checkpoint per page of users (2, 2, 1), per page of events and orders, and between passes.
    assert [(r["phase"], r["after"]) for r in store.runs][:4] == [
        ("users", "u1"),
        ("users", "u3"),
        ("users", "u4"),
        ("events", ""),
    ]


def test_fix_repairs_once_and_a_second_run_finds_nothing_to_fix() -> None:
    store = world()
    tally = RunTally("r1", fix=True, started_at=NOW)
    sink = run(store, tally)
    fixed = sorted((f.kind, f.uid, f.entry_id) for f in sink.findings if f.fixed)
    assert fixed == [(rf.PAID_DRIFT, "u1", "reconcile:r1:u1:paid"), (rf.PROMO_DRIFT, "u3", "")]
    assert store.fixes == 2
    assert tally.fixed == 2
    for report in ("r1", "r2"):
        again = RunTally(report, fix=True, started_at=NOW)
        sink = run(store, again)
        assert store.fixes == 2
        assert not {f.kind for f in sink.findings} & {rf.PAID_DRIFT, rf.PROMO_DRIFT}


def test_resume_carries_on_after_the_cursor_and_counts_each_user_once() -> None:
    store = world()
    run(store, RunTally("r1", fix=True, started_at=NOW))
    assert store.runs[0]["after"] == "u1"
    assert store.runs[0]["usersScanned"] == 2
    # As if the run had died after u0's checkpoint, once u1's fix was written but not checkpointed.
    killed = RunTally("r1", fix=True, started_at=NOW, after="u0", users=1).checkpoint()
    resumed = RunTally.restore(killed)
    assert resumed.resumed_from == "users:u0"
    sink = run(store, resumed)
    assert resumed.users == 5
    assert resumed.users_this_run == 4
    [paid] = [f for f in sink.findings if f.kind == rf.PAID_DRIFT]
    assert (paid.uid, paid.fixed, paid.entry_id) == ("u1", True, "reconcile:r1:u1:paid")
    assert store.fixes == 2
    assert resumed.fixed == 1


def test_the_summary_document_and_the_markdown() -> None:
    tally = RunTally("r1", fix=True, started_at=NOW, finished_at=NOW + timedelta(seconds=3))
    findings = [
        Finding(rf.PAID_DRIFT, uid="u1", detail="paidBalance 25 | 10", fixed=True),
        Finding(rf.STALE_PARKED, order_id="o1", event_id="e9", detail="parked 100.0 h"),
        Finding(rf.UNKNOWN_ENTRY, uid="u2", entry_id="x"),
    ]
    for finding in findings:
        tally.add(finding)
    markdown = render_markdown(tally, findings)
    assert "| `paid_drift` | 1 | fixable |" in markdown
    assert "paidBalance 25 \\| 10" in markdown
    assert "`--fix` writes one" in markdown
    assert "run `paynow-service sweep`" in markdown
    doc = summary_document(tally, findings, markdown)
    assert set(doc) == {
        "reportId",
        "startedAt",
        "finishedAt",
        "usersScanned",
        "eventsScanned",
        "ordersScanned",
        "findingsByKind",
        "findings",
        "fixedCount",
        "driftCount",
        "markdown",
    }
    assert (doc["driftCount"], doc["fixedCount"]) == (2, 1)
    assert doc["findings"][1] == {
        "kind": rf.STALE_PARKED,
        "uid": "",
        "eventId": "e9",
        "orderId": "o1",
        "detail": "parked 100.0 h",
        "fixed": False,
    }
    assert [Finding.from_map(f) for f in doc["findings"]] == [
        Finding(f.kind, f.uid, f.event_id, f.order_id, f.entry_id, f.detail, 0, f.fixed) for f in findings
    ]
    big = truncate_utf8("é" * MARKDOWN_MAX_BYTES, MARKDOWN_MAX_BYTES)
    assert len(big.encode("utf-8")) <= MARKDOWN_MAX_BYTES
    assert big.endswith("(truncated)\n")


def test_checkpoint_round_trip() -> None:
    tally = RunTally("r1", fix=False, started_at=NOW, phase="orders", after="o7", users=3, events=4, orders=5)
    tally.add(Finding(rf.PAID_DRIFT, uid="u1"))
    tally.findings_bytes = 120
    restored = RunTally.restore(tally.checkpoint())
    assert restored.checkpoint() == tally.checkpoint()
    assert restored.resumed_from == "orders:o7"
