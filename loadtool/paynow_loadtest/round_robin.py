"""A round-robin proxy on loopback in front of N replicas of one service: the load balancer before
several `serve` instances, for the replica benchmark and its chaos test.

    with RoundRobinProxy([("127.0.0.1", 8081), ("127.0.0.1", 8082)]) as proxy:
        url = proxy.url("/api/paynow/webhook")
        ...
        proxy.snapshot()   # per replica: connections, refused, requests, answers, failed

Two ways to balance (`per`):

- "request" (the default; HTTP/1.1): each request of a client goes to the next replica over a
  keep-alive connection of the proxy's own, and its answer comes back on the client's connection,
  as Cloud Run's front end balances requests. A replica that refuses the connection is skipped:
  the request goes to the next one. A replica whose connection breaks or stays silent after the
  request went out gets the client a 502 (504 past `upstream_timeout_s`) and its connection
  closed: never re-sent, the request may have been done; the client retries, as PayNow does.
  Requests carry a Content-Length (or no body); answers a Content-Length, chunks, or run to
  the close. No pipelining, no `Expect: 100-continue`, no upgrades.
- "connection" (plain TCP): each new client connection goes to the next replica and stays on it;
  a replica that refuses it is skipped; when the replica's side ends, the client's does too. The
  split of requests then follows the client's reuse of its keep-alive connections (the load tool's
  sender takes its most recently used idle one first), not the requests; only connections and
  bytes are counted.

The proxy runs an asyncio loop in a daemon thread. It listens on 127.0.0.1 only, refuses any
upstream that is not a loopback address, holds at most `max_connections` client connections,
and stops by itself after `max_lifetime_s`. Counts per replica (`ReplicaStats`) are read with
`snapshot()` from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from paynow_loadtest.loop_server import LoopServer

PER = ("request", "connection")
_CHUNK = 64 * 1024
_HEAD_LIMIT = 64 * 1024
_IDLE_PER_REPLICA = 64  # kept-alive connections to one replica, at most
_NO_BODY = frozenset({204, 304})


class FramingError(ValueError):
    """An HTTP message the proxy cannot frame."""


def _require_loopback(host: str) -> str:
    if host == "localhost":
        host = "127.0.0.1"
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"round-robin proxy upstream must be a loopback address, not {host!r}")
    return host


@dataclass
class ReplicaStats:
    """What one replica saw through the proxy."""

    upstream: str
    connections: int = 0  # connections the proxy opened to it
    refused: int = 0  # connection attempts refused or timed out: it was skipped
    requests: int = 0  # requests sent to it (per="request")
    answers: Counter[str] = field(default_factory=Counter)  # "METHOD STATUS" -> count (per="request")
    failed: int = 0  # requests sent to it and never answered (the client got 502 or 504)
    bytes_up: int = 0
    bytes_down: int = 0

    def answered(self, method: str | None = None, *, ok: bool = False) -> int:
        """Its answers (of `method` only, 2xx only when `ok`)."""
        total = 0
        for key, count in self.answers.items():
            verb, _, status = key.partition(" ")
            if (method is None or verb == method) and (not ok or 200 <= int(status) < 300):
                total += count
        return total

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "answers": dict(self.answers)}


@dataclass
class ProxyStats:
    accepted: int = 0  # client connections
    refused: int = 0  # client connections past max_connections (reset)
    unrouted: int = 0  # requests (or connections) no replica took: every one refused


@dataclass
class _Upstream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def usable(self, max_idle_s: float) -> bool:
        return (
            not self.reader.at_eof()
            and not self.writer.is_closing()
            and time.monotonic() - self.idle_since < max_idle_s
        )

    def close(self) -> None:
        self.writer.close()


# -- HTTP/1.1 framing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    head: bytes  # the start line and the headers, with the blank line
    body: bytes  # as it came (chunks and trailers included)
    keep_alive: bool

    @property
    def raw(self) -> bytes:
        return self.head + self.body

    @property
    def start(self) -> list[bytes]:
        return self.head.split(b"\r\n", 1)[0].split(b" ", 2)


def _headers(head: bytes) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    for line in head[:-4].split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise FramingError(f"bad header line {line[:80]!r}")
        key = name.strip().lower()
        fields[key] = (fields[key] + b"," + value.strip()) if key in fields else value.strip()
    return fields


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        parts.append(line)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as err:
            raise FramingError(f"bad chunk size {line[:40]!r}") from err
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                parts.append(trailer)
            parts.append(trailer)
            return b"".join(parts)
        parts.append(await reader.readexactly(size + 2))


async def read_message(
    reader: asyncio.StreamReader, *, response: bool, head_request: bool = False
) -> Message:
    """One HTTP/1.1 request (`response=False`) or answer, as its raw bytes. Raises IncompleteReadError
    at the end of the stream, FramingError (or LimitOverrunError) on what it cannot frame."""
    head = await reader.readuntil(b"\r\n\r\n")
    start = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(start) < 2:
        raise FramingError(f"bad start line {head[:80]!r}")
    fields = _headers(head)
    version = start[0] if response else start[-1]
    connection = fields.get(b"connection", b"").lower()
    keep_alive = b"close" not in connection and (version == b"HTTP/1.1" or b"keep-alive" in connection)
    status = 0
    if response:
        try:
            status = int(start[1])
        except ValueError as err:
            raise FramingError(f"bad status {start[1][:20]!r}") from err
    if response and (head_request or status < 200 or status in _NO_BODY):
        return Message(head, b"", keep_alive)
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        return Message(head, await _read_chunked(reader), keep_alive)
    if b"content-length" in fields:
        try:
            length = int(fields[b"content-length"])
        except ValueError as err:
            raise FramingError("bad Content-Length") from err
        return Message(head, await reader.readexactly(length), keep_alive)
    if response:  # no length: the body runs to the close
        return Message(head, await reader.read(), False)
    return Message(head, b"", keep_alive)


def error_answer(status: int, reason: str, error: str) -> bytes:
    body = f'{{"error":"{error}"}}'.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


# -- the proxy -----------------------------------------------------------------------------------


class RoundRobinProxy(LoopServer):
    _thread_name = "round-robin proxy"

    def __init__(
        self,
        upstreams: Sequence[tuple[str, int]],
        *,
        per: str = "request",
        max_connections: int = 512,
        max_lifetime_s: float = 900,
        connect_timeout_s: float = 2,
        upstream_timeout_s: float = 30,
        max_idle_s: float = 2.0,
    ) -> None:
        """`max_idle_s`: a kept-alive upstream connection idle longer is not reused (uvicorn closes
        its side after 5 s idle: reusing it then would lose the request)."""
        if not upstreams:
            raise ValueError("round-robin proxy needs at least one upstream")
        if per not in PER:
            raise ValueError(f"unknown per {per!r}: use one of {', '.join(PER)}")
        self.upstreams = [(_require_loopback(h), int(p)) for h, p in upstreams]
        self.per = per
        self.max_connections = max_connections
        self.max_lifetime_s = max_lifetime_s
        self.connect_timeout_s = connect_timeout_s
        self.upstream_timeout_s = upstream_timeout_s
        super().__init__()
        self.max_idle_s = max_idle_s
        self.port = 0
        self.stats = ProxyStats()
        self.replicas = [ReplicaStats(f"{h}:{p}") for h, p in self.upstreams]
        self._next = 0
        self._idle: list[list[_Upstream]] = [[] for _ in self.upstreams]
        self._clients: set[asyncio.StreamWriter] = set()

    # -- control (any thread) -------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def snapshot(self) -> list[ReplicaStats]:
        """A copy of every replica's counts, taken on the proxy's loop while it runs."""
        loop = self._loop
        if loop is not None and self.running:
            with contextlib.suppress(RuntimeError, TimeoutError):
                return asyncio.run_coroutine_threadsafe(self._copy(), loop).result(5)
        return self._copy_now()

    def describe(self) -> dict[str, Any]:
        return {
            "listen": self.address,
            "per": self.per,
            **dataclasses.asdict(self.stats),
            "replicas": [r.to_dict() for r in self.snapshot()],
        }

    # -- the loop -------------------------------------------------------------------------------
    def _copy_now(self) -> list[ReplicaStats]:
        return [dataclasses.replace(r, answers=Counter(r.answers)) for r in self.replicas]

    async def _copy(self) -> list[ReplicaStats]:
        return self._copy_now()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=_HEAD_LIMIT)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.max_lifetime_s)
        finally:
            server.close()
            for writer in list(self._clients):
                writer.transport.abort()
            for pool in self._idle:
                for upstream in pool:
                    upstream.writer.transport.abort()
                pool.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)

    def _order(self) -> list[int]:
        """The replicas to try for one new request or connection: the next one first, then the others."""
        n = len(self.upstreams)
        first, self._next = self._next, (self._next + 1) % n
        return [(first + k) % n for k in range(n)]

    async def _connect(self, i: int) -> _Upstream | None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstreams[i], limit=_HEAD_LIMIT), self.connect_timeout_s
            )
        except (OSError, TimeoutError):
            self.replicas[i].refused += 1
            return None
        self.replicas[i].connections += 1
        return _Upstream(reader, writer)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self.max_connections:
            self.stats.refused += 1
            writer.transport.abort()
            return
        self.stats.accepted += 1
        self._clients.add(writer)
        try:
            if self.per == "request":
                await self._requests(reader, writer)
            else:
                await self._connection(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, FramingError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    # -- per="request" --------------------------------------------------------------------------
    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The client's requests one after the other, each to the next replica."""
        while True:
            try:
                request = await read_message(reader, response=False)
            except asyncio.IncompleteReadError:
                return  # the client closed
            except (asyncio.LimitOverrunError, FramingError):
                writer.write(error_answer(400, "Bad Request", "bad_request"))
                await writer.drain()
                return
            answer, keep_alive = await self._forward(request)
            writer.write(answer)
            await writer.drain()
            if not (request.keep_alive and keep_alive):
                return

    async def _forward(self, request: Message) -> tuple[bytes, bool]:
        """The answer to `request` from the first replica (in turn) that takes it, or a 502."""
        method = request.start[0].decode("latin-1")
        for i in self._order():
            upstream = self._pooled(i) or await self._connect(i)
            if upstream is None:
                continue  # refused: the next replica
            replica = self.replicas[i]
            replica.requests += 1
            try:
                async with asyncio.timeout(self.upstream_timeout_s):
                    upstream.writer.write(request.raw)
                    await upstream.writer.drain()
                    answer = await read_message(upstream.reader, response=True, head_request=method == "HEAD")
            except TimeoutError:
                replica.failed += 1
                upstream.writer.transport.abort()
                return error_answer(504, "Gateway Timeout", "upstream_timeout"), False
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, FramingError):
                replica.failed += 1  # sent, never answered: the request may have been done
                upstream.writer.transport.abort()
                return error_answer(502, "Bad Gateway", "upstream_failed"), False
            replica.bytes_up += len(request.raw)
            replica.bytes_down += len(answer.raw)
            replica.answers[f"{method} {answer.start[1].decode('latin-1')}"] += 1
            if answer.keep_alive:
                self._release(i, upstream)
            else:
                upstream.close()
            return answer.raw, answer.keep_alive
        self.stats.unrouted += 1
        return error_answer(502, "Bad Gateway", "no_replica"), False

    def _pooled(self, i: int) -> _Upstream | None:
        pool = self._idle[i]
        while pool:
            upstream = pool.pop()  # the most recently used
            if upstream.usable(self.max_idle_s):
                return upstream
            upstream.close()
        return None

    def _release(self, i: int, upstream: _Upstream) -> None:
        pool = self._idle[i]
        if len(pool) >= _IDLE_PER_REPLICA:
            upstream.close()
            return
        upstream.idle_since = time.monotonic()
        pool.append(upstream)

    # -- per="connection" -----------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The client's connection, whole, to the next replica that takes it."""
        for i in self._order():
            upstream = await self._connect(i)
            if upstream is not None:
                break
        else:
            self.stats.unrouted += 1
            writer.transport.abort()
            return
        replica = self.replicas[i]
        up = asyncio.create_task(self._pump(reader, upstream.writer, replica, up=True))
        down = asyncio.create_task(self._pump(upstream.reader, writer, replica, up=False))
        try:
            await down  # the replica's side ended (its answer done, it closed, it died): so does the client's
        finally:
            up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await up
            upstream.close()

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replica: ReplicaStats, *, up: bool
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                if up:
                    replica.bytes_up += len(data)
                else:
                    replica.bytes_down += len(data)
                writer.write(data)
                await writer.drain()
            if up and writer.can_write_eof():
                writer.write_eof()  # the client is done sending; the replica may still answer
        except (OSError, RuntimeError):
            return
