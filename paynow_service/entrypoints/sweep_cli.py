"""`paynow-service sweep`: publish events stranded in `queued` (recorded, never published).

A crash or an outage between "record" and "publish" leaves a `webhookEvents` record
`queued` without `publishedAt`. Once its lease has expired, sweep takes the lease (so
a concurrent redelivery does not publish it too), publishes the recorded PaymentEvent
under its ordering key and sets `publishedAt`. Safe to run at any time, repeatedly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from paynow_service import bootstrap
from paynow_service.adapters.firestore_events import EventRecords
from paynow_service.adapters.pubsub_publisher import PubSubPublisher
from paynow_service.config import Settings
from paynow_service.domain.errors import TransientError
from paynow_service.logs import log

logger = logging.getLogger("paynow_service.sweep")
COMPONENT = "paynow_sweep"


async def sweep(settings: Settings, *, dry_run: bool, limit: int) -> tuple[int, int, int]:
    """Returns (stranded found, re-published, failed)."""
    db = bootstrap.firestore_client(settings)
    records = EventRecords(
        db, ttl_days=settings.webhook_event_ttl_days, timeout_s=settings.firestore_timeout_s
    )
    publisher = PubSubPublisher(settings)
    published = failed = 0
    try:
        stranded = await records.stranded(settings.publish_lease_s, limit)
        for record in stranded:
            fields = {
                "component": COMPONENT,
                "event_id": record.event_id,
                "event_type": record.event_type,
                "ordering_key": record.ordering_key,
            }
            if dry_run:
                print(f"would publish {record.event_id} {record.event_type} (key {record.ordering_key})")
                continue
            event = await records.stored_event(record.event_id)
            if event is None:
                log(logger, logging.ERROR, "Stranded event has no stored PaymentEvent", **fields)
                failed += 1
                continue
            if not await records.claim_lease(record.event_id, settings.publish_lease_s):
                continue  # a redelivery or another sweep is publishing it
            try:
                await publisher.publish_event(event)
                await records.mark_published(record.event_id)
            except TransientError as err:
                log(logger, logging.WARNING, "Stranded event publish failed", reason=err.reason, **fields)
                failed += 1
                continue
            log(logger, logging.WARNING, "Stranded event re-published", status="queued", **fields)
            published += 1
    finally:
        await publisher.aclose()
        db.close()  # type: ignore[no-untyped-call]
    return len(stranded), published, failed


def run(settings: Settings, args: argparse.Namespace) -> int:
    found, published, failed = asyncio.run(sweep(settings, dry_run=args.dry_run, limit=args.limit))
    verb = "would publish" if args.dry_run else "re-published"
    print(f"stranded: {found}, {verb}: {found if args.dry_run else published}, failed: {failed}")
    return 1 if failed else 0
