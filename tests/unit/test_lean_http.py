"""paynow_loadtest.lean_http, the load tool's sender, against a tiny HTTP server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from paynow_loadtest.lean_http import HttpError, LeanClient


class _Server:
    """Answers each request by the first word of its body: `ok`, `close` (answers, then closes),
    `chunked` (a chunked answer) or `drop` (closes without answering)."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lengths = [
                    int(h.split(b":")[1])
                    for h in head.split(b"\r\n")
                    if h.lower().startswith(b"content-length")
                ]
                length = lengths[0] if lengths else 0
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                word = body.split(b" ")[0]
                if word == b"drop":
                    break
                if word == b"chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    writer.write(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                else:
                    close = b"Connection: close\r\n" if word == b"close" else b""
                    writer.write(b"HTTP/1.1 201 Created\r\n" + close + b"Content-Length: 2\r\n\r\n{}")
                await writer.drain()
                if word == b"close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[_Server, str]]:
    state = _Server()
    listener = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield state, f"http://127.0.0.1:{port}"


async def test_keeps_one_connection_alive_and_sends_body_and_headers(server: tuple[_Server, str]) -> None:
    state, origin = server
    client = LeanClient(origin)
    for n in range(3):
        assert await client.request("POST", "/hook", b"ok %d" % n, {"X-Sig": "s"}) == (201, b"{}")
    client.close()
    assert state.connections == 1
    assert state.requests[2].startswith(b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 4\r\n" in state.requests[2]
    assert b"X-Sig: s\r\n" in state.requests[2]
    assert state.requests[2].endswith(b"\r\n\r\nok 2")


async def test_a_closed_connection_is_not_reused_and_chunked_answers_are_read(
    server: tuple[_Server, str],
) -> None:
    state, origin = server
    client = LeanClient(origin)
    assert await client.request("POST", "/", b"close") == (201, b"{}")
    assert await client.request("POST", "/", b"chunked") == (200, b"abcde")
    client.close()
    assert state.connections == 2


async def test_a_dropped_connection_is_an_error_and_the_next_request_gets_a_new_one(
    server: tuple[_Server, str],
) -> None:
    state, origin = server
    client = LeanClient(origin)
    with pytest.raises(HttpError, match="connection lost"):
        await client.request("POST", "/", b"drop")
    assert await client.request("POST", "/", b"ok") == (201, b"{}")
    client.close()
    assert state.connections == 2


async def test_opens_warm_connections_and_refuses_what_it_cannot_speak(server: tuple[_Server, str]) -> None:
    state, origin = server
    client = LeanClient(origin)
    await client.open(3, "/healthz")
    for _ in range(5):
        assert await client.request("POST", "/", b"ok") == (201, b"{}")
    client.close()
    assert state.connections == 3
    assert state.requests[0].startswith(b"GET /healthz HTTP/1.1\r\n")
    with pytest.raises(ValueError, match="only http"):
        LeanClient("https://example.test")
