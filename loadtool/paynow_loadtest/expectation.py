"""What a run of events must do, event by event, and which of them were accepted.

- `Expected`: one event's final `webhookEvents` status, the ledger entries it writes (ids and
  signed amounts, SPEC 5), or its dead-letter reason; `accepted` once it was answered 2xx.
- `Expectation`: every event of a run by id, the app's spends beside them (`ExpectedSpend`),
  and entries written by no event (a PointsService credit, the app's own credit).

An event that was never accepted (every delivery failed) may have been processed or not: the
checks (`invariants`) accept either, as long as what it wrote matches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Expected:
    """What one event must do."""

    event_id: str
    kind: str  # order, unknown_product, refund, subscription, ignored ...
    uid: str  # whose wallet it touches ("" when none)
    status: str  # processed, ignored, failed_terminal
    entries: dict[str, int] = field(default_factory=dict)  # entry id -> signed amount
    reason: str = ""  # failureReason and DLQ reason of a failed_terminal event
    accepted: bool = False


class HasExpected(Protocol):
    """A planned event (`events.PlannedEvent`): what `Expectation.admit` reads of it."""

    @property
    def expected(self) -> Expected: ...

    @property
    def event_id(self) -> str: ...


@dataclass
class ExpectedSpend:
    """A spend by the app (its spend code, run beside the service): `spent` once it succeeded."""

    action_id: str
    uid: str
    cost: int
    spent: bool = False


class Expectation:
    """Every event of a run, by id, and which were accepted; the app's spends beside them."""

    def __init__(self) -> None:
        self.events: dict[str, Expected] = {}
        self.spends: dict[str, ExpectedSpend] = {}
        self.other_writes: dict[str, tuple[str, int]] = {}  # entry id -> (uid, signed amount)

    def write(self, entry_id: str, uid: str, amount: int) -> None:
        """An entry written by no event: a PointsService credit or reversal, the app's own credit."""
        self.other_writes[entry_id] = (uid, amount)

    def spend(self, action_id: str, uid: str, cost: int, *, spent: bool) -> None:
        self.spends[action_id] = ExpectedSpend(action_id, uid, cost, spent)

    def add(self, planned: HasExpected | Expected) -> None:
        expected = planned if isinstance(planned, Expected) else planned.expected
        self.events.setdefault(expected.event_id, expected)

    def admit(self, planned: HasExpected, *, needs: str = "", duplicate: bool = False) -> bool:
        """Whether a delivery may go out now, as PayNow would send it (a refund or renewal only after its
        origin was accepted, a re-delivery only of an event already sent); recorded when it may."""
        if needs and not self.is_accepted(needs):
            return False
        if duplicate and planned.event_id not in self.events:
            return False
        self.add(planned)
        return True

    def accept(self, event_id: str) -> None:
        self.events[event_id].accepted = True

    def is_accepted(self, event_id: str) -> bool:
        event = self.events.get(event_id)
        return bool(event and event.accepted)

    @property
    def accepted(self) -> list[Expected]:
        return [e for e in self.events.values() if e.accepted]

    @property
    def uids(self) -> list[str]:
        users = {e.uid for e in self.events.values() if e.uid} | {s.uid for s in self.spends.values()}
        return sorted(users | {uid for uid, _ in self.other_writes.values()})
