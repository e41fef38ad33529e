"""A reconciliation run's counters, checkpoint and reports (JSON summary, Markdown), as pure values.

The counters survive a kill: they are saved with the cursor in `reconcileRuns/{report_id}`
and restored by `--resume`, so the final report counts every user once, whichever run
scanned it. The findings themselves stream to a file, never all held in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from paynow_service.domain.reconcile_findings import ACTIONS, FIXABLE, NOTICES, Finding

SUMMARY_FINDINGS = 200  # findings kept in the reconcileReports document
MARKDOWN_FINDINGS = 500  # findings listed in the Markdown report
MARKDOWN_MAX_BYTES = 200_000  # the Markdown as stored in reconcileReports
PHASES = ("users", "events", "orders", "dlq", "done")


@dataclass
class RunTally:
    report_id: str
    fix: bool
    started_at: datetime
    finished_at: datetime | None = None
    phase: str = "users"
    after: str = ""  # the last uid, event id or order id done in the current phase
    users: int = 0
    entries: int = 0
    events: int = 0
    orders: int = 0
    findings: int = 0
    drift: int = 0
    fixed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    dlq: dict[str, Any] = field(default_factory=dict)
    findings_bytes: int = 0  # the findings file's length at the checkpoint
    resumed_from: str = ""  # "phase:after" this run started from ("" when it started afresh)
    users_this_run: int = 0

    def add(self, finding: Finding) -> None:
        self.findings += 1
        self.by_kind[finding.kind] = self.by_kind.get(finding.kind, 0) + 1
        if finding.is_drift:
            self.drift += 1
        if finding.fixed:
            self.fixed += 1

    @property
    def unfixed_drift(self) -> int:
        return self.drift - self.fixed

    def progress(self) -> str:
        return (
            f"{self.phase}: users {self.users}, entries {self.entries}, events {self.events}, "
            f"orders {self.orders}, findings {self.findings} (drift {self.drift}, fixed {self.fixed})"
        )

    def checkpoint(self) -> dict[str, Any]:
        """reconcileRuns/{report_id}: the cursor and the counters so far."""
        return {
            "reportId": self.report_id,
            "fix": self.fix,
            "startedAt": self.started_at,
            "phase": self.phase,
            "after": self.after,
            "usersScanned": self.users,
            "entriesScanned": self.entries,
            "eventsScanned": self.events,
            "ordersScanned": self.orders,
            "findingsCount": self.findings,
            "driftCount": self.drift,
            "fixedCount": self.fixed,
            "findingsByKind": dict(self.by_kind),
            "findingsBytes": self.findings_bytes,
            "done": self.phase == "done",
        }

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> RunTally:
        def number(name: str) -> int:
            value = data.get(name)
            return value if isinstance(value, int) else 0

        by_kind = data.get("findingsByKind")
        phase = str(data.get("phase") or "users")
        tally = cls(
            report_id=str(data.get("reportId", "")),
            fix=bool(data.get("fix")),
            started_at=data["startedAt"],
            phase=phase if phase in PHASES else "users",
            after=str(data.get("after") or ""),
            users=number("usersScanned"),
            entries=number("entriesScanned"),
            events=number("eventsScanned"),
            orders=number("ordersScanned"),
            findings=number("findingsCount"),
            drift=number("driftCount"),
            fixed=number("fixedCount"),
            by_kind={str(k): int(v) for k, v in by_kind.items()} if isinstance(by_kind, Mapping) else {},
            findings_bytes=number("findingsBytes"),
        )
        tally.resumed_from = f"{tally.phase}:{tally.after}"
        return tally


def summary_document(tally: RunTally, first: Iterable[Finding], markdown: str) -> dict[str, Any]:
    """reconcileReports/{report_id}: the fields the operators' console reads."""
    return {
        "reportId": tally.report_id,
        "startedAt": tally.started_at,
        "finishedAt": tally.finished_at,
        "usersScanned": tally.users,
        "eventsScanned": tally.events,
        "ordersScanned": tally.orders,
        "findingsByKind": dict(tally.by_kind),
        "findings": [f.to_map() for f in first][:SUMMARY_FINDINGS],
        "fixedCount": tally.fixed,
        "driftCount": tally.drift,
        "markdown": truncate_utf8(markdown, MARKDOWN_MAX_BYTES),
    }


