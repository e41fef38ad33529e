"""The invariants a run must leave, checked from Firestore and the DLQ (`state`) against what its
events and the app's spends must do (`expectation`):

every accepted event processed exactly once with exactly its ledger entries; each processed
record listing exactly the entries written; each wallet sound in the app's model (`wallet_audit`)
and equal to the events' credits less the app's spends and the promo they dropped as expired;
each of the app's spends that succeeded written, no other; no entry without its processed event
or spend; the DLQ holding exactly the bad events, with their reason, and nothing else.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from paynow_loadtest.expectation import Expectation, Expected
from paynow_loadtest.state import DeadLetter, State
from paynow_loadtest.wallet_audit import audit_wallet

_EXAMPLES = 5
_CHECKS = (
    ("event_status", "every accepted event reached its final status exactly as expected"),
    ("ledger_per_event", "each event wrote exactly its ledger entries (ids and amounts)"),
    ("records_match_ledger", "each processed record lists exactly the entries written"),
    ("wallet_in_app_model", "each wallet, in the app's model: promoBalance = its lots, no negative lot, "
     "entries' post - pre add up to it per kind in one serial chain, every entry moves what it says"),
    ("wallet_equals_expected",
     "each wallet = the events' credits - the app's spends - the promo they dropped as expired"),
    ("spends_exact", "each of the app's spends that succeeded wrote its debit, no other did"),
    ("no_orphan_entries", "every ledger entry belongs to a processed event or spend of this run"),
    ("dlq_exact", "every bad event is in the DLQ with its reason, and nothing else is"),
)  # fmt: skip


@dataclass
class Check:
    name: str
    description: str
    failures: list[str] = field(default_factory=list)
    count: int = 0  # items checked

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, detail: str) -> None:
        self.failures.append(detail)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.count,
            "failures": len(self.failures),
            "examples": self.failures[:_EXAMPLES],
            "description": self.description,
        }


@dataclass
class InvariantReport:
    checks: dict[str, Check]
    events: int
    accepted: int
    not_accepted: int
    processed_once: int
    lost: list[str]
    doubled: list[str]
    dlq_expected: int
    dlq_received: int
    dlq_duplicates: int
    spends: int = 0  # the app's spends that succeeded
    spends_refused: int = 0  # refused (not enough points): nothing written
    points_spent: int = 0
    points_expired: int = 0  # promo the app's spends dropped as expired

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "events": self.events, "accepted": self.accepted,
            "not_accepted": self.not_accepted, "processed_once": self.processed_once,
            "lost": len(self.lost), "lost_examples": self.lost[:_EXAMPLES],
            "doubled": len(self.doubled), "doubled_examples": self.doubled[:_EXAMPLES],
            "dlq_expected": self.dlq_expected, "dlq_received": self.dlq_received,
            "dlq_duplicates": self.dlq_duplicates, "spends": self.spends,
            "spends_refused": self.spends_refused, "points_spent": self.points_spent,
            "points_expired": self.points_expired,
            "checks": {name: c.to_dict() for name, c in self.checks.items()},
        }  # fmt: skip

    def summary(self) -> str:
        lines = [
            f"invariants: {'OK' if self.ok else 'FAILED'}  events {self.events}, accepted {self.accepted}, "
            f"processed exactly once {self.processed_once}, lost {len(self.lost)}, "
            f"doubled {len(self.doubled)}, DLQ {self.dlq_received}/{self.dlq_expected} "
            f"(duplicates {self.dlq_duplicates}), the app's spends {self.spends} "
            f"({self.points_spent} points; {self.spends_refused} refused, {self.points_expired} expired)"
        ]
        for check in self.checks.values():
            mark = "ok  " if check.ok else "FAIL"
            lines.append(f"  {mark} {check.name}: {check.description} ({check.count} checked)")
            lines.extend(f"         {f}" for f in check.failures[:_EXAMPLES])
        return "\n".join(lines)


@dataclass
class _Run:
    """One check's working state: the checks, and the events found lost, doubled or counted."""

    expectation: Expectation
    state: State
    checks: dict[str, Check] = field(default_factory=lambda: {n: Check(n, d) for n, d in _CHECKS})
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    counted: set[str] = field(default_factory=set)  # events whose entries count in the expected wallets
    processed_once: int = 0
    by_event: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))

    def __post_init__(self) -> None:
        for uid, entries in self.state.ledgers.items():
            for entry_id, entry in entries.items():
                event_id = str((entry.get("metadata") or {}).get("eventId", ""))
                self.by_event[event_id][entry_id] = {**entry, "_uid": uid}


