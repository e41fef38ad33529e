"""`paynow-service sweep`: publish events stranded in `queued`; dead-letter what stayed parked.

A crash or an outage between "record" and "publish" leaves a `webhookEvents` record
`queued` without `publishedAt`. Once its lease has expired, sweep takes the lease (so
a concurrent redelivery does not publish it too), publishes the recorded PaymentEvent
under its ordering key and sets `publishedAt`.

A refund or dispute whose order is not credited is parked on the order; if the order
has not come after `PARK_MAX_HOURS`, sweep dead-letters it as `order_not_credited`
(published to the DLQ first, then taken off the order). One parked on an order that
`migrate orders` credited since is made `queued` again first, so the stranded pass
publishes it. Safe to run at any time, repeatedly.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging

from paynow_service import bootstrap
from paynow_service.adapters.dead_letters import PubSubDeadLetters
from paynow_service.adapters.firestore_events import EventRecords
from paynow_service.adapters.firestore_parked import ParkedEvents
from paynow_service.adapters.pubsub_publisher import PubSubPublisher
from paynow_service.config import Settings
from paynow_service.domain.errors import OrderNotCreditedError, TransientError
from paynow_service.logs import log

logger = logging.getLogger("paynow_service.sweep")
COMPONENT = "paynow_sweep"
REASON = OrderNotCreditedError.reason


async def sweep(settings: Settings, *, dry_run: bool, limit: int) -> tuple[int, int, int]:
    """Returns (stranded found, re-published, failed). Every event it publishes is signed
    (`event_mac`, EVENT_SIGNING_KEYS): it publishes the event the webhook recorded."""
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


async def requeue_parked(settings: Settings, *, dry_run: bool, limit: int) -> tuple[int, int]:
    """Returns (parked on orders credited since, made `queued` again)."""
    db = bootstrap.firestore_client(settings)
    parked = ParkedEvents(db, timeout_s=settings.firestore_timeout_s)
    done = 0
    try:
        found = await parked.on_credited_orders(limit)
        for item in found:
            if dry_run:
                print(f"would publish parked {item.event_id} (order {item.order_id} is credited now)")
                continue
            if item.event is None:
                continue  # undecodable: left for the dead-letter pass once overdue
            if await parked.requeue(item, dt.timedelta(days=settings.webhook_event_ttl_days)):
                log(
                    logger,
                    logging.INFO,
                    "Parked event queued - its order is credited",
                    component=COMPONENT,
                    event_id=item.event_id,
                    order_id=item.order_id,
                )
                done += 1
    finally:
        db.close()  # type: ignore[no-untyped-call]
    return len(found), done


async def dead_letter_parked(settings: Settings, *, dry_run: bool, limit: int) -> tuple[int, int, int]:
    """Returns (parked past PARK_MAX_HOURS, dead-lettered, failed)."""
    db = bootstrap.firestore_client(settings)
    parked = ParkedEvents(db, timeout_s=settings.firestore_timeout_s)
    publisher = PubSubPublisher(settings)
    dead_letters = PubSubDeadLetters(publisher)
    done = failed = 0
    try:
        overdue = await parked.overdue(dt.timedelta(hours=settings.park_max_hours), limit)
        for item in overdue:
            fields = {"component": COMPONENT, "event_id": item.event_id, "order_id": item.order_id}
            if dry_run:
                since = f"{item.parked_at:%Y-%m-%d %H:%M}"
                print(f"would dead-letter {item.event_id} (order {item.order_id}, parked {since})")
                continue
            detail = f"order {item.order_id} not credited within {settings.park_max_hours} h"
            try:
                if item.event is not None:
                    await dead_letters.dead_letter(
                        item.event, reason=REASON, error_class="terminal", detail=detail
                    )
                if not await parked.release(item, REASON, detail):
                    continue  # its order applied it meanwhile: a replay of the letter is a duplicate
            except TransientError as err:
                log(logger, logging.WARNING, "Parked event dead-letter failed", reason=err.reason, **fields)
                failed += 1
                continue
            log(
                logger,
                logging.ERROR,
                "Terminal failure - dead-lettered",
                reason="order_not_credited",
                **fields,
            )
            done += 1
    finally:
        await publisher.aclose()
        db.close()  # type: ignore[no-untyped-call]
    return len(overdue), done, failed


def run(settings: Settings, args: argparse.Namespace) -> int:
    settings.require("EVENT_SIGNING_KEYS")
    waiting, requeued = asyncio.run(requeue_parked(settings, dry_run=args.dry_run, limit=args.limit))
    if waiting:
        verb = "would queue" if args.dry_run else "queued"
        print(f"parked on credited orders: {waiting}, {verb}: {waiting if args.dry_run else requeued}")
    found, published, failed = asyncio.run(sweep(settings, dry_run=args.dry_run, limit=args.limit))
    verb = "would publish" if args.dry_run else "re-published"
    print(f"stranded: {found}, {verb}: {found if args.dry_run else published}, failed: {failed}")
    overdue, lettered, parked_failed = asyncio.run(
        dead_letter_parked(settings, dry_run=args.dry_run, limit=args.limit)
    )
    verb = "would dead-letter" if args.dry_run else "dead-lettered"
    print(
        f"parked past {settings.park_max_hours} h: {overdue}, "
        f"{verb}: {overdue if args.dry_run else lettered}, failed: {parked_failed}"
    )
    return 1 if failed or parked_failed else 0