def report_header(tally: RunTally, peak_rss_mb: float | None) -> dict[str, Any]:
    """The JSON report's fields besides `findings` (which the writer streams after them)."""
    return {
        "reportId": tally.report_id,
        "fix": tally.fix,
        "startedAt": tally.started_at.isoformat(),
        "finishedAt": tally.finished_at.isoformat() if tally.finished_at else None,
        "usersScanned": tally.users,
        "entriesScanned": tally.entries,
        "eventsScanned": tally.events,
        "ordersScanned": tally.orders,
        "findingsCount": tally.findings,
        "driftCount": tally.drift,
        "fixedCount": tally.fixed,
        "findingsByKind": dict(sorted(tally.by_kind.items())),
        "dlq": dict(tally.dlq),
        "resumedFrom": tally.resumed_from or None,
        "usersScannedThisRun": tally.users_this_run,
        "peakRssMb": peak_rss_mb,
    }


def truncate_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    marker = "\n\n(truncated)\n"
    return data[: limit - len(marker)].decode("utf-8", errors="ignore") + marker


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(tally: RunTally, findings: Iterable[Finding], limit: int = MARKDOWN_FINDINGS) -> str:
    """The report for humans: totals, each kind found with what to do, then the first findings."""
    verdict = "clean" if tally.drift == 0 else f"{tally.unfixed_drift} drift finding(s) left unfixed"
    finished = tally.finished_at.isoformat() if tally.finished_at else "-"
    lines = [
        f"# Reconciliation {tally.report_id}",
        "",
        f"- started {tally.started_at.isoformat()}, finished "
        f"{finished}; --fix: {'yes' if tally.fix else 'no'}",
        f"- scanned: {tally.users} users, {tally.entries} ledger entries, {tally.events} events, "
        f"{tally.orders} orders",
        f"- findings: {tally.findings} (drift {tally.drift}, fixed {tally.fixed}): {verdict}",
    ]
    if tally.dlq:
        lines.append(f"- dead-letter queue: {_dlq_text(tally.dlq)}")
    if tally.resumed_from:
        lines.append(f"- resumed from {tally.resumed_from}")
    lines += ["", "## Findings by kind", ""]
    if tally.by_kind:
        lines += ["| kind | count | type | what to do |", "|---|---|---|---|"]
        for kind, count in sorted(tally.by_kind.items()):
            kind_type = "fixable" if kind in FIXABLE else "notice" if kind in NOTICES else "drift"
            lines.append(f"| `{kind}` | {count} | {kind_type} | {_cell(ACTIONS.get(kind, ''))} |")
    else:
        lines.append("Nothing found.")
    shown = 0
    rows: list[str] = []
    for finding in findings:
        if shown >= limit:
            break
        shown += 1
        ids = " ".join(
            f"{name}={value}"
            for name, value in (
                ("uid", finding.uid),
                ("event", finding.event_id),
                ("order", finding.order_id),
                ("entry", finding.entry_id),
            )
            if value
        )
        fixed = "fixed" if finding.fixed else ""
        rows.append(f"| `{finding.kind}` | {_cell(ids)} | {_cell(finding.detail)} | {fixed} |")
    if rows:
        title = (
            f"## Findings (first {shown} of {tally.findings})" if tally.findings > shown else "## Findings"
        )
        lines += ["", title, "", "| kind | ids | detail | |", "|---|---|---|---|", *rows]
    return "\n".join(lines) + "\n"


def _dlq_text(dlq: Mapping[str, Any]) -> str:
    if not dlq.get("available"):
        return f"not read ({dlq.get('error', 'skipped')})"
    count = dlq.get("count", 0)
    if not count:
        return "empty"
    return f"{count} letter(s), the oldest {int(dlq.get('oldestAgeS', 0)) / 3600:.1f} h old"
