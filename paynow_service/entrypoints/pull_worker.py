"""`paynow-service worker`: streaming pull on PUBSUB_SUBSCRIPTION, through the same core as push.

The Pub/Sub client calls back on its own threads; the async core runs on one event
loop in a dedicated thread (the Firestore async client belongs to that loop). With
ordering on, the client hands over a key's next message only after the previous one
was acked or nacked, so each user's events are applied in order. Flow control bounds
the messages in hand. SIGTERM stops pulling, lets in-flight messages finish, exits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import Any

from google.cloud.pubsub_v1 import SubscriberClient
from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler
from google.cloud.pubsub_v1.types import FlowControl

from paynow_service import bootstrap
from paynow_service.adapters.pubsub_subscriber import SubscriberWire
from paynow_service.config import Settings
from paynow_service.entrypoints.message_handler import COMPONENT, MessageHandler
from paynow_service.entrypoints.ordered_pull import OrderedPull, log_handling_failed
from paynow_service.logs import log

logger = logging.getLogger("paynow_service.worker")
MAX_IN_FLIGHT = 32
HANDLE_TIMEOUT_S = 120
LEASE_EXTENSION_S = 20
# Unary mode: at most one Pull per PULL_EVERY_S while messages flow, and done messages are
# acknowledged at most ACK_EVERY_S after they are done (a few messages per call).
PULL_EVERY_S = 0.05
ACK_EVERY_S = 0.05
PULL_WAIT_S = 5.0


class _LoopThread:
    """An asyncio loop in a daemon thread, for coroutines submitted from other threads."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="worker-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def run(settings: Settings, extra_plugins: tuple[object, ...] = ()) -> int:
    """`extra_plugins`: plugins registered beside the entry points' (tests run the worker with theirs)."""
    settings.require("EVENT_SIGNING_KEYS")  # verifies every message, signs what it dead-letters itself
    loop = _LoopThread()

    async def build() -> tuple[bootstrap.Container, MessageHandler]:
        # Built on the worker's loop: the Firestore async client belongs to the loop that made it.
        container = bootstrap.build_container(settings, extra_plugins)
        return container, container.message_handler()

    container, handler = loop.run(build())
    bootstrap.freeze_startup_heap()
    if settings.worker_pull_mode == "unary":
        return _run_unary(settings, loop, container, handler)
    return _run_streaming(settings, loop, container, handler)


def _callback(loop: _LoopThread, handler: MessageHandler) -> Callable[[Any], None]:
    """The streaming client's callback (on its threads): the message through the core, then ack or nack."""

    def callback(message: Any) -> None:
        try:
            outcome = loop.run(
                handler.handle(
                    message.data,
                    dict(message.attributes),
                    message_id=message.message_id,
                    delivery_attempt=message.delivery_attempt,
                    published_at=message.publish_time,
                ),
                timeout=HANDLE_TIMEOUT_S,
            )
        except Exception as err:  # noqa: BLE001 (whatever happened, the message must come back)
            log_handling_failed(message.message_id, err)
            message.nack()
            return
        if outcome.done:
            message.ack()
        else:
            message.nack()

    return callback


def _run_streaming(
    settings: Settings, loop: _LoopThread, container: bootstrap.Container, handler: MessageHandler
) -> int:
    subscriber = SubscriberClient()
    stream: Future[Any] = subscriber.subscribe(
        settings.subscription_path(settings.pubsub_subscription),
        callback=_callback(loop, handler),
        # One callback thread per message in hand: each blocks until the core is done with its
        # message, and the client's default pool (10 threads) held the worker to 10 in flight.
        scheduler=ThreadScheduler(
            ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT, thread_name_prefix="worker-callback")
        ),
        flow_control=FlowControl(
            max_messages=MAX_IN_FLIGHT,
            # Leases are extended in steps of at most this: messages held by a crashed
            # worker come back after it, not after the client's 60 s default.
            max_duration_per_lease_extension=LEASE_EXTENSION_S,
        ),
        await_callbacks_on_shutdown=True,
    )
    stopping = _start_pulling(settings, "streaming", on_stop=stream.cancel)
    exit_code = 0
    try:
        stream.result()
    except Exception as err:  # noqa: BLE001 (cancelled on SIGTERM, or the stream failed)
        if not stopping.is_set():
            log(
                logger,
                logging.ERROR,
                "Pull stream failed",
                component=COMPONENT,
                error_type=type(err).__name__,
                detail=str(err)[:300],
            )
            exit_code = 1
    finally:
        _shut_down(subscriber, loop, container)
    return exit_code


def _start_pulling(
    settings: Settings, mode: str, on_stop: Callable[[], object] = lambda: None
) -> threading.Event:
    """SIGTERM/SIGINT set the returned event (and call `on_stop`); log the start."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        on_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    log(
        logger,
        logging.INFO,
        "Worker pulling",
        component=COMPONENT,
        subscription=settings.pubsub_subscription,
        mode=mode,
    )
    return stopping


def _shut_down(subscriber: SubscriberClient, loop: _LoopThread, container: bootstrap.Container) -> None:
    subscriber.close()
    loop.run(_close(container), timeout=10)
    loop.stop()
    log(logger, logging.INFO, "Worker stopped", component=COMPONENT)


def _run_unary(
    settings: Settings, loop: _LoopThread, container: bootstrap.Container, handler: MessageHandler
) -> int:
    """Repeated Pull calls instead of one stream (WORKER_PULL_MODE=unary), pipelined on the
    worker's loop (`ordered_pull.py`): one lane per ordering key, the next Pull as soon as there
    is room. Nothing is held between runs, so a killed worker's messages simply come back after
    their ack deadline."""
    subscriber = SubscriberWire(settings.subscription_path(settings.pubsub_subscription))
    stop = asyncio.Event()
    _start_pulling(settings, "unary", on_stop=lambda: loop.loop.call_soon_threadsafe(stop.set))
    engine = OrderedPull(
        subscriber,
        lambda item: _handle_received(handler, item),
        max_in_flight=MAX_IN_FLIGHT,
        pull_wait_s=PULL_WAIT_S,
        pull_every_s=PULL_EVERY_S,
        ack_every_s=ACK_EVERY_S,
        handle_timeout_s=HANDLE_TIMEOUT_S,
    )
    try:
        loop.run(engine.run(stop))
    finally:
        loop.run(subscriber.aclose(), timeout=10)
        loop.run(_close(container), timeout=10)
        loop.stop()
        log(logger, logging.INFO, "Worker stopped", component=COMPONENT)
    return 0


async def _handle_received(handler: MessageHandler, item: Any) -> bool:
    """One ReceivedMessage (raw protobuf) through the core: True when it is done."""
    message = item.message
    published_at = (
        message.publish_time.ToDatetime(tzinfo=dt.UTC) if message.HasField("publish_time") else None
    )
    outcome = await handler.handle(
        message.data,
        dict(message.attributes),
        message_id=message.message_id,
        delivery_attempt=item.delivery_attempt or None,
        published_at=published_at,
    )
    return outcome.done


async def _close(container: bootstrap.Container) -> None:
    await container.aclose()
