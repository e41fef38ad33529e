"""The composition root: builds the adapters from Settings and hands them to the services.

Nothing happens at import time. Every adapter is built here and only here, so a test
can pass fakes to the services and the CLI can point everything at the emulators.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from google.cloud import firestore

from paynow_service.adapters.app_ledger_scan import AppLedgerScan, MigratedOrders
from paynow_service.adapters.console_reads import ConsoleReads
from paynow_service.adapters.dead_letter_queue import DeadLetterQueue
from paynow_service.adapters.dead_letters import PubSubDeadLetters
from paynow_service.adapters.firestore_events import EventRecords
from paynow_service.adapters.firestore_ledger import FirestoreLedger
from paynow_service.adapters.firestore_parked import ParkedEvents
from paynow_service.adapters.firestore_processing import FirestoreProcessor
from paynow_service.adapters.firestore_transactions import FirestoreTransactions
from paynow_service.adapters.oidc import CertsTimings, IdTokenVerifier
from paynow_service.adapters.pubsub_infra import PubSubInfra
from paynow_service.adapters.pubsub_publisher import PubSubPublisher
from paynow_service.config import ConfigError, Settings
from paynow_service.domain.catalog import Catalog, CatalogError
from paynow_service.domain.provenance import EventSigner
from paynow_service.entrypoints.message_handler import MessageHandler
from paynow_service.entrypoints.points_api import Authenticator, LocalCaller
from paynow_service.logs import log
from paynow_service.plugins import get_plugin_manager
from paynow_service.service.console_queries import ConsoleQueries
from paynow_service.service.ingest import IngestService
from paynow_service.service.points import PointsCore
from paynow_service.service.processing import ProcessingCore
from paynow_service.service.sweep import SweepLimits, SweepService

logger = logging.getLogger("paynow_service.bootstrap")


def freeze_startup_heap() -> None:
    """Take what the process built at start-up (modules, app, clients) out of the collector's reach.

    Those objects live as long as the process, yet every full collection walks them again, a
    pause that stalls every request in flight (docs/performance.md has the figures). Called by
    the long-running entry points, once, just before they start serving.
    """
    gc.collect()
    gc.freeze()


def firestore_client(settings: Settings) -> firestore.AsyncClient:
    """The process's Firestore client (the emulator when FIRESTORE_EMULATOR_HOST is set)."""
    return firestore.AsyncClient(project=settings.google_cloud_project)


def load_catalog(settings: Settings) -> Catalog:
    if settings.product_catalog is None:
        log(
            logger,
            logging.WARNING,
            "PRODUCT_CATALOG is not set: no product grants points",
            component="bootstrap",
        )
        return Catalog()
    try:
        return Catalog.from_toml(settings.product_catalog.read_text(encoding="utf-8"))
    except (OSError, CatalogError) as err:
        raise ConfigError(f"PRODUCT_CATALOG={settings.product_catalog}: {err}") from None


@dataclass
class Container:
    """Everything a server process needs, built once."""

    settings: Settings
    db: firestore.AsyncClient
    ledger: FirestoreLedger
    records: EventRecords
    publisher: PubSubPublisher
    core: ProcessingCore
    ingest: IngestService
    dead_letters: PubSubDeadLetters

    def message_handler(self) -> MessageHandler:
        """The worker's message handler (push and pull): it needs EVENT_SIGNING_KEYS to verify."""
        self.settings.require("EVENT_SIGNING_KEYS")
        return MessageHandler(self.core, self.dead_letters, EventSigner(self.settings.event_signing_keys))

    async def aclose(self) -> None:
        await self.ingest.drain()
        await self.publisher.aclose()
        self.db.close()  # type: ignore[no-untyped-call]


def build_container(settings: Settings, extra_plugins: tuple[object, ...] = ()) -> Container:
    db = firestore_client(settings)
    transactions = FirestoreTransactions(db, timeout_s=settings.firestore_timeout_s)  # one lock per wallet
    ledger = ledger_for(settings, db, transactions)
    records = EventRecords(
        db, ttl_days=settings.webhook_event_ttl_days, timeout_s=settings.firestore_timeout_s
    )
    publisher = PubSubPublisher(settings)
    processor = FirestoreProcessor(
        db,
        ledger,
        transactions,
        timeout_s=settings.firestore_timeout_s,
        ttl_days=settings.webhook_event_ttl_days,
    )
    plugins = get_plugin_manager(extra_plugins)
    dead_letters = PubSubDeadLetters(publisher)  # one per process: the core's and the handler's
    core = ProcessingCore(
        processor,
        dead_letters,
        records,
        plugins.hook,
        load_catalog(settings),
        max_delivery_attempts=settings.max_delivery_attempts,
    )
    ingest = IngestService(
        records,
        publisher,
        core,
        mode=settings.webhook_mode,
        queue_percent=settings.webhook_queue_percent,
        lease_s=settings.publish_lease_s,
    )
    return Container(settings, db, ledger, records, publisher, core, ingest, dead_letters)


