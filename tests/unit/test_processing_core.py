"""The processing core's error table, entry by entry, with in-memory fakes of its ports."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from paynow_service.domain import errors
from paynow_service.domain.catalog import Catalog
from paynow_service.domain.decisions import Decision, EventState
from paynow_service.domain.events import PaymentEvent
from paynow_service.plugins import get_plugin_manager
from paynow_service.service.processing import ProcessingCore


@dataclass
class FakeProcessor:
    raises: Exception | None = None
    result: str = "credited"

    async def process(
        self, event: PaymentEvent, decide: Callable[[EventState], Decision], *, component: str
    ) -> Decision:
        if self.raises is not None:
            raise self.raises
        return Decision(result=self.result, uid="u1", points=100)


@dataclass
class FakeDeadLetters:
    letters: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False

    async def dead_letter(
        self,
        event: PaymentEvent | None,
        *,
        reason: str,
        error_class: str,
        detail: str,
        raw: tuple[bytes, Mapping[str, str]] | None = None,
    ) -> str:
        if self.fail:
            raise RuntimeError("dlq unreachable")
        self.letters.append({"reason": reason, "error_class": error_class, "raw": raw})
        return "m1"


@dataclass
class FakeMarker:
    marks: list[tuple[str, str, str]] = field(default_factory=list)

    async def mark_failed(self, event_id: str, status: str, reason: str, detail: str) -> None:
        self.marks.append((event_id, status, reason))


EVENT = PaymentEvent(event_id="e1", event_type="ON_ORDER_COMPLETED", uid="u1")


def core(
    raises: Exception | None = None, *, dlq_fails: bool = False, result: str = "credited"
) -> tuple[ProcessingCore, FakeDeadLetters, FakeMarker]:
    dlq, marker = FakeDeadLetters(fail=dlq_fails), FakeMarker()
    c = ProcessingCore(
        FakeProcessor(raises, result),
        dlq,
        marker,
        get_plugin_manager().hook,
        Catalog(),
        max_delivery_attempts=5,
    )
    return c, dlq, marker


@pytest.mark.parametrize(
    ("result", "status"),
    [
        ("credited", "processed"),
        ("reversed", "processed"),
        ("duplicate", "duplicate"),
        ("ignored", "ignored"),
        ("no_change", "processed"),
    ],
)
async def test_success_outcomes(result: str, status: str) -> None:
    c, dlq, marker = core(result=result)
    outcome = await c.process(EVENT, component="t")
    assert outcome.status == status
    assert outcome.done
    assert (dlq.letters, marker.marks) == ([], [])


@pytest.mark.parametrize(
    "error",
    [
        errors.UnknownProductError,
        errors.UserNotFoundError,
        errors.InvalidEventError,
        errors.IncompatibleSchemaError,
        errors.MalformedMessageError,
    ],
)
async def test_terminal_errors_are_dead_lettered_then_marked(error: type[errors.TerminalError]) -> None:
    c, dlq, marker = core(error("why"))
    outcome = await c.process(EVENT, component="t", delivery_attempt=1, raw=(b"data", {"event_id": "e1"}))
    assert (outcome.status, outcome.reason, outcome.done) == ("failed_terminal", error.reason, True)
    assert dlq.letters == [
        {"reason": error.reason, "error_class": "terminal", "raw": (b"data", {"event_id": "e1"})}
    ]
    assert marker.marks == [("e1", "failed_terminal", error.reason)]


async def test_a_payload_conflict_is_dead_lettered_and_its_record_left_to_the_other_body() -> None:
    c, dlq, marker = core(errors.PayloadConflictError("another body"))
    outcome = await c.process(EVENT, component="t", delivery_attempt=1, raw=(b"data", {"event_id": "e1"}))
    assert (outcome.status, outcome.reason, outcome.done) == ("failed_terminal", "payload_conflict", True)
    assert dlq.letters == [
        {"reason": "payload_conflict", "error_class": "terminal", "raw": (b"data", {"event_id": "e1"})}
    ]
    assert marker.marks == []  # the record is the other body's: not marked failed


async def test_terminal_error_with_unconfirmed_dead_letter_is_retried_and_not_marked() -> None:
    c, _, marker = core(errors.UnknownProductError("x"), dlq_fails=True)
    outcome = await c.process(EVENT, component="t", delivery_attempt=1)
    assert (outcome.status, outcome.done, outcome.reason) == ("transient", False, "dead_letter_failed")
    assert marker.marks == []


@pytest.mark.parametrize(
    "error", [errors.StorageUnavailableError, errors.ContentionError, errors.OrderNotCreditedError]
)
async def test_transient_errors_are_retried(error: type[errors.TransientError]) -> None:
    c, dlq, marker = core(error("later"))
    outcome = await c.process(EVENT, component="t", delivery_attempt=4)
    assert (outcome.status, outcome.reason, outcome.done) == ("transient", error.reason, False)
    assert (dlq.letters, marker.marks) == ([], [])


@pytest.mark.parametrize("error", [errors.StorageUnavailableError("x"), RuntimeError("a bug")])
async def test_last_attempt_dead_letters_with_the_last_reason(error: Exception) -> None:
    c, dlq, marker = core(error)
    outcome = await c.process(EVENT, component="t", delivery_attempt=5)
    expected = "storage_unavailable" if isinstance(error, errors.TransientError) else "internal_error"
    assert (outcome.status, outcome.reason, outcome.done) == ("dead_lettered", expected, True)
    assert dlq.letters[0]["error_class"] == "transient"
    assert marker.marks == [("e1", "dead_lettered", expected)]


async def test_unexpected_error_without_attempt_count_is_retried() -> None:
    c, dlq, _ = core(RuntimeError("a bug"))
    outcome = await c.process(EVENT, component="t")
    assert (outcome.status, outcome.reason) == ("transient", "internal_error")
    assert dlq.letters == []
