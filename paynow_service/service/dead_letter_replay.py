"""Replaying dead letters: each back onto the events topic as it came, then acknowledged.

A replay re-publishes the letter's data and original attributes (`event_mac` included: it
never signs) under its original ordering key, with `dlq_replay=true` and
`original_message_id`; the event's record is reset to `queued` first; only then is the letter
acknowledged, so a crash in between replays it again, which the worker answers "already
processed". The record of the event id an unverified or legacy message claims is left alone:
nothing proves the claim, and such a letter comes back to the DLQ as it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from paynow_service.domain.errors import DomainError

# Dead-lettered before anything proved which event they are: no record of theirs was marked.
UNPROVEN_REASONS = frozenset({"unverified_event", "legacy_message"})


class Letter(Protocol):
    @property
    def event_id(self) -> str: ...
    @property
    def message_id(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def ordering_key(self) -> str: ...
    @property
    def data(self) -> bytes: ...


class RecordsPort(Protocol):
    async def reset_to_queued(self, event_id: str) -> None: ...


class TopicPort(Protocol):
    events_topic: str

    async def publish(
        self, topic: str, data: bytes, attributes: Mapping[str, str], ordering_key: str = ""
    ) -> str: ...


L = TypeVar("L", bound=Letter)
L_in = TypeVar("L_in", bound=Letter, contravariant=True)


class LetterStorePort(Protocol[L_in]):
    """Where the letters came from: it acknowledges them and knows their original attributes."""

    def ack(self, letters: Sequence[L_in]) -> None: ...
    def replay_attributes(self, letter: L_in) -> dict[str, str]: ...


@dataclass
class ReplayReport(Generic[L]):
    replayed: list[L] = field(default_factory=list)
    failed: list[tuple[L, str]] = field(default_factory=list)  # (letter, why)


async def replay(
    letters: Sequence[L], records: RecordsPort, topic: TopicPort, store: LetterStorePort[L]
) -> ReplayReport[L]:
    report: ReplayReport[L] = ReplayReport()
    for letter in letters:
        try:
            if letter.event_id and letter.reason not in UNPROVEN_REASONS:
                await records.reset_to_queued(letter.event_id)
            await topic.publish(
                topic.events_topic,
                letter.data,
                store.replay_attributes(letter),
                ordering_key=letter.ordering_key,
            )
        except DomainError as err:
            report.failed.append((letter, err.detail))
            continue
        store.ack([letter])
        report.replayed.append(letter)
    return report
