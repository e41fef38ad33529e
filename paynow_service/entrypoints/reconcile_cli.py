"""`paynow-service reconcile [--fix] [--report-id ID] [--out DIR] [--page-size N] [--resume] [--no-dlq]`.

Audits every wallet against its ledger and lots, every event against its entries, every order
against its refunds, disputes and parked events, and the dead-letter queue's age
(service/reconcile.py; the checks and what an operator does: docs/reconciliation.md). Writes
`{out}/reconcile-{report_id}.json` and `.md`, and the summary `reconcileReports/{report_id}`.
`--fix` repairs paid drift (one entry `reconcile:{report_id}:{uid}:paid`) and promo drift
(`promoBalance` set to the lots' sum); everything else is reported.

Streams page by page with bounded memory; the cursor and counters are saved in
`reconcileRuns/{report_id}` after every page, and `--resume` carries on from there (the run
named by `--report-id`, else the latest unfinished one). Progress on stderr at most every 2 s.
Exit 0: no drift left (none found, or all of it fixed); 1: drift found and not fixed;
2: usage error; 3: Firestore failed (a re-run with --resume carries on).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import re
import resource
import secrets
import sys
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc
from google.auth.exceptions import GoogleAuthError

from paynow_service import bootstrap
from paynow_service.adapters.reconcile_files import DeadLetterAge, FindingsFile, write_reports
from paynow_service.adapters.reconcile_store import ReconcileStore
from paynow_service.config import Settings
from paynow_service.domain.errors import DomainError
from paynow_service.domain.reconcile_findings import Finding
from paynow_service.domain.reconcile_report import (
    SUMMARY_FINDINGS,
    RunTally,
    render_markdown,
    report_header,
    summary_document,
)
from paynow_service.entrypoints.progress import Progress
from paynow_service.logs import log
from paynow_service.service.reconcile import Limits, Reconciliation

PROGRAM = "paynow-service reconcile"
EXIT_DRIFT = 1
EXIT_USAGE = 2
EXIT_FIRESTORE = 3
REPORT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
logger = logging.getLogger("paynow_service.reconcile")


class _UsageError(Exception):
    """Arguments that cannot start a run (exit 2); never leaves this module."""


def new_report_id(now: dt.datetime) -> str:
    return f"r{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def peak_rss_mb() -> float:
    """This process's peak RSS in MB. From /proc (VmHWM): Linux keeps `ru_maxrss` across exec, so
    a run started by a large parent would report the parent's size instead of its own."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
        return round(int(status.split("VmHWM:")[1].split()[0]) / 1024, 1)
    except (OSError, IndexError, ValueError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # kB on Linux


async def _start(store: ReconcileStore, args: argparse.Namespace, now: dt.datetime) -> RunTally:
    if args.resume:
        saved = await (store.load_run(args.report_id) if args.report_id else store.latest_unfinished_run())
        if saved is None:
            raise _UsageError(f"no run to resume{f' named {args.report_id}' if args.report_id else ''}")
        tally = RunTally.restore(saved)
        if tally.phase == "done":
            raise _UsageError(f"run {tally.report_id} is finished: nothing to resume")
        tally.fix = tally.fix or args.fix
        return tally
    return RunTally(report_id=args.report_id or new_report_id(now), fix=args.fix, started_at=now)


async def reconcile(settings: Settings, args: argparse.Namespace) -> tuple[RunTally, Path, Path]:
    db = bootstrap.firestore_client(settings)
    try:
        store = ReconcileStore(db, page_size=args.page_size, timeout_s=settings.firestore_timeout_s)
        tally = await _start(store, args, dt.datetime.now(dt.UTC))
        out = Path(args.out)
        sink = FindingsFile(
            out, tally.report_id, resume_at=tally.findings_bytes if tally.resumed_from else None
        )
        try:
            limits = Limits(
                page_size=args.page_size,
                lease_s=settings.publish_lease_s,
                park_max_hours=settings.park_max_hours,
                ttl_days=settings.webhook_event_ttl_days,
            )
            dead_letters = None if args.no_dlq else DeadLetterAge(settings)
            run = Reconciliation(
                store, sink, dead_letters, limits, lambda: dt.datetime.now(dt.UTC), Progress(PROGRAM).tick
            )
            if tally.resumed_from:
                print(f"{PROGRAM}: resuming {tally.report_id} from {tally.resumed_from}", file=sys.stderr)
            await run.run(tally)
            sink.flush()
            markdown = render_markdown(tally, sink.read())
            first: list[Finding] = []
            for finding in sink.read():
                if len(first) >= SUMMARY_FINDINGS:
                    break
                first.append(finding)
            paths = write_reports(out, tally.report_id, report_header(tally, peak_rss_mb()), sink, markdown)
            await store.save_report(tally.report_id, summary_document(tally, first, markdown))
            await store.save_run(tally.report_id, tally.checkpoint())
        finally:
            sink.close()
        return tally, *paths
    finally:
        db.close()  # type: ignore[no-untyped-call]


def _usage(message: str) -> int:
    print(f"{PROGRAM}: {message}", file=sys.stderr)
    return EXIT_USAGE


def run(settings: Settings, args: argparse.Namespace) -> int:
    if not 1 <= args.page_size <= 10_000:
        return _usage(f"--page-size {args.page_size}: expected 1 to 10000")
    if args.report_id is not None and not REPORT_ID.match(args.report_id):
        return _usage("--report-id: letters, digits, '.', '_' and '-' only, at most 100")
    try:
        tally, json_path, md_path = asyncio.run(reconcile(settings, args))
    except _UsageError as err:
        return _usage(str(err))
    except (DomainError, gexc.GoogleAPIError, GoogleAuthError) as err:
        detail = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        print(f"{PROGRAM}: Firestore failed: {detail} (run again with --resume)", file=sys.stderr)
        return EXIT_FIRESTORE
    fields: dict[str, Any] = {
        "component": "reconcile",
        "report_id": tally.report_id,
        "drift_count": tally.drift,
        "fixed_count": tally.fixed,
        "users_scanned": tally.users,
        "events_scanned": tally.events,
        "orders_scanned": tally.orders,
        "findings_by_kind": dict(tally.by_kind),
    }
    log(logger, logging.INFO, "Reconciliation finished", **fields)
    print(
        f"report {tally.report_id}: users {tally.users} (this run {tally.users_this_run}), "
        f"events {tally.events}, orders {tally.orders}, findings {tally.findings}, "
        f"drift {tally.drift}, fixed {tally.fixed}, peak RSS {peak_rss_mb()} MB"
    )
    print(f"wrote {json_path} and {md_path}")
    return EXIT_DRIFT if tally.unfixed_drift > 0 else 0
