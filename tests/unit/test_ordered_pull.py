"""The unary pull worker's engine: per-key order, no head-of-line blocking across keys, hold-backs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions as gexc

from paynow_service.entrypoints.ordered_pull import OrderedPull


@dataclass
class Message:
    message_id: str
    ordering_key: str


@dataclass
class Received:
    ack_id: str
    message: Message
    delivery_attempt: int = 1


def received(message_id: str, key: str, attempt: int = 1) -> Received:
    return Received(f"ack-{message_id}-{attempt}", Message(message_id, key), attempt)


@dataclass
class FakeSubscriber:
    """Hands out the batches given, one per Pull (then DeadlineExceeded); records every call."""

    batches: list[list[Received]]
    pulls: list[int] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    held: list[tuple[str, int]] = field(default_factory=list)

    async def pull(self, max_messages: int, deadline_s: float) -> Sequence[Any]:
        self.pulls.append(max_messages)
        await asyncio.sleep(0)
        if not self.batches:
            await asyncio.sleep(0.01)
            raise gexc.DeadlineExceeded("no messages")  # type: ignore[no-untyped-call]
        return self.batches.pop(0)[:max_messages]

    async def acknowledge(self, ack_ids: Sequence[str], deadline_s: float) -> None:
        self.acked.extend(ack_ids)

    async def modify_ack_deadline(self, ack_ids: Sequence[str], seconds: int, deadline_s: float) -> None:
        self.held.extend((ack_id, seconds) for ack_id in ack_ids)


async def eventually(condition: Callable[[], bool], limit_s: float = 5) -> None:
    for _ in range(int(limit_s / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


async def run_until(engine: OrderedPull, done: Callable[[], bool]) -> None:
    """Run the engine until `done()` is true, then stop it (it drains and settles)."""
    stopping = asyncio.Event()
    task = asyncio.create_task(engine.run(stopping))
    await eventually(done)
    stopping.set()
    await asyncio.wait_for(task, 5)


async def test_a_keys_messages_are_handled_in_order_one_at_a_time_and_acknowledged() -> None:
    subscriber = FakeSubscriber([[received("1", "u1"), received("2", "u1")], [received("3", "u1")]])
    handled: list[str] = []
    running = peak = 0

    async def handle(item: Received) -> bool:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        handled.append(item.message.message_id)
        running -= 1
        return True

    engine = OrderedPull(subscriber, handle, ack_every_s=0.005)
    await run_until(engine, lambda: len(subscriber.acked) == 3)
    assert handled == ["1", "2", "3"]
    assert peak == 1
    assert subscriber.acked == ["ack-1-1", "ack-2-1", "ack-3-1"]
    assert engine.in_hand == 0


async def test_a_slow_key_holds_up_neither_other_keys_nor_the_next_pull() -> None:
    release = asyncio.Event()
    subscriber = FakeSubscriber([[received("slow", "u1"), received("a", "u2")], [received("b", "u3")]])
    handled: list[str] = []

    async def handle(item: Received) -> bool:
        if item.message.message_id == "slow":
            await release.wait()
        handled.append(item.message.message_id)
        return True

    engine = OrderedPull(subscriber, handle, ack_every_s=0.005)
    stopping = asyncio.Event()
    task = asyncio.create_task(engine.run(stopping))
    await eventually(lambda: set(subscriber.acked) == {"ack-a-1", "ack-b-1"})
    assert handled == ["a", "b"]  # u2 and u3, pulled after u1's message, were done while it waited
    release.set()
    stopping.set()
    await asyncio.wait_for(task, 5)
    assert handled == ["a", "b", "slow"]
    assert "ack-slow-1" in subscriber.acked


async def test_a_failure_holds_back_its_key_and_the_keys_later_messages_until_it_is_back() -> None:
    subscriber = FakeSubscriber(
        [
            [received("1", "u1", attempt=3), received("2", "u1"), received("x", "u2")],
            [received("3", "u1")],  # arrives while 1 is held back: waits behind it
            [received("1", "u1", attempt=4)],  # 1 is back: its hold ends
            [received("2", "u1", attempt=2), received("3", "u1", attempt=2)],
        ]
    )
    calls: list[str] = []

    async def handle(item: Received) -> bool:
        calls.append(item.message.message_id)
        return not (item.message.message_id == "1" and item.delivery_attempt == 3)

    engine = OrderedPull(subscriber, handle, ack_every_s=0.005)
    await run_until(engine, lambda: len(subscriber.acked) == 4)
    assert calls == ["1", "x", "1", "2", "3"]  # 2 and 3 never ran before 1 was done
    assert subscriber.acked == ["ack-x-1", "ack-1-4", "ack-2-2", "ack-3-2"]
    held = dict(subscriber.held)
    assert held["ack-1-3"] == 3  # its attempt's delay
    assert set(held) == {"ack-1-3", "ack-2-1", "ack-3-1"}
    assert all(1 <= seconds <= 3 for seconds in held.values())


async def test_an_error_or_a_timeout_in_the_handler_is_a_failure_not_a_crash() -> None:
    subscriber = FakeSubscriber([[received("boom", "u1"), received("slow", "u2")]])

    async def handle(item: Received) -> bool:
        if item.message.message_id == "boom":
            raise RuntimeError("unexpected")
        await asyncio.sleep(10)
        return True

    engine = OrderedPull(subscriber, handle, ack_every_s=0.005, handle_timeout_s=0.05)
    await run_until(engine, lambda: len(subscriber.held) == 2)
    assert subscriber.acked == []
    assert {ack_id for ack_id, _ in subscriber.held} == {"ack-boom-1", "ack-slow-1"}


async def test_pulls_ask_only_for_the_room_left() -> None:
    release = asyncio.Event()
    batch = [received(str(i), f"u{i}") for i in range(3)]
    subscriber = FakeSubscriber([batch, [received("3", "u3")]])

    async def handle(item: Received) -> bool:
        await release.wait()
        return True

    engine = OrderedPull(subscriber, handle, max_in_flight=3, ack_every_s=0.005)
    stopping = asyncio.Event()
    task = asyncio.create_task(engine.run(stopping))
    await asyncio.sleep(0.05)
    assert subscriber.pulls == [3]  # full: no second pull while three are in hand
    assert engine.in_hand == 3
    release.set()
    await eventually(lambda: len(subscriber.acked) == 4)
    stopping.set()
    await asyncio.wait_for(task, 5)
    assert subscriber.pulls[1] == 3


async def test_pulls_are_paced_while_messages_flow() -> None:
    subscriber = FakeSubscriber([[received(str(i), f"u{i}")] for i in range(50)])

    async def handle(item: Received) -> bool:
        return True

    engine = OrderedPull(subscriber, handle, pull_every_s=0.05, ack_every_s=0.005)
    stopping = asyncio.Event()
    task = asyncio.create_task(engine.run(stopping))
    await asyncio.sleep(0.22)
    stopping.set()
    await asyncio.wait_for(task, 5)
    assert 3 <= len(subscriber.pulls) <= 6  # one at once, then one per 50 ms (not 50 pulls)
    assert len(subscriber.acked) == len(subscriber.pulls)