def check(
    expectation: Expectation,
    state: State,
    dead_letters: list[DeadLetter],
    *,
    dlq_duplicates_ok: bool = False,
) -> InvariantReport:
    run = _Run(expectation, state)
    for event in expectation.events.values():
        _check_status(run, event)
    for event_id in run.counted:
        _check_entries(run, expectation.events[event_id])
    _check_spends(run)
    spent_total, expired_total = _check_wallets(run)
    dlq_expected, duplicates = _check_dlq(run, dead_letters, dlq_duplicates_ok)
    spends = expectation.spends
    return InvariantReport(
        checks=run.checks, events=len(expectation.events), accepted=len(expectation.accepted),
        not_accepted=len(expectation.events) - len(expectation.accepted), processed_once=run.processed_once,
        lost=sorted(set(run.lost)), doubled=sorted(set(run.doubled)), dlq_expected=dlq_expected,
        dlq_received=len(dead_letters), dlq_duplicates=duplicates,
        spends=sum(s.spent for s in spends.values()), points_spent=spent_total, points_expired=expired_total,
        spends_refused=sum(not s.spent for s in spends.values()),
    )  # fmt: skip


def _check_status(run: _Run, event: Expected) -> None:
    """An accepted event's final status; a never-accepted one counts only if it ended as expected."""
    record = run.state.records.get(event.event_id)
    status = str((record or {}).get("status", "missing"))
    if not event.accepted:
        written = run.by_event.get(event.event_id, {})
        if status in ("processed", "ignored", "failed_terminal") and status == event.status:
            run.counted.add(event.event_id)
        elif written:
            run.checks["ledger_per_event"].fail(
                f"{event.event_id} ({event.kind}) was never accepted, yet wrote {sorted(written)}"
            )
            run.doubled.append(event.event_id)
        return
    run.checks["event_status"].count += 1
    problem = ""
    if status != event.status:
        problem = f"status {status}, expected {event.status}"
    elif event.status == "failed_terminal" and (record or {}).get("failureReason") != event.reason:
        problem = f"failureReason {(record or {}).get('failureReason')!r}, expected {event.reason!r}"
    if problem:
        run.checks["event_status"].fail(f"{event.event_id} ({event.kind}): {problem}")
        run.lost.append(event.event_id)
        return
    run.counted.add(event.event_id)


def _check_entries(run: _Run, event: Expected) -> None:
    """A counted event wrote exactly its entries, in its user's ledger, and its record lists them."""
    event_id, checks = event.event_id, run.checks
    checks["ledger_per_event"].count += 1
    written = run.by_event.get(event_id, {})
    got = {entry_id: int(e.get("amount", 0)) for entry_id, e in written.items()}
    if got != event.entries:
        missing = sorted(set(event.entries) - set(got))
        extra = sorted(set(got) - set(event.entries))
        wrong = sorted(k for k in set(got) & set(event.entries) if got[k] != event.entries[k])
        checks["ledger_per_event"].fail(
            f"{event_id} ({event.kind}): missing {missing}, extra {extra}, wrong amount {wrong}"
        )
        (run.doubled if extra else run.lost).append(event_id)
    elif any(e["_uid"] != event.uid for e in written.values()):
        checks["ledger_per_event"].fail(f"{event_id} ({event.kind}): entries in another user's ledger")
        run.lost.append(event_id)
    else:
        run.processed_once += 1
    record = run.state.records.get(event_id) or {}
    if record.get("status") == "processed":
        checks["records_match_ledger"].count += 1
        listed = sorted((record.get("result") or {}).get("entryIds") or [])
        if listed != sorted(event.entries):
            checks["records_match_ledger"].fail(
                f"{event_id}: record lists {listed}, expected {sorted(event.entries)}"
            )


def _check_spends(run: _Run) -> None:
    """Each spend that succeeded wrote its debit of its cost; a refused one wrote nothing."""
    spends_exact = run.checks["spends_exact"]
    for spend in run.expectation.spends.values():
        spends_exact.count += 1
        entry = run.state.ledgers.get(spend.uid, {}).get(spend.action_id)
        if spend.spent and (entry is None or entry.get("amount") != spend.cost):
            spends_exact.fail(f"{spend.uid}/{spend.action_id}: spent {spend.cost}, entry {entry}")
        elif not spend.spent and entry is not None:
            spends_exact.fail(f"{spend.uid}/{spend.action_id}: refused, yet wrote {entry}")


