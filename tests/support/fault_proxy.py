"""A small TCP fault proxy for chaos tests: loopback only, switchable at runtime, bounded.

    with FaultProxy(("127.0.0.1", firestore_port)) as proxy:
        env["FIRESTORE_EMULATOR_HOST"] = proxy.address
        proxy.set_mode("delay", delay_ms=200)   # every byte 200 ms late (latency, not a throughput cap)
        proxy.set_mode("reset")                 # open connections get a TCP RST, new ones are reset at once
        proxy.set_mode("blackhole")             # accept, forward nothing, answer nothing (a partition)
        proxy.set_mode("pass")                  # heal: held bytes and held connections go through

A black hole models a network partition that heals: nothing is dropped, it is held
(TCP would retransmit it) and delivered once the mode changes, so a client whose call
timed out meanwhile sees its connection come back rather than hang forever.

The proxy runs an asyncio loop in a daemon thread. It listens on 127.0.0.1 only, refuses
any upstream that is not a loopback address, holds at most `max_connections`
connections, and stops by itself after `max_lifetime_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from paynow_loadtest.loop_server import LoopServer

MODES = ("pass", "delay", "reset", "blackhole")
_CHUNK = 64 * 1024
_QUEUE_CHUNKS = 256  # per direction: back-pressure instead of unbounded buffering


def _require_loopback(host: str) -> str:
    if host == "localhost":
        host = "127.0.0.1"
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"fault proxy upstream must be a loopback address, not {host!r}")
    return host


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class ProxyStats:
    accepted: int = 0
    refused: int = 0
    reset: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    modes: list[tuple[float, str, int]] = field(default_factory=list)  # (monotonic, mode, delay_ms)


class _Connection:
    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.upstream)
        for task in self.tasks:
            task.cancel()


class FaultProxy(LoopServer):
    _thread_name = "fault proxy"

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        max_connections: int = 256,
        max_lifetime_s: float = 600,
        connect_timeout_s: float = 5,
    ) -> None:
        self.upstream = (_require_loopback(upstream[0]), int(upstream[1]))
        self.max_connections = max_connections
        self.max_lifetime_s = max_lifetime_s
        self.connect_timeout_s = connect_timeout_s
        super().__init__()
        self.port = 0
        self.stats = ProxyStats()
        self._mode = "pass"
        self._delay_s = 0.0
        self._changed: asyncio.Event | None = None
        self._connections: set[_Connection] = set()

    # -- control (any thread) -------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str, *, delay_ms: int = 0) -> None:
        """Switch mode; returns once the proxy applies it (resets happen before it returns)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        if mode == "delay" and not 0 < delay_ms <= 60_000:
            raise ValueError("delay mode needs 0 < delay_ms <= 60000")
        loop = self._loop
        if loop is None or self._thread is None or not self._thread.is_alive():
            raise RuntimeError("fault proxy is not running")
        asyncio.run_coroutine_threadsafe(self._set(mode, delay_ms), loop).result(10)

    # -- the loop -------------------------------------------------------------------------------

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.stats.modes.append((time.monotonic(), "pass", 0))
        self._ready.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.max_lifetime_s)
        finally:
            server.close()
            for conn in list(self._connections):
                conn.reset()
            self._connections.clear()
            await server.wait_closed()

    async def _set(self, mode: str, delay_ms: int) -> None:
        self._mode = mode
        self._delay_s = delay_ms / 1000 if mode == "delay" else 0.0
        self.stats.modes.append((time.monotonic(), mode, delay_ms))
        if mode == "reset":
            for conn in list(self._connections):
                conn.reset()
                self.stats.reset += 1
            self._connections.clear()
        assert self._changed is not None
        self._changed.set()  # wake everything waiting on a mode change
        self._changed = asyncio.Event()

    async def _until_not_blackhole(self) -> None:
        while self._mode == "blackhole":
            assert self._changed is not None
            await self._changed.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.max_connections:
            self.stats.refused += 1
            _reset(writer)
            return
        self.stats.accepted += 1
        conn = _Connection(writer)
        self._connections.add(conn)
        try:
            await self._until_not_blackhole()  # accepted, never answered while the hole lasts
            if self._mode == "reset" or conn not in self._connections:
                self.stats.reset += 1
                conn.reset()
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstream), self.connect_timeout_s
                )
            except (OSError, TimeoutError):
                conn.reset()
                return
            conn.upstream = up_writer
            if conn not in self._connections:  # reset while connecting
                conn.reset()
                return
            conn.tasks = [
                asyncio.create_task(self._pump(reader, up_writer, "up")),
                asyncio.create_task(self._pump(up_reader, writer, "down")),
            ]
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self._connections.discard(conn)
            for w in (writer, conn.upstream):
                if w is not None and not w.is_closing():
                    w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        """Copy one direction. Reading and writing are separate tasks so a delay adds latency to
        every byte without capping throughput; a black hole holds the bytes until it heals."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)

        async def read() -> None:
            try:
                while data := await reader.read(_CHUNK):
                    await queue.put((time.monotonic(), data))
            except (OSError, asyncio.IncompleteReadError):
                pass
            await queue.put((time.monotonic(), b""))

        reading = asyncio.create_task(read())
        try:
            while True:
                received, data = await queue.get()
                await self._until_not_blackhole()
                if self._delay_s:
                    await asyncio.sleep(max(0.0, received + self._delay_s - time.monotonic()))
                    await self._until_not_blackhole()
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                if direction == "up":
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            return
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading

    def describe(self) -> dict[str, Any]:
        return {
            "upstream": f"{self.upstream[0]}:{self.upstream[1]}",
            "listen": self.address,
            "accepted": self.stats.accepted,
            "refused": self.stats.refused,
            "reset": self.stats.reset,
            "bytes_up": self.stats.bytes_up,
            "bytes_down": self.stats.bytes_down,
        }
