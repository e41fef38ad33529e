"""The background log writer: lines formatted on the caller's thread, written by one thread.

A write to stdout can block (a file whose journal is committing, a full pipe to the log
agent), and the event loop that answers PayNow must never wait for it. The queue between
the two is bounded: when stdout stalls under a flood, lines are dropped and counted rather
than held in memory. `logs.configure_logging(background=True)` sets it up.
"""

from __future__ import annotations

import logging
import logging.handlers
import math
import queue
import time
from collections.abc import Callable
from typing import Any

# Lines the background writer may hold: at about 1 KB a line, a stalled stdout costs at
# most ~10 MB, not the instance (docs/performance.md has the measurement).
LOG_QUEUE_LINES = 10_000
DROP_REPORT_INTERVAL_S = 10.0
DROP_REPORT_MESSAGE = "Log lines dropped"
_LOGGER = "paynow_service.logs"


def _drop_report(dropped: int, queue_lines: int) -> logging.LogRecord:
    # Reported under the logging module's own logger name, as every line it writes.
    record = logging.LogRecord(_LOGGER, logging.WARNING, __file__, 0, DROP_REPORT_MESSAGE, None, None)
    record.fields = {"component": "logs", "dropped": dropped, "queue_lines": queue_lines}
    return record


class BoundedQueueHandler(logging.handlers.QueueHandler):
    """Formats each line on the caller's thread and queues it; drops it when the queue is full.

    Waiting for room would stall the event loop that answers PayNow, and an unbounded queue
    behind a stalled stdout grows until the instance is killed. Each drop calls `on_drop`
    (the Prometheus counter); the count is reported in one WARNING line at most every
    `report_interval_s`, queued with the first line that finds room again.
    """

    def __init__(
        self,
        lines: queue.Queue[logging.LogRecord],
        *,
        on_drop: Callable[[], None] = lambda: None,
        report_interval_s: float = DROP_REPORT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(lines)
        self._lines = lines
        self._on_drop = on_drop
        self._report_interval_s = report_interval_s
        self._clock = clock
        self._unreported = 0
        self._last_report = -math.inf

    def enqueue(self, record: logging.LogRecord) -> None:
        # Runs under the handler's lock (Handler.handle): the counts need no other.
        try:
            self._lines.put_nowait(record)
        except queue.Full:
            self._unreported += 1
            self._on_drop()
            return
        if self._unreported and self._clock() - self._last_report >= self._report_interval_s:
            self._queue_report()

    def _queue_report(self) -> None:
        report = self.prepare(_drop_report(self._unreported, self._lines.maxsize))
        try:
            self._lines.put_nowait(report)
        except queue.Full:
            return  # no room after all: a later line reports the whole count
        self._unreported = 0
        self._last_report = self._clock()

    def flush_report(self) -> None:
        """Queue the count not reported yet, waiting for room (the writer is draining: exit)."""
        self.acquire()
        try:
            dropped, self._unreported = self._unreported, 0
        finally:
            self.release()
        if dropped:
            self._lines.put(self.prepare(_drop_report(dropped, self._lines.maxsize)))


class QueueWriter(logging.handlers.QueueListener):
    """The writer thread. Its stop marker waits for room: the base class's would raise `Full`."""

    def __init__(self, lines: queue.Queue[Any], handler: logging.Handler) -> None:
        super().__init__(lines, handler)
        self._lines = lines

    def enqueue_sentinel(self) -> None:
        self._lines.put(None)  # None is QueueListener's stop marker
