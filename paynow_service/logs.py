"""Structured logs: one JSON object per line on stdout, in Cloud Logging's shape (SPEC 5b).

`severity` is top level so Cloud Logging lifts it into the entry. Fields passed with
`extra={"fields": {...}}` are merged in. Anything that looks like a PayNow secret or a
bearer token, and every registered secret (`register_secrets`: the event signing keys), is
redacted from the whole line, whatever field it hides in.

The long-running processes write their lines from a background thread (log_queue.py): a
write to stdout can block, and the event loop that answers PayNow must never wait for it.
Lines anyone can provoke (refused webhooks and tokens) go through a `LogSampler`. A logged
exception's class name is the `error_type` field. With tracing on (tracing.py), every line logged
inside a span carries its trace (`logging.googleapis.com/trace`, `spanId`, `trace_sampled`).
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from paynow_service.log_queue import DROP_REPORT_MESSAGE as DROP_REPORT_MESSAGE
from paynow_service.log_queue import LOG_QUEUE_LINES as LOG_QUEUE_LINES
from paynow_service.log_queue import BoundedQueueHandler as BoundedQueueHandler
from paynow_service.log_queue import LineQueue, QueueWriter

# PayNow secrets look like "pn-" + 32 hex; bearer tokens and JWTs never belong in a log.
_SECRET_PATTERNS = (
    re.compile(r"pn-[0-9a-fA-F]{32}"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
)
REDACTED = "[REDACTED]"
# Secrets without a recognisable shape (EVENT_SIGNING_KEYS), registered once read: redacted
# as they are and as JSON escapes them. Replaced whole, never mutated (read from any thread).
_literal_secrets: tuple[str, ...] = ()

# The current span's Cloud Logging trace fields (tracing.py sets it when tracing is on): read when a
# line is formatted, on the caller, so the span is the one the line was logged in.
_trace_fields: Callable[[], dict[str, object]] | None = None

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


def register_secrets(values: Iterable[str]) -> None:
    """Redact these exact values from every line from now on (keys of at least 8 characters)."""
    global _literal_secrets
    forms = {*_literal_secrets}
    for value in values:
        if len(value) >= 8:
            forms.update((value, json.dumps(value)[1:-1]))
    _literal_secrets = tuple(sorted(forms, key=len, reverse=True))


def set_trace_fields(fields: Callable[[], dict[str, object]] | None) -> None:
    """Add `fields()` (the current trace, spanId, trace_sampled) to every line; None: no trace fields."""
    global _trace_fields
    _trace_fields = fields


def redact(text: str) -> str:
    """Remove secrets and tokens from any text."""
    for secret in _literal_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


class JsonFormatter(logging.Formatter):
    """Formats a record as one Cloud Logging JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if v is not None})
        if _trace_fields is not None:
            entry.update(_trace_fields())
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = entry.get("error_type") or record.exc_info[0].__name__
            entry["stack_trace"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, separators=(",", ":")))


_listener: QueueWriter | None = None
_queued: BoundedQueueHandler | None = None


def _stop_listener() -> None:
    """Write every queued line and the drop count, then stop the writer thread (at exit, or
    before reconfiguring)."""
    global _listener, _queued
    if _queued is not None:
        _queued.flush_report()
        _queued = None
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(_stop_listener)


def configure_logging(
    level: str = "INFO", *, background: bool = False, queue_lines: int = LOG_QUEUE_LINES
) -> None:
    """Route every logger to stdout as JSON lines (idempotent).

    With `background`, the caller only formats its line (redaction included) and queues it;
    one thread writes the lines, in order, and the rest are written at exit: a stalled write
    must not stall the event loop that answers PayNow. At most `queue_lines` wait: beyond
    that, lines are dropped and counted (BoundedQueueHandler, log_queue.py).
    """
    global _listener, _queued
    _stop_listener()
    stream = logging.StreamHandler(sys.stdout)
    handler: logging.Handler = stream
    if background:
        # Imported here: only the serving processes (they have /metrics) load prometheus.
        from paynow_service.metrics import LOG_LINES_DROPPED

        lines = LineQueue(queue_lines)
        # Its prepare() formats: the queue holds final lines.
        handler = _queued = BoundedQueueHandler(lines, on_drop=LOG_LINES_DROPPED.inc)
        _listener = QueueWriter(lines, stream)
        _listener.start()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The Google clients and servers are chatty at INFO; their warnings still come through.
    for noisy in ("google", "grpc", "urllib3", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def flush_logs() -> None:
    """Write every queued line now and write directly from here on: the process is ending by a
    path that skips exit handlers (uvicorn re-raises SIGTERM after its graceful shutdown)."""
    if _listener is not None:
        configure_logging(logging.getLevelName(logging.getLogger().level))


def log(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log `message` with structured fields (component, event_id, ...)."""
    logger.log(level, message, extra={"fields": fields})


@dataclass
class _Window:
    """One key's current interval in a LogSampler."""

    started: float
    message: str
    component: Any
    logged: int = 0
    suppressed: int = 0


class LogSampler:
    """Logs the first `limit` lines of each key per `interval_s`, then only counts them.

    For lines anyone can provoke at will (refused webhooks, refused tokens): a flood would
    otherwise write one line per request. Once a key's interval is over, one summary line
    ("Log lines suppressed") gives the number left out and their message; it is written
    with the next line logged through the sampler, whatever its key. The sampled lines keep
    their message and fields unchanged, and metrics still count every event. Keys must come
    from a small fixed set (reasons), never from the request: each holds a window.
    """

    SUMMARY = "Log lines suppressed"

    def __init__(
        self,
        logger: logging.Logger,
        *,
        limit: int = 20,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._limit = limit
        self._interval_s = interval_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()  # callers may be on the event loop or on gRPC threads

    def log(self, key: str, level: int, message: str, **fields: Any) -> None:
        """Log `message` (as `log` does) unless `key` had `limit` lines in its interval."""
        with self._lock:
            now = self._clock()
            ended = self._end_windows(now)
            window = self._windows.get(key)
            if window is None:
                window = _Window(now, message, fields.get("component"))
                self._windows[key] = window
            admitted = window.logged < self._limit
            if admitted:
                window.logged += 1
            else:
                window.suppressed += 1
        for done in ended:
            log(
                self._logger,
                logging.WARNING,
                self.SUMMARY,
                component=done.component,
                suppressed=done.suppressed,
                suppressed_message=done.message,
                interval_s=self._interval_s,
            )
        if admitted:
            log(self._logger, level, message, **fields)

    def _end_windows(self, now: float) -> list[_Window]:
        """Close the windows whose interval is over; those that left lines out need a summary."""
        over = [key for key, window in self._windows.items() if now - window.started >= self._interval_s]
        closed = [self._windows.pop(key) for key in over]
        return [window for window in closed if window.suppressed]