def _expected_wallets(run: _Run) -> Counter[str]:
    """Per user: the counted events' signed entries and the entries written by no event."""
    expected: Counter[str] = Counter()
    for event_id in run.counted:
        event = run.expectation.events[event_id]
        expected[event.uid] += sum(event.entries.values())
    for uid, amount in run.expectation.other_writes.values():
        expected[uid] += amount
    return expected


def _check_wallets(run: _Run) -> tuple[int, int]:
    """Every user's wallet in the app's model and against its credits; (points spent, expired)."""
    checks, spends = run.checks, run.expectation.spends
    credits = _expected_wallets(run)
    spent_total = expired_total = 0
    for uid in run.expectation.uids:
        audit = audit_wallet(uid, run.state.wallets.get(uid), run.state.ledgers.get(uid, {}))
        spent_total, expired_total = spent_total + audit.spent, expired_total + audit.expired
        checks["wallet_in_app_model"].count += 1
        for problem in audit.problems:
            checks["wallet_in_app_model"].fail(problem)
        checks["wallet_equals_expected"].count += 1
        expected = credits[uid] - audit.spent - audit.expired
        if audit.total != expected:
            checks["wallet_equals_expected"].fail(
                f"{uid}: wallet {audit.total}, expected {expected} (credits {credits[uid]},"
                f" spent {audit.spent}, expired {audit.expired})"
            )
        spent_here = sum(s.cost for s in spends.values() if s.uid == uid and s.spent)
        if spent_here != audit.spent:
            checks["spends_exact"].fail(f"{uid}: the app spent {spent_here}, its debits hold {audit.spent}")
        _check_orphans(run, uid)
    return spent_total, expired_total


def _check_orphans(run: _Run, uid: str) -> None:
    """Every entry of `uid`'s ledger is a spend, another write, or an entry of a processed event of ours."""
    orphans, expectation = run.checks["no_orphan_entries"], run.expectation
    for entry_id, entry in run.state.ledgers.get(uid, {}).items():
        orphans.count += 1
        spend = expectation.spends.get(entry_id)
        if (spend is not None and spend.uid == uid) or entry_id in expectation.other_writes:
            continue
        event_id = str((entry.get("metadata") or {}).get("eventId", ""))
        record = run.state.records.get(event_id)
        if event_id not in expectation.events:
            orphans.fail(f"{uid}/{entry_id}: event {event_id or '(none)'} is not of this run")
        elif (record or {}).get("status") != "processed":
            orphans.fail(
                f"{uid}/{entry_id}: its event {event_id} is {(record or {}).get('status', 'missing')}"
            )


def _check_dlq(run: _Run, dead_letters: list[DeadLetter], duplicates_ok: bool) -> tuple[int, int]:
    """Every accepted bad event in the DLQ with its reason, nothing else; (expected, duplicates)."""
    events = run.expectation.events
    bad = {e.event_id: e for e in events.values() if e.status == "failed_terminal"}
    must = {e for e, x in bad.items() if x.accepted}
    letters = Counter(d.event_id for d in dead_letters)
    dlq = run.checks["dlq_exact"]
    dlq.count = len(bad)
    for event_id in sorted(must - set(letters)):
        dlq.fail(f"{event_id} ({bad[event_id].kind}) is not in the DLQ")
        run.lost.append(event_id)
    for letter in dead_letters:
        expected = bad.get(letter.event_id)
        if expected is None:
            kind = events[letter.event_id].kind if letter.event_id in events else "?"
            dlq.fail(f"{letter.event_id} ({kind}) is in the DLQ ({letter.reason}) but should not be")
        elif letter.reason != expected.reason:
            dlq.fail(f"{letter.event_id}: DLQ reason {letter.reason!r}, expected {expected.reason!r}")
    duplicates = sum(n - 1 for n in letters.values() if n > 1)
    if duplicates and not duplicates_ok:
        dlq.fail(
            f"{duplicates} dead letters delivered more than once: "
            f"{[e for e, n in letters.items() if n > 1][:_EXAMPLES]}"
        )
    return len(must), duplicates
