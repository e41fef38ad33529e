"""JSON log lines: Cloud Logging's shape, and no secrets or tokens ever."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator

import pytest

from paynow_service.logs import REDACTED, JsonFormatter, configure_logging, log, redact

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

    def write(self, text: str) -> int:
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
    assert entry["error_class"] == "ValueError"
    assert "boom" in entry["stack_trace"]
