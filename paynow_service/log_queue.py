"""The background log writer: lines formatted on the caller's thread, written by one thread.

A write to stdout can block (a file whose journal is committing, a full pipe to the log
agent), and the event loop that answers PayNow must never wait for it. The queue between
the two is bounded: when stdout stalls under a flood, lines are dropped and counted rather
than held in memory. `logs.configure_logging(background=True)` sets it up.

Queuing a line wakes nobody: the writer wakes every WRITE_INTERVAL_S and writes what has
queued in one write. A writer woken for every line (a condition variable, a thread switch and
a write call per line) cost about a third of `serve`'s CPU per webhook (two lines each;
docs/performance.md, "Log lines in batches"); lines now reach stdout up to 50 ms later.
"""

from __future__ import annotations

import logging
import logging.handlers
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

# Lines the background writer may hold: at about 1 KB a line, a stalled stdout costs at
# most ~10 MB, not the instance (docs/performance.md has the measurement).
LOG_QUEUE_LINES = 10_000
WRITE_INTERVAL_S = 0.05
DROP_REPORT_INTERVAL_S = 10.0
DROP_REPORT_MESSAGE = "Log lines dropped"
_LOGGER = "paynow_service.logs"


def _drop_report(dropped: int, queue_lines: int) -> logging.LogRecord:
    # Reported under the logging module's own logger name, as every line it writes.
    record = logging.LogRecord(_LOGGER, logging.WARNING, __file__, 0, DROP_REPORT_MESSAGE, None, None)
    record.fields = {"component": "logs", "dropped": dropped, "queue_lines": queue_lines}
    return record


class LineQueue:
    """A bounded FIFO of formatted lines whose `put_nowait` is an append: it wakes no reader."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._lines: deque[str] = deque()

    def qsize(self) -> int:
        return len(self._lines)

    def empty(self) -> bool:
        return not self._lines

    def put_nowait(self, line: str) -> None:
        if len(self._lines) >= self.maxsize:
            raise queue.Full
        self._lines.append(line)

    def put(self, line: str) -> None:
        """Wait for room, then queue (only at exit, while the writer drains)."""
        while len(self._lines) >= self.maxsize:
            time.sleep(0.005)
        self._lines.append(line)

    def get_nowait(self) -> str:
        try:
            return self._lines.popleft()
        except IndexError:
            raise queue.Empty from None

    def take_all(self) -> list[str]:
        """Every line queued now, oldest first (appends racing with this wait for the next call)."""
        taken: list[str] = []
        for _ in range(len(self._lines)):
            taken.append(self._lines.popleft())
        return taken


class BoundedQueueHandler(logging.handlers.QueueHandler):
    """Formats each line on the caller's thread and queues it; drops it when the queue is full.

    Waiting for room would stall the event loop that answers PayNow, and an unbounded queue
    behind a stalled stdout grows until the instance is killed. Each drop calls `on_drop`
    (the Prometheus counter); the count is reported in one WARNING line at most every
    `report_interval_s`, queued with the first line that finds room again.
    """

    def __init__(
        self,
        lines: LineQueue | queue.Queue[str],
        *,
        on_drop: Callable[[], None] = lambda: None,
        report_interval_s: float = DROP_REPORT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(lines)  # type: ignore[arg-type]  # only put_nowait is used
        self._lines = lines
        self._on_drop = on_drop
        self._report_interval_s = report_interval_s
        self._clock = clock
        self._unreported = 0
        self._last_report = -math.inf

    def prepare(self, record: logging.LogRecord) -> str:
        # The queue holds final lines: formatted (redacted) here, on the caller's thread.
        return self.format(record)

    def enqueue(self, record: str) -> None:  # type: ignore[override]
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


class QueueWriter:
    """The writer thread: every WRITE_INTERVAL_S, what has queued, in one write; at stop, the rest."""

    def __init__(
        self,
        lines: LineQueue,
        handler: logging.StreamHandler,  # type: ignore[type-arg]
        interval_s: float = WRITE_INTERVAL_S,
    ) -> None:
        self._lines = lines
        self._handler = handler
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write every queued line, then end the thread."""
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            stopping = self._stopping.wait(self._interval_s)
            lines = self._lines.take_all()
            if lines:
                self._write(lines)
            if stopping and self._lines.empty():
                return

    def _write(self, lines: list[str]) -> None:
        stream = self._handler.stream
        try:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # stdout gone (closed pipe, closed file): nothing else could take the lines
