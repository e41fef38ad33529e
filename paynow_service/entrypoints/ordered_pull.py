"""The unary pull worker's engine: Pull while messages are handled, one lane per ordering key.

A lane handles its key's messages one at a time, in the order they came, so each user's events
are applied in order; lanes of different keys run side by side, and the next Pull goes out as
soon as there is room (at most `max_in_flight` messages in hand), not after the whole batch:
a transaction that waits on a contended wallet holds up its own user only (waiting for the
slowest message of every batch held up every user: seconds of lag on the emulator, whose lock
timeout is 2 s).

Pulls go out at most every `pull_every_s` while messages flow, and done messages are
acknowledged in small batches (`ack_every_s`): every call costs CPU (docs/performance.md),
so a few messages per call, not a call per message. A message that failed is held
back for `retry_delay_s` of its attempt (the emulator ignores the subscription's backoff), and
with it its key's later messages in hand and any that arrive before it comes back: they come
back after it, in order (each held for its own attempt's delay at least, so none spends its
delivery attempts faster than a failure of its own would). An ack or hold that fails is
harmless: the message comes back and the worker's transaction answers "already processed".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from google.api_core import exceptions as gexc

from paynow_service.entrypoints.message_handler import COMPONENT
from paynow_service.logs import log

logger = logging.getLogger("paynow_service.worker")
RETRY_DELAY_CAP_S = 10
# A hold whose message never came back (dead-lettered by Pub/Sub itself, or acked by a replica)
# is dropped after this long beyond its delay.
HOLD_SLACK_S = 60


def retry_delay_s(delivery_attempt: int | None) -> int:
    """Seconds a transiently failed message is held back before it comes again.

    The emulator ignores the subscription's retry backoff and redelivers a nack at once, so a
    failure that lasts (a killed worker's transaction keeps its locks for about a minute there)
    would spend the whole delivery budget in seconds. The worker holds the message back itself:
    1 s after the first attempt, 1 s more per attempt, at most 10 s, never longer than a real
    subscription's own minimum backoff (10 s).
    """
    return max(1, min(delivery_attempt or 1, RETRY_DELAY_CAP_S))


class SubscriberPort(Protocol):
    async def pull(self, max_messages: int, deadline_s: float) -> Sequence[Any]: ...
    async def acknowledge(self, ack_ids: Sequence[str], deadline_s: float) -> None: ...
    async def modify_ack_deadline(self, ack_ids: Sequence[str], seconds: int, deadline_s: float) -> None: ...


# A ReceivedMessage -> True when it is done (ack), False when it must come back.
Handle = Callable[[Any], Awaitable[bool]]


@dataclass
class _Hold:
    message_id: str  # the failed message: its key's others wait until it is back
    until: float  # monotonic: when it is due back


class OrderedPull:
    def __init__(
        self,
        subscriber: SubscriberPort,
        handle: Handle,
        *,
        max_in_flight: int = 32,
        pull_wait_s: float = 5.0,
        pull_every_s: float = 0.0,
        ack_every_s: float = 0.02,
        handle_timeout_s: float = 120.0,
        call_timeout_s: float = 10.0,
    ) -> None:
        self._subscriber = subscriber
        self._handle = handle
        self._max = max_in_flight
        self._pull_wait_s = pull_wait_s
        self._pull_every_s = pull_every_s
        self._ack_every_s = ack_every_s
        self._handle_timeout_s = handle_timeout_s
        self._call_timeout_s = call_timeout_s
        self._lanes: dict[str, deque[Any]] = {}
        self._holds: dict[str, _Hold] = {}  # by ordering key
        self._in_hand = 0
        self._room = asyncio.Event()
        self._acks: list[str] = []
        self._held_back: dict[int, list[str]] = {}  # seconds -> ack ids
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Pull and handle until `stopping` is set; then finish what is in hand and settle it."""
        settler = asyncio.create_task(self._settle_every_interval(), name="ack-flusher")
        last_pull = float("-inf")
        try:
            while not stopping.is_set():
                room = self._max - self._in_hand
                if room <= 0:
                    self._room.clear()
                    await _first(self._room.wait(), stopping.wait())
                    continue
                # Pulls at most every `pull_every_s` while messages flow (an idle Pull waits at the
                # server): a few messages per call instead of a call per message.
                pause = last_pull + self._pull_every_s - time.monotonic()
                if pause > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), pause)
                    continue
                last_pull = time.monotonic()
                try:
                    received = await self._subscriber.pull(room, self._pull_wait_s)
                except gexc.DeadlineExceeded:
                    continue
                except gexc.GoogleAPIError as err:
                    log(
                        logger,
                        logging.WARNING,
                        "Pull failed - retrying",
                        component=COMPONENT,
                        error_type=type(err).__name__,
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), 1)
                    continue
                for item in received:
                    self._dispatch(item)
        finally:
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=self._handle_timeout_s)
            settler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await settler
            await self._settle()

    @property
    def in_hand(self) -> int:
        return self._in_hand

    def _dispatch(self, item: Any) -> None:
        message = item.message
        key = message.ordering_key or message.message_id
        self._in_hand += 1
        lane = self._lanes.get(key)
        if lane is not None:
            lane.append(item)
            return
        lane = self._lanes[key] = deque([item])
        task = asyncio.create_task(self._run_lane(key, lane))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_lane(self, key: str, lane: deque[Any]) -> None:
        try:
            while lane:
                item = lane[0]
                hold = self._hold_of(key, item.message.message_id)
                if hold is not None:
                    # Never sooner than its own attempt's delay: a message held behind another
                    # one that keeps failing spends its delivery attempts no faster than that one.
                    own = retry_delay_s(item.delivery_attempt or None)
                    self._hold_back(item.ack_id, max(own, round(hold.until - time.monotonic())))
                elif await self._handled(item):
                    self._acks.append(item.ack_id)
                else:
                    delay = retry_delay_s(item.delivery_attempt or None)
                    self._holds[key] = _Hold(item.message.message_id, time.monotonic() + delay)
                    self._hold_back(item.ack_id, delay)
                lane.popleft()
                self._in_hand -= 1
                self._room.set()
        finally:
            self._lanes.pop(key, None)

    def _hold_of(self, key: str, message_id: str) -> _Hold | None:
        """The hold this message must wait behind; None when it may be handled (and it is the held
        message itself coming back, or the hold has lapsed: the hold ends)."""
        hold = self._holds.get(key)
        if hold is None:
            return None
        if message_id == hold.message_id or time.monotonic() > hold.until + HOLD_SLACK_S:
            del self._holds[key]
            return None
        return hold

    async def _handled(self, item: Any) -> bool:
        try:
            async with asyncio.timeout(self._handle_timeout_s):
                return await self._handle(item)
        except Exception as err:  # noqa: BLE001 (whatever happened, the message must come back)
            log_handling_failed(item.message.message_id, err)
            return False

    def _hold_back(self, ack_id: str, seconds: int) -> None:
        self._held_back.setdefault(seconds, []).append(ack_id)

    async def _settle_every_interval(self) -> None:
        while True:
            await asyncio.sleep(self._ack_every_s)
            await self._settle()

    async def _settle(self) -> None:
        """Acknowledge what is done and hold back what failed, in one call each."""
        acks, self._acks = self._acks, []
        held, self._held_back = self._held_back, {}
        try:
            if acks:
                await self._subscriber.acknowledge(acks, self._call_timeout_s)
            for seconds, ack_ids in held.items():
                await self._subscriber.modify_ack_deadline(ack_ids, seconds, self._call_timeout_s)
        except (gexc.GoogleAPIError, TimeoutError) as err:
            log(
                logger,
                logging.WARNING,
                "Acknowledgements not sent - the messages come back",
                component=COMPONENT,
                acks=len(acks),
                held=sum(len(ids) for ids in held.values()),
                error_type=type(err).__name__,
            )


def log_handling_failed(message_id: str, err: BaseException) -> None:
    """The line for a message whose handling raised (the core reports its own failures): it comes back."""
    log(
        logger,
        logging.ERROR,
        "Transient failure - will retry",
        component=COMPONENT,
        message_id=message_id,
        error_type=type(err).__name__,
    )


async def _first(*waits: Awaitable[Any]) -> None:
    """Wait until the first of `waits` is done; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
