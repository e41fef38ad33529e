"""IngestService with in-memory fakes of its ports: routing, duplicates, leases, fallback, canary,
and queue mode's record-and-publish at once, row by row of docs/ingest-failures.md."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest

from paynow_service.domain.errors import InvalidEventError, StorageUnavailableError, TerminalError
from paynow_service.domain.events import Order, OrderLine, PaymentEvent
from paynow_service.service.ingest import IngestService, queue_share
from paynow_service.service.processing import Outcome


@dataclass
class Record:
    status: str
    payload_hash: str
    published_at: dt.datetime | None = None
    lease_expired: bool = False
    app_shaped: bool = False
    flag: str = ""


@dataclass
class FakeRecords:
    records: dict[str, Record] = field(default_factory=dict)
    published_marks: list[str] = field(default_factory=list)
    down: bool = False
    slow_s: float = 0.0  # each create takes this long
    calls: list[str] = field(default_factory=list)  # shared with the publisher: who started and ended when

    async def create_queued(self, event: PaymentEvent, payload_hash: str) -> Record | None:
        self.calls.append("create started")
        await asyncio.sleep(self.slow_s)
        self.calls.append("create ended")
        if self.down:
            raise StorageUnavailableError("firestore down")
        if event.event_id in self.records:
            return self.records[event.event_id]
        self.records[event.event_id] = Record("queued", payload_hash)
        return None

    async def get(self, event_id: str) -> Record | None:
        return self.records.get(event_id)

    async def take_over_app_record(self, event: PaymentEvent, payload_hash: str) -> bool:
        record = self.records.get(event.event_id)
        if record is None or not record.app_shaped or record.status != "queued":
            return False
        self.records[event.event_id] = Record("queued", payload_hash)
        return True

    async def flag_app_unfinished(self, event_id: str) -> None:
        self.records[event_id].flag = "app_unfinished"

    async def claim_lease(self, event_id: str, lease_s: int) -> bool:
        record = self.records[event_id]
        if record.lease_expired and record.published_at is None:
            record.lease_expired = False  # taken: a concurrent claim loses
            return True
        return False

    def mark_published_soon(self, event_id: str) -> None:
        self.published_marks.append(event_id)
        self.records[event_id].published_at = dt.datetime.now(dt.UTC)

    async def flush_published(self) -> None:
        pass

    async def release_lease(self, event_id: str) -> None:
        self.records[event_id].lease_expired = True

    async def mark(self, event_id: str, **fields: Any) -> None:
        if self.down:
            raise StorageUnavailableError("firestore down")
        self.records[event_id].status = fields.get("status", self.records[event_id].status)


@dataclass
class FakePublisher:
    published: list[str] = field(default_factory=list)
    messages: list[PaymentEvent] = field(default_factory=list)
    fail: bool = False
    slow_s: float = 0.0  # each publish takes this long
    calls: list[str] = field(default_factory=list)

    async def publish_event(self, event: PaymentEvent) -> str:
        self.calls.append("publish started")
        await asyncio.sleep(self.slow_s)
        self.calls.append("publish ended")
        if self.fail:
            raise RuntimeError("pubsub unreachable")
        self.published.append(event.event_id)
        self.messages.append(event)
        return str(len(self.published))


@dataclass
class FakeCore:
    next_status: str = "processed"
    processed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    async def process(self, event: PaymentEvent, *, component: str, **_: Any) -> Outcome:
        self.processed.append(event.event_id)
        return Outcome(
            self.next_status, reason="order_not_credited" if self.next_status == "transient" else ""
        )  # type: ignore[arg-type]

    async def fail_terminal(self, event: PaymentEvent, error: TerminalError, *, component: str) -> Outcome:
        self.failed.append((event.event_id, error.reason))
        return Outcome("failed_terminal", error.reason)


def order_event(event_id: str = "1", uid: str = "u1") -> PaymentEvent:
    return PaymentEvent(
        event_id=event_id,
        event_type="ON_ORDER_COMPLETED",
        uid=uid,
        order=Order("o1", (OrderLine("l1", "p1", 1, 100),)),
    )


def service(
    mode: str = "queue", percent: int = 100
) -> tuple[IngestService, FakeRecords, FakePublisher, FakeCore]:
    records, publisher, core = FakeRecords(), FakePublisher(), FakeCore()
    publisher.calls = records.calls  # one timeline
    ingest = IngestService(records, publisher, core, mode=mode, queue_percent=percent, lease_s=30)  # type: ignore[arg-type]
    return ingest, records, publisher, core


async def test_queue_mode_records_publishes_and_marks() -> None:
    ingest, records, publisher, core = service()
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.path, result.durable) == ("queued", "queue", True)
    assert publisher.published == ["1"]
    assert records.published_marks == ["1"]
    assert core.processed == []


async def test_duplicates_answer_200_without_publishing() -> None:
    ingest, records, publisher, _ = service()
    await ingest.ingest(order_event(), "h")
    records.records["1"].status = "processed"
    again = await ingest.ingest(order_event(), "h")
    assert (again.outcome, again.durable) == ("duplicate", True)
    assert publisher.published == ["1"]


async def test_queued_and_published_is_a_duplicate() -> None:
    ingest, _, publisher, _ = service()
    await ingest.ingest(order_event(), "h")
    again = await ingest.ingest(order_event(), "h")
    assert again.outcome == "duplicate"
    assert publisher.published == ["1"]


async def test_same_id_other_body_is_a_conflict() -> None:
    ingest, _, publisher, core = service()
    await ingest.ingest(order_event(), "h1")
    result = await ingest.ingest(order_event(), "h2")
    assert (result.outcome, result.durable) == ("conflict", True)
    assert publisher.published == ["1"]
    assert core.processed == []


async def test_stranded_event_is_published_once_by_the_lease_holder() -> None:
    ingest, records, publisher, _ = service()
    records.records["1"] = Record("queued", "h", published_at=None, lease_expired=True)
    first = await ingest.ingest(order_event(), "h")
    second = await ingest.ingest(order_event(), "h")
    assert (first.outcome, second.outcome) == ("queued", "duplicate")
    assert publisher.published == ["1"]


async def test_unexpired_lease_is_left_to_its_holder() -> None:
    ingest, records, publisher, _ = service()
    records.records["1"] = Record("queued", "h", published_at=None, lease_expired=False)
    assert (await ingest.ingest(order_event(), "h")).outcome == "duplicate"
    # A delivery this process never saw publishes while it records: its copy, confirmed, is marked
    # (the holder's own message and this copy meet in the worker's transaction: credited once).
    assert publisher.published == ["1"]
    assert records.published_marks == ["1"]


async def test_a_lease_lost_to_the_worker_is_answered_queued() -> None:
    """PayNow's retry of an event whose first delivery gave its lease back: this delivery publishes
    while it reads the record, and the worker handles that copy before the lease claim lands."""
    ingest, records, publisher, _ = service()
    records.records["1"] = Record("queued", "h", published_at=None, lease_expired=True)

    async def worker_first(event_id: str, lease_s: int) -> bool:
        records.records[event_id].status = "failed_terminal"  # the claim's precondition then fails
        return False

    records.claim_lease = worker_first  # type: ignore[method-assign]
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.durable) == ("queued", True)
    assert publisher.published == ["1"]
    assert records.published_marks == []  # handled already: nothing to mark


async def test_publish_failure_falls_back_inline() -> None:
    ingest, records, publisher, core = service()
    publisher.fail = True
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.path, result.durable) == ("processed", "fallback", True)
    assert core.processed == ["1"]
    assert records.published_marks == []


async def test_publish_and_inline_failing_is_not_durable() -> None:
    ingest, records, publisher, core = service()
    publisher.fail, core.next_status = True, "transient"
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.path, result.durable) == ("transient", "fallback", False)
    assert records.records["1"].status == "queued"  # nothing marked done: a redelivery finishes it
    # The lease was given back: PayNow's retry publishes at once instead of hearing "duplicate".
    publisher.fail, core.next_status = False, "processed"
    retry = await ingest.ingest(order_event(), "h")
    assert (retry.outcome, retry.durable) == ("queued", True)
    assert publisher.published == ["1"]


async def test_sync_mode_processes_inline_and_reprocesses_a_queued_redelivery() -> None:
    ingest, _, publisher, core = service(mode="sync")
    core.next_status = "transient"
    assert (await ingest.ingest(order_event(), "h")).outcome == "transient"
    core.next_status = "processed"
    assert (await ingest.ingest(order_event(), "h")).outcome == "processed"
    assert core.processed == ["1", "1"]
    assert publisher.published == []


async def test_ignored_types_are_recorded_not_published() -> None:
    ingest, records, publisher, core = service()
    result = await ingest.ingest(PaymentEvent(event_id="9", event_type="ON_TRIAL_ACTIVATED"), "h")
    assert (result.outcome, result.durable) == ("ignored", True)
    assert records.records["9"].status == "ignored"
    assert publisher.published == []
    assert core.processed == []


async def test_storage_and_pubsub_down_answers_503() -> None:
    ingest, records, publisher, core = service()
    records.down, publisher.fail = True, True
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.durable) == ("unavailable", False)
    assert (publisher.published, core.processed) == ([], [])


async def test_storage_down_in_sync_mode_answers_503() -> None:
    ingest, records, publisher, core = service(mode="sync")
    records.down = True
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.durable) == ("unavailable", False)
    assert (publisher.published, core.processed) == ([], [])


async def test_invalid_event_is_recorded_and_dead_lettered() -> None:
    ingest, records, _, core = service()
    result = await ingest.ingest_invalid(
        PaymentEvent(event_id="5", event_type="ON_ORDER_COMPLETED"), "h", InvalidEventError("no lines")
    )
    assert (result.outcome, result.durable) == ("failed_terminal", True)
    assert core.failed == [("5", "invalid_event")]
    assert "5" in records.records


@pytest.mark.parametrize(("percent", "queued"), [(0, 0), (100, 200)])
async def test_queue_percent_extremes(percent: int, queued: int) -> None:
    ingest, _, publisher, core = service(percent=percent)
    for i in range(200):
        await ingest.ingest(order_event(str(i), uid=f"user-{i}"), "h")
    assert len(publisher.published) == queued
    assert len(core.processed) == 200 - queued


async def test_queue_percent_is_a_stable_share_per_user() -> None:
    ingest, _, publisher, _ = service(percent=30)
    users = [f"user-{i}" for i in range(2000)]
    chosen = {u for u in users if ingest.uses_queue(order_event(uid=u))}
    assert 0.25 < len(chosen) / len(users) < 0.35
    assert chosen == {u for u in users if ingest.uses_queue(order_event(uid=u))}  # same answer every time
    assert all(queue_share(u) == queue_share(u) for u in users[:50])
    assert publisher.published == []


# The app's own webhook recorded events before cut-over: its statuses, its hash (never ours).


@pytest.mark.parametrize("status", ["processed", "skipped"])
async def test_an_event_the_app_handled_is_a_duplicate_whatever_its_hash(status: str) -> None:
    ingest, records, publisher, core = service()
    records.records["1"] = Record(status, "the-apps-own-hash", app_shaped=True)
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.durable) == ("duplicate", True)
    # The copy published meanwhile meets the app's record in the worker's transaction: a duplicate there too.
    assert (publisher.published, core.processed, records.records["1"].flag) == (["1"], [], "")
    assert records.published_marks == []  # the app's record is not ours to mark


@pytest.mark.parametrize("mode", ["queue", "sync"])
async def test_an_event_the_app_only_queued_is_taken_over_and_processed(mode: str) -> None:
    ingest, records, publisher, core = service(mode=mode)
    records.records["1"] = Record("queued", "the-apps-own-hash", app_shaped=True)
    result = await ingest.ingest(order_event(), "h")
    assert result.durable
    assert result.outcome == ("queued" if mode == "queue" else "processed")
    assert records.records["1"].app_shaped is False  # our record replaced the app's
    assert records.records["1"].payload_hash == "h"
    assert (publisher.published if mode == "queue" else core.processed) == ["1"]
    # A redelivery afterwards is ours to judge: a duplicate, not processed again.
    records.records["1"].status = "processed"
    assert (await ingest.ingest(order_event(), "h")).outcome == "duplicate"


@pytest.mark.parametrize("status", ["received", "failed", "failed_terminal", "something_new"])
async def test_an_event_the_app_left_unfinished_is_a_flagged_duplicate(status: str) -> None:
    ingest, records, publisher, core = service()
    records.records["1"] = Record(status, "the-apps-own-hash", app_shaped=True)
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.durable) == ("duplicate", True)
    # The copy published meanwhile is flagged, not credited, by the worker's transaction too.
    assert (publisher.published, core.processed, records.published_marks) == (["1"], [], [])
    assert records.records["1"].flag == "app_unfinished"
    assert records.records["1"].status == status  # the app's status stays for reconciliation


async def test_an_invalid_event_the_app_handled_is_not_dead_lettered() -> None:
    ingest, records, _, core = service()
    records.records["1"] = Record("processed", "the-apps-own-hash", app_shaped=True)
    result = await ingest.ingest_invalid(order_event(), "h", InvalidEventError("no lines"))
    assert (result.outcome, core.failed) == ("duplicate", [])


# Queue mode records and publishes at once: one test per row of docs/ingest-failures.md.


async def test_record_and_publish_run_at_once() -> None:
    ingest, records, publisher, _ = service()
    records.slow_s = publisher.slow_s = 0.2
    started = asyncio.get_running_loop().time()
    result = await ingest.ingest(order_event(), "h")
    elapsed = asyncio.get_running_loop().time() - started
    assert result.outcome == "queued"
    assert records.calls[:2] == ["create started", "publish started"]  # neither waited for the other
    assert elapsed < 0.35  # about one slow call's time, not two (0.4 s)


async def test_the_published_event_carries_the_records_payload_hash() -> None:
    ingest, records, publisher, _ = service()
    await ingest.ingest(order_event(), "h-of-the-body")  # the caller's event carries none
    assert [m.payload_hash for m in publisher.messages] == ["h-of-the-body"]
    assert records.records["1"].payload_hash == "h-of-the-body"


async def test_row_both_succeed_is_queued() -> None:
    ingest, records, publisher, core = service()
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.path, result.durable) == ("queued", "queue", True)
    assert (records.records["1"].status, records.published_marks, core.processed) == ("queued", ["1"], [])
    assert publisher.published == ["1"]


@pytest.mark.parametrize("status", ["processed", "ignored", "failed_terminal", "dead_lettered", "parked"])
async def test_row_already_recorded_same_hash_and_done_is_a_duplicate(status: str) -> None:
    # A redelivery, or the worker first to the record (its record carries the event's hash).
    ingest, records, publisher, core = service()
    records.records["1"] = Record(status, "h")
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.durable) == ("duplicate", True)
    assert (publisher.published, records.published_marks, core.processed) == (["1"], [], [])
    assert records.records["1"].status == status


async def test_row_already_recorded_and_published_is_a_duplicate() -> None:
    ingest, records, publisher, _ = service()
    records.records["1"] = Record("queued", "h", published_at=dt.datetime.now(dt.UTC))
    assert (await ingest.ingest(order_event(), "h")).outcome == "duplicate"
    assert (publisher.published, records.published_marks) == (["1"], [])


async def test_row_already_recorded_another_hash_is_a_conflict_whatever_the_publish() -> None:
    for fail in (False, True):
        ingest, records, publisher, core = service()
        publisher.fail = fail
        records.records["1"] = Record("queued", "h1")
        result = await ingest.ingest(order_event(), "h2")
        assert (result.outcome, result.durable) == ("conflict", True)
        assert (records.records["1"].payload_hash, records.published_marks, core.processed) == ("h1", [], [])


async def test_row_already_recorded_unpublished_and_the_publish_failed_is_processed_by_the_lease_holder() -> (
    None
):
    ingest, records, publisher, core = service()
    publisher.fail = True
    records.records["1"] = Record("queued", "h", lease_expired=True)
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.path) == ("processed", "fallback")
    assert core.processed == ["1"]
    assert records.calls.count("publish started") == 1  # no second try under the lease
    # Held by another delivery (the first, still in flight): left to it, as before.
    ingest, records, publisher, core = service()
    publisher.fail = True
    records.records["1"] = Record("queued", "h", lease_expired=False)
    assert (await ingest.ingest(order_event(), "h")).outcome == "duplicate"
    assert core.processed == []


async def test_row_already_recorded_unpublished_publish_and_inline_failing_gives_the_lease_back() -> None:
    ingest, records, publisher, core = service()
    publisher.fail, core.next_status = True, "transient"
    records.records["1"] = Record("queued", "h", lease_expired=True)
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.durable) == ("transient", False)
    assert records.records["1"].lease_expired  # released: PayNow's retry takes it at once


async def test_row_app_queued_record_is_taken_over_then_falls_back_if_the_publish_failed() -> None:
    ingest, records, publisher, core = service()
    publisher.fail = True
    records.records["1"] = Record("queued", "the-apps-own-hash", app_shaped=True)
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.path) == ("processed", "fallback")
    assert (records.records["1"].app_shaped, records.records["1"].payload_hash) == (False, "h")
    assert core.processed == ["1"]


async def test_row_publish_failed_and_recorded_falls_back_inline() -> None:
    ingest, records, publisher, core = service()
    publisher.fail = True
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.path, result.durable) == ("processed", "fallback", True)
    assert (core.processed, records.published_marks, records.records["1"].lease_expired) == (["1"], [], False)


async def test_row_publish_failed_recorded_and_inline_failing_is_503_with_the_lease_given_back() -> None:
    ingest, records, publisher, core = service()
    publisher.fail, core.next_status = True, "transient"
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.durable) == ("transient", False)
    assert (records.records["1"].status, records.records["1"].lease_expired) == ("queued", True)


async def test_row_record_failed_but_published_is_queued_for_the_worker_to_record() -> None:
    ingest, records, publisher, core = service()
    records.down = True
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.path, result.durable) == ("queued", "queue", True)
    assert "record not written" in result.detail
    assert [(m.event_id, m.payload_hash) for m in publisher.messages] == [("1", "h")]
    assert (records.records, records.published_marks, core.processed) == ({}, [], [])  # no mark alone


async def test_row_record_failed_and_publish_failed_is_503() -> None:
    ingest, records, publisher, core = service()
    records.down, publisher.fail = True, True
    result = await ingest.ingest(order_event(), "h")
    assert (result.outcome, result.durable) == ("unavailable", False)
    assert core.processed == []  # no inline try: Firestore is what failed


async def test_a_slow_publish_is_waited_for_and_a_slow_record_too() -> None:
    # The answer needs both: the publish for durability, the record for the duplicate / conflict verdict.
    for slow_record in (True, False):
        ingest, records, publisher, _ = service()
        records.records["1"] = Record("processed", "h1")
        if slow_record:
            records.slow_s = 0.03
        else:
            publisher.slow_s = 0.03
        assert (await ingest.ingest(order_event(), "h2")).outcome == "conflict"
        assert records.calls[-1] == ("create ended" if slow_record else "publish ended")


async def test_sync_mode_and_the_percent_route_record_then_process_without_publishing() -> None:
    for mode, percent in (("sync", 100), ("queue", 0)):
        ingest, records, publisher, core = service(mode=mode, percent=percent)
        result = await ingest.ingest(order_event(), "h")
        assert (result.outcome, result.path) == ("processed", "sync")
        assert (records.calls, publisher.published, core.processed) == (
            ["create started", "create ended"],
            [],
            ["1"],
        )


# A process remembers the ids it ingested lately: their redeliveries are recorded first, no copy.


async def test_deliveries_at_once_in_one_process_publish_once() -> None:
    ingest, records, publisher, _ = service()
    records.slow_s = publisher.slow_s = 0.02
    results = await asyncio.gather(*(ingest.ingest(order_event(), "h") for _ in range(5)))
    assert sorted(r.outcome for r in results) == ["duplicate"] * 4 + ["queued"]
    assert publisher.published == ["1"]  # the others waited for the first, then met its record


async def test_another_process_publishes_a_copy_of_a_redelivery() -> None:
    first, records, publisher, _ = service()
    await first.ingest(order_event(), "h")
    second = IngestService(records, publisher, FakeCore(), mode="queue", queue_percent=100, lease_s=30)  # type: ignore[arg-type]
    assert (await second.ingest(order_event(), "h")).outcome == "duplicate"
    assert publisher.published == ["1", "1"]  # the worker answers the copy "already processed"


async def test_the_memory_of_recent_ids_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("paynow_service.service.ingest.RECENT_IDS", 3)
    ingest, _, publisher, _ = service()
    for i in range(5):
        await ingest.ingest(order_event(str(i), uid=f"user-{i}"), "h")
    await ingest.ingest(order_event("0", uid="user-0"), "h")  # forgotten: recorded and published at once
    await ingest.ingest(order_event("4", uid="user-4"), "h")  # remembered: recorded first, no copy
    assert publisher.published == ["0", "1", "2", "3", "4", "0"]


async def test_an_id_answered_503_is_not_remembered() -> None:
    # PayNow's retry records and publishes at once again: with Firestore still down, its publish alone
    # can make it durable.
    ingest, records, publisher, _ = service()
    records.down, publisher.fail = True, True
    assert (await ingest.ingest(order_event(), "h")).outcome == "unavailable"
    publisher.fail = False
    assert (await ingest.ingest(order_event(), "h")).outcome == "queued"
    assert publisher.published == ["1"]
