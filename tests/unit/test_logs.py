"""JSON log lines: Cloud Logging's shape, and no secrets or tokens ever."""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from paynow_service.logs import (
    DROP_REPORT_MESSAGE,
    REDACTED,
    BoundedQueueHandler,
    JsonFormatter,
    LogSampler,
    configure_logging,
    log,
    redact,
)

SECRET = "pn-" + "0123456789abcdef" * 2


def _format(message: str, **fields: object) -> dict[str, object]:
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, message, None, None)
    record.fields = fields
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_severity_is_top_level_with_message_and_fields() -> None:
    entry = _format("Webhook received", component="paynow_webhook", event_id="1", uid=None)
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "Webhook received"
    assert entry["component"] == "paynow_webhook"
    assert "uid" not in entry  # None fields are left out


def test_secrets_and_tokens_are_redacted_anywhere() -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"
    entry = _format(f"secret {SECRET} in message", detail={"nested": SECRET}, auth=f"Bearer {jwt}", token=jwt)
    text = json.dumps(entry)
    assert SECRET not in text
    assert jwt not in text
    assert REDACTED in str(entry["message"])


def test_redact_leaves_ordinary_text() -> None:
    assert redact("order 411486491630370816 for pn-short") == "order 411486491630370816 for pn-short"


class _SlowStdout:
    """A stdout that records which thread writes, and can be held like a stalled file or a full pipe."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.writers: set[int] = set()
        self.release = threading.Event()
        self.writing = threading.Event()  # the writer thread is inside write()

    def write(self, text: str) -> int:
        self.writing.set()
        self.release.wait(10)
        self.writers.add(threading.get_ident())
        self.lines += [line for line in text.splitlines() if line]
        return len(text)

    def flush(self) -> None:
        pass


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    configure_logging("INFO")  # stops a background writer left running
    root.handlers[:], root.level = handlers, level


def test_background_logging_never_writes_on_the_callers_thread(
    root_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdout = _SlowStdout()
    monkeypatch.setattr(sys, "stdout", stdout)
    configure_logging("INFO", background=True)
    logger = logging.getLogger("paynow_service.test")
    for n in range(3):  # returns at once although every write is held
        log(
            logger, logging.INFO, "Webhook received", component="paynow_webhook", event_id=str(n), note=SECRET
        )
    assert stdout.lines == []
    stdout.release.set()
    configure_logging("INFO")  # like exit: every queued line is written first
    entries = [json.loads(line) for line in stdout.lines]
    assert [e["event_id"] for e in entries] == ["0", "1", "2"]
    assert all(e["severity"] == "INFO" and e["message"] == "Webhook received" for e in entries)
    assert SECRET not in "".join(stdout.lines)
    assert threading.get_ident() not in stdout.writers


def test_background_logging_keeps_the_stack_trace(
    root_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdout = _SlowStdout()
    stdout.release.set()
    monkeypatch.setattr(sys, "stdout", stdout)
    configure_logging("INFO", background=True)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("paynow_service.test").exception("Transient failure - will retry")
    configure_logging("INFO")
    (entry,) = [json.loads(line) for line in stdout.lines]
    assert entry["severity"] == "ERROR"
    assert entry["error_type"] == "ValueError"
    assert "boom" in entry["stack_trace"]


def _dropped_total() -> float:
    return REGISTRY.get_sample_value("paynow_log_lines_dropped_total") or 0.0


def _fill_while_held(stdout: _SlowStdout, logger: logging.Logger, count: int) -> float:
    """Log `count` lines while the writer is held in its first write; returns the seconds it took."""
    log(logger, logging.INFO, "Webhook received", event_id="0")
    assert stdout.writing.wait(5)  # line 0 is in write(): the queue is empty again
    started = time.perf_counter()
    for n in range(1, count):
        log(logger, logging.INFO, "Webhook received", event_id=str(n))
    return time.perf_counter() - started


def _wait_written(stdout: _SlowStdout, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(stdout.lines) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_full_queue_drops_and_counts_lines_without_blocking_the_caller(
    root_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdout = _SlowStdout()
    monkeypatch.setattr(sys, "stdout", stdout)
    configure_logging("INFO", background=True, queue_lines=5)
    logger = logging.getLogger("paynow_service.test")
    before = _dropped_total()
    elapsed = _fill_while_held(stdout, logger, 20)
    assert elapsed < 1  # the writer is held for 10 s: a caller that waited for room would show it
    assert _dropped_total() - before == 14  # 1 being written, 5 queued, the other 14 dropped
    stdout.release.set()
    _wait_written(stdout, 6)
    log(logger, logging.INFO, "Webhook received", event_id="after")  # finds room: the report follows
    configure_logging("INFO")
    entries = [json.loads(line) for line in stdout.lines]
    assert [e.get("event_id") for e in entries[:7]] == ["0", "1", "2", "3", "4", "5", "after"]
    (report,) = entries[7:]
    assert (report["message"], report["severity"], report["dropped"]) == (DROP_REPORT_MESSAGE, "WARNING", 14)


def test_drops_not_reported_yet_are_reported_at_exit(
    root_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdout = _SlowStdout()
    monkeypatch.setattr(sys, "stdout", stdout)
    configure_logging("INFO", background=True, queue_lines=2)
    _fill_while_held(stdout, logging.getLogger("paynow_service.test"), 10)
    stdout.release.set()
    configure_logging("INFO")  # like exit: queued lines, then the count
    entries = [json.loads(line) for line in stdout.lines]
    assert [e.get("event_id") for e in entries[:3]] == ["0", "1", "2"]
    assert (entries[-1]["message"], entries[-1]["dropped"]) == (DROP_REPORT_MESSAGE, 7)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)


def test_drop_reports_come_at_most_once_per_interval() -> None:
    lines: queue.Queue[str] = queue.Queue(maxsize=3)
    clock, drops = _Clock(), []
    handler = BoundedQueueHandler(lines, on_drop=lambda: drops.append(1), report_interval_s=10, clock=clock)
    handler.setFormatter(JsonFormatter())

    def burst(count: int) -> list[str]:
        """`count` lines into the queue (the excess dropped), then what a writer would take."""
        for n in range(count):
            handler.handle(_record(f"line {n}"))
        taken = []
        while not lines.empty():
            taken.append(json.loads(lines.get_nowait())["message"])
        return taken

    assert burst(5) == ["line 0", "line 1", "line 2"]  # 2 dropped, nothing had room since
    assert burst(1) == ["line 0", DROP_REPORT_MESSAGE]  # the first line with room brings the report
    clock.now = 5
    assert burst(4) == ["line 0", "line 1", "line 2"]
    assert burst(1) == ["line 0"]  # 5 s after the last report: not yet
    clock.now = 10
    handler.handle(_record("late"))
    report = json.loads(lines.queue[-1])
    assert (report["message"], report["dropped"], report["queue_lines"]) == (DROP_REPORT_MESSAGE, 1, 3)
    assert len(drops) == 3  # the counter saw every drop, reported or not


def test_sampler_logs_the_first_lines_per_key_then_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    logger = logging.getLogger("paynow_service.test.sampler")
    sampler = LogSampler(logger, limit=3, interval_s=10, clock=clock)
    caplog.set_level(logging.INFO, logger=logger.name)

    def reject(reason: str) -> None:
        sampler.log(
            reason,
            logging.WARNING,
            f"Webhook rejected - {reason}",
            component="paynow_webhook",
            rejection_reason=reason,
        )

    for _ in range(10):
        reject("invalid_signature")
    reject("malformed")
    sampled = [(r.getMessage(), r.fields) for r in caplog.records]  # type: ignore[attr-defined]
    assert sampled == [
        ("Webhook rejected - invalid_signature", {"component": "paynow_webhook", "rejection_reason": r})
        for r in ["invalid_signature"] * 3
    ] + [("Webhook rejected - malformed", {"component": "paynow_webhook", "rejection_reason": "malformed"})]
    caplog.clear()
    clock.now = 9.9
    reject("invalid_signature")
    assert caplog.records == []  # still the same interval: counted, not logged
    clock.now = 10
    reject("malformed")  # any line after the interval brings the summary of every key
    summary, line = caplog.records
    assert summary.getMessage() == LogSampler.SUMMARY
    assert summary.fields == {  # type: ignore[attr-defined]
        "component": "paynow_webhook",
        "suppressed": 8,
        "suppressed_message": "Webhook rejected - invalid_signature",
        "interval_s": 10,
    }
    assert line.getMessage() == "Webhook rejected - malformed"  # malformed left nothing out: no summary
    caplog.clear()
    reject("invalid_signature")  # a new interval: logged again
    assert [r.getMessage() for r in caplog.records] == ["Webhook rejected - invalid_signature"]
