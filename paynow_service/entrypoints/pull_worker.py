"""`paynow-service worker`: streaming pull on PUBSUB_SUBSCRIPTION, through the same core as push.

The Pub/Sub client calls back on its own threads; the async core runs on one event
loop in a dedicated thread (the Firestore async client belongs to that loop). With
ordering on, the client hands over a key's next message only after the previous one
was acked or nacked, so each user's events are applied in order. Flow control bounds
the messages in hand. SIGTERM stops pulling, lets in-flight messages finish, exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from concurrent.futures import Future
from types import FrameType
from typing import Any

from google.cloud.pubsub_v1 import SubscriberClient
from google.cloud.pubsub_v1.types import FlowControl

from paynow_service import bootstrap
from paynow_service.adapters.dead_letters import PubSubDeadLetters
from paynow_service.config import Settings
from paynow_service.entrypoints.message_handler import COMPONENT, MessageHandler
from paynow_service.logs import log

logger = logging.getLogger("paynow_service.worker")
MAX_IN_FLIGHT = 32
HANDLE_TIMEOUT_S = 120


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


def run(settings: Settings) -> int:
    loop = _LoopThread()

    async def build() -> tuple[bootstrap.Container, MessageHandler]:
        container = bootstrap.build_container(settings)
        return container, MessageHandler(
            container.core, PubSubDeadLetters(container.publisher), container.records
        )

    container, handler = loop.run(build())
    subscription = settings.subscription_path(settings.pubsub_subscription)

    def callback(message: Any) -> None:
        attempt = message.delivery_attempt
        try:
            outcome = loop.run(
                handler.handle(
                    message.data,
                    dict(message.attributes),
                    message_id=message.message_id,
                    delivery_attempt=attempt,
                ),
                timeout=HANDLE_TIMEOUT_S,
            )
        except Exception as err:  # noqa: BLE001 (whatever happened, the message must come back)
            log(
                logger,
                logging.ERROR,
                "Transient failure - will retry",
                component=COMPONENT,
                message_id=message.message_id,
                error_class=type(err).__name__,
            )
            message.nack()
            return
        if outcome.done:
            message.ack()
        else:
            message.nack()

    subscriber = SubscriberClient()
    stream: Future[Any] = subscriber.subscribe(
        subscription,
        callback=callback,
        flow_control=FlowControl(max_messages=MAX_IN_FLIGHT),
        await_callbacks_on_shutdown=True,
    )
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        stream.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    log(
        logger, logging.INFO, "Worker pulling", component=COMPONENT, subscription=settings.pubsub_subscription
    )
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
                error_class=type(err).__name__,
                detail=str(err)[:300],
            )
            exit_code = 1
    finally:
        subscriber.close()
        loop.run(_close(container), timeout=10)
        loop.stop()
        log(logger, logging.INFO, "Worker stopped", component=COMPONENT)
    return exit_code


async def _close(container: bootstrap.Container) -> None:
    await container.aclose()
