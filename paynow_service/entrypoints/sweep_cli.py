"""`paynow-service sweep`: the sweep's passes (service/sweep.py), printed for an operator.

Requires EVENT_SIGNING_KEYS: what it publishes is signed like the webhook's events.
Exit 1 when anything failed (the next run tries again).
"""

from __future__ import annotations

import argparse
import asyncio

from paynow_service import bootstrap
from paynow_service.config import Settings
from paynow_service.service.sweep import PassReport, SweepService


async def _sweep(
    settings: Settings, *, dry_run: bool, limit: int
) -> tuple[PassReport, PassReport, PassReport]:
    async with bootstrap.sweep_service(settings) as sweep:
        return await _passes(sweep, dry_run=dry_run, limit=limit)


async def _passes(
    sweep: SweepService, *, dry_run: bool, limit: int
) -> tuple[PassReport, PassReport, PassReport]:
    # Parked events of credited orders first: the stranded pass then publishes them in the same run.
    requeued = await sweep.requeue_parked(dry_run=dry_run, limit=limit)
    stranded = await sweep.republish_stranded(dry_run=dry_run, limit=limit)
    overdue = await sweep.dead_letter_overdue(dry_run=dry_run, limit=limit)
    return requeued, stranded, overdue


def run(settings: Settings, args: argparse.Namespace) -> int:
    settings.require("EVENT_SIGNING_KEYS")
    requeued, stranded, overdue = asyncio.run(_sweep(settings, dry_run=args.dry_run, limit=args.limit))
    for line in (*requeued.would, *stranded.would, *overdue.would):
        print(line)
    if requeued.found:
        verb = "would queue" if args.dry_run else "queued"
        print(f"parked on credited orders: {requeued.found}, {verb}: {_count(requeued, args.dry_run)}")
    verb = "would publish" if args.dry_run else "re-published"
    print(f"stranded: {stranded.found}, {verb}: {_count(stranded, args.dry_run)}, failed: {stranded.failed}")
    verb = "would dead-letter" if args.dry_run else "dead-lettered"
    print(
        f"parked past {settings.park_max_hours} h: {overdue.found}, "
        f"{verb}: {_count(overdue, args.dry_run)}, failed: {overdue.failed}"
    )
    return 1 if stranded.failed or overdue.failed else 0


def _count(report: PassReport, dry_run: bool) -> int:
    return report.found if dry_run else report.done
