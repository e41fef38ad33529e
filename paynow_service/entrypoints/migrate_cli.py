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
from datetime import datetime

from google.api_core import exceptions as gexc
from google.auth.exceptions import GoogleAuthError

from paynow_service import bootstrap
from paynow_service.adapters.app_ledger_scan import DEFAULT_PAGE_SIZE
from paynow_service.config import Settings
from paynow_service.domain.errors import DomainError
from paynow_service.entrypoints.progress import Progress
from paynow_service.service.migrate_orders import Migration
from paynow_service.service.order_migration import Tally, parse_since

PROGRAM = "paynow-service migrate orders"
EXIT_FIRESTORE = 1
EXIT_USAGE = 2


async def migrate_orders(settings: Settings, *, apply: bool, since: datetime | None, page_size: int) -> Tally:
    tally = Tally(apply=apply)
    async with bootstrap.migration_ports(settings, page_size=page_size) as (scan, orders):
        await Migration(orders, apply, since, tally, say=print).run(scan, Progress(PROGRAM).tick)
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
