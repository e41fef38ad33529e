"""A loopback server with its own event loop in a daemon thread, started and stopped from any thread.

The proxies of the tool and of the tests (the round-robin proxy before `serve` replicas, the
fault proxy before the emulators) are asyncio servers driven by synchronous code: `start`
returns once the server listens (or raises what stopped it), `stop` asks the loop to finish and
joins the thread. A subclass writes `_main`, which sets `_loop` and `_stop`, calls `_ready.set()`
once listening, and returns when `_stop` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType
from typing import Self


class LoopServer:
    _thread_name = "loop-server"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"{self._thread_name} did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self.running:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
            assert self._thread is not None
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # reported by start() if it happens before ready
            self._error = err
            self._ready.set()

    async def _main(self) -> None:
        raise NotImplementedError
