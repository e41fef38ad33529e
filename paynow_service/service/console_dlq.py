"""The operator console's DLQ: its letters grouped by reason, and replay or purge of some of them.

The same code as `paynow-service dlq list | replay | purge`: the reader of
adapters/dead_letter_queue.py (a blocking client: run in a thread here), `replay` of
service/dead_letter_replay.py (the letter back on the events topic as it came, never signed, its
record reset to `queued`, then acknowledged) and the reader's acknowledgement for a purge. This
module only chooses the letters, by event id (as `dlq replay --event-id`) or by reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from paynow_service.service.dead_letter_replay import (
    UNPROVEN_REASONS,
    Letter,
    LetterStorePort,
    RecordsPort,
    TopicPort,
    replay,
)

DLQ_READ_MAX = 1000  # as `dlq list` reads by default


class DeadLetterView(Letter, Protocol):
    @property
    def event_type(self) -> str: ...
    @property
    def error_class(self) -> str: ...
    @property
    def age_s(self) -> int: ...


D = TypeVar("D", bound=DeadLetterView)


class DeadLetterReaderPort(LetterStorePort[D], Protocol[D]):
    """adapters/dead_letter_queue.py `DeadLetterQueue`: blocking calls, run in a thread here."""

    def read(self, limit: int) -> list[D]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class ReasonGroup(Generic[D]):
    reason: str
    letters: list[D]

    @property
    def count(self) -> int:
        return len(self.letters)

    @property
    def oldest_age_s(self) -> int:
        return max(d.age_s for d in self.letters)

    @property
    def newest_age_s(self) -> int:
        return min(d.age_s for d in self.letters)

    @property
    def unproven(self) -> bool:
        """A replay forwards these unchanged and they come back (the runbook's DLQ triage)."""
        return self.reason in UNPROVEN_REASONS


def group_by_reason(letters: Sequence[D]) -> list[ReasonGroup[D]]:
    """The letters by reason, the biggest group first, each oldest first."""
    groups: dict[str, list[D]] = {}
    for letter in letters:
        groups.setdefault(letter.reason, []).append(letter)
    ordered = [ReasonGroup(r, sorted(ls, key=lambda d: -d.age_s)) for r, ls in groups.items()]
    return sorted(ordered, key=lambda g: (-g.count, g.reason))


async def read_dead_letters(open_dlq: Callable[[], DeadLetterReaderPort[D]]) -> list[ReasonGroup[D]]:
    """`dlq list`: every letter looked at is released again (nothing is consumed)."""

    def read() -> list[D]:
        dlq = open_dlq()
        try:
            return dlq.read(DLQ_READ_MAX)
        finally:
            dlq.close()

    return group_by_reason(await asyncio.to_thread(read))


@dataclass
class ActionReport(Generic[D]):
    action: str  # replay or purge
    chosen: list[D] = field(default_factory=list)
    done: list[D] = field(default_factory=list)
    failed: list[tuple[D, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # event ids asked for and not in the DLQ

    @property
    def unproven(self) -> list[D]:
        return [d for d in self.done if d.reason in UNPROVEN_REASONS]


def choose(letters: Sequence[D], event_ids: Sequence[str], reason: str) -> tuple[list[D], list[str]]:
    """The letters of these event ids (as `dlq replay --event-id`) or of this reason; and the ids
    asked for that no letter carries."""
    if event_ids:
        wanted = set(event_ids)
        chosen = [d for d in letters if d.event_id in wanted]
        return chosen, sorted(wanted - {d.event_id for d in chosen})
    return [d for d in letters if reason and d.reason == reason], []


async def dlq_action(
    open_dlq: Callable[[], DeadLetterReaderPort[D]],
    action: str,
    *,
    event_ids: Sequence[str] = (),
    reason: str = "",
    records: RecordsPort | None = None,
    topic: TopicPort | None = None,
) -> ActionReport[D]:
    """Replay (service/dead_letter_replay.py `replay`) or purge (acknowledge) the letters chosen."""
    dlq = open_dlq()
    report: ActionReport[D] = ActionReport(action)
    try:
        letters = await asyncio.to_thread(dlq.read, DLQ_READ_MAX)
        report.chosen, report.missing = choose(letters, event_ids, reason)
        if action == "purge":
            await asyncio.to_thread(dlq.ack, report.chosen)
            report.done = list(report.chosen)
        elif action == "replay" and records is not None and topic is not None:
            replayed = await replay(report.chosen, records, topic, dlq)
            report.done, report.failed = replayed.replayed, replayed.failed
        else:
            raise ValueError(f"unknown DLQ action {action!r}")
    finally:
        await asyncio.to_thread(dlq.close)
    return report