def ledger_for(
    settings: Settings, db: firestore.AsyncClient, transactions: FirestoreTransactions | None = None
) -> FirestoreLedger:
    return FirestoreLedger(
        db,
        transactions=transactions,
        allow_negative_balance=settings.allow_negative_balance,
        timeout_s=settings.firestore_timeout_s,
    )


def points_core(settings: Settings) -> PointsCore:
    """PointsService's core on its own Firestore client (the gRPC server)."""
    return PointsCore(ledger_for(settings, firestore_client(settings)))


def push_verifier(settings: Settings) -> IdTokenVerifier | None:
    """The push endpoint's ID-token verifier; None with PUSH_AUTH=disabled (emulator only)."""
    if settings.push_auth != "enabled":
        return None
    settings.require("PUSH_AUDIENCE", "PUSH_SERVICE_ACCOUNT")
    return IdTokenVerifier(
        audience=settings.push_audience,
        allowed_emails=[settings.push_service_account],
        certs_url=settings.push_certs_url,
        timings=CertsTimings(grace_s=settings.push_certs_grace_s),
    )


@contextlib.asynccontextmanager
async def sweep_service(settings: Settings) -> AsyncIterator[SweepService]:
    """The sweep's service on its own clients, closed after the run."""
    db = firestore_client(settings)
    publisher = PubSubPublisher(settings)
    records = EventRecords(
        db, ttl_days=settings.webhook_event_ttl_days, timeout_s=settings.firestore_timeout_s
    )
    limits = SweepLimits(
        lease_s=settings.publish_lease_s,
        park_max_hours=settings.park_max_hours,
        ttl_days=settings.webhook_event_ttl_days,
    )
    parked = ParkedEvents(db, timeout_s=settings.firestore_timeout_s)
    try:
        yield SweepService(records, parked, publisher, PubSubDeadLetters(publisher), limits)
    finally:
        await publisher.aclose()
        db.close()  # type: ignore[no-untyped-call]


def dead_letter_queue(settings: Settings) -> DeadLetterQueue:
    """The DLQ subscription's reader (`dlq list | replay | purge`)."""
    return DeadLetterQueue(settings)


@contextlib.asynccontextmanager
async def replay_ports(settings: Settings) -> AsyncIterator[tuple[EventRecords, PubSubPublisher]]:
    """What a replay writes to: the events' records and the events topic (never a signer)."""
    db = firestore_client(settings)
    publisher = PubSubPublisher(settings)
    try:
        yield (
            EventRecords(
                db, ttl_days=settings.webhook_event_ttl_days, timeout_s=settings.firestore_timeout_s
            ),
            publisher,
        )
    finally:
        await publisher.aclose()
        db.close()  # type: ignore[no-untyped-call]


def points_authenticator(settings: Settings) -> Authenticator:
    """PointsService's caller check: Google ID tokens, or every call as `local` with POINTS_AUTH=disabled."""
    if settings.points_auth == "disabled":
        return LocalCaller()
    settings.require("POINTS_AUDIENCE", "POINTS_ALLOWED_CALLERS")
    return IdTokenVerifier(
        settings.points_audience,
        settings.points_allowed_callers,
        settings.points_certs_url,
        timings=CertsTimings(grace_s=settings.push_certs_grace_s),
    )


@contextlib.asynccontextmanager
async def migration_ports(
    settings: Settings, *, page_size: int
) -> AsyncIterator[tuple[AppLedgerScan, MigratedOrders]]:
    """`migrate orders`: the app's ledger entries, scanned, and paynowOrders, written."""
    db = firestore_client(settings)
    try:
        timeout = settings.firestore_timeout_s
        yield AppLedgerScan(db, page_size=page_size, timeout_s=timeout), MigratedOrders(db, timeout_s=timeout)
    finally:
        db.close()  # type: ignore[no-untyped-call]


def pubsub_infra(settings: Settings) -> PubSubInfra:
    """The topics and subscriptions' admin client (`infra apply | plan`, and `dev` at start)."""
    return PubSubInfra(settings)


def console_verifier(settings: Settings) -> IdTokenVerifier | None:
    """The console's operator check (Google ID tokens of CONSOLE_OPERATORS); None when the console
    is open: on both local emulators without CONSOLE_OPERATORS (`paynow-service dev`)."""
    if settings.console_open:
        return None
    settings.require("CONSOLE_OPERATORS", "CONSOLE_AUDIENCE")
    return IdTokenVerifier(
        settings.console_audience,
        settings.console_operators,
        settings.console_certs_url,
        timings=CertsTimings(grace_s=settings.push_certs_grace_s),
    )


def console_queries(c: Container) -> ConsoleQueries:
    """The console's reads on the process's Firestore client and ledger."""
    return ConsoleQueries(ConsoleReads(c.db, timeout_s=c.settings.firestore_timeout_s), c.ledger)
